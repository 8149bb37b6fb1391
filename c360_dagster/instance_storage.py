"""The project instance's SQLite storages (named in its `dagster.yaml`): Dagster's own, opened
and connected to more cheaply. Both changes are measured in docs/performance.md.

Opening. Dagster opens a database by asking alembic for its head revision. To answer, alembic reads all ~180 of
Dagster's migration scripts, and it does this twice, once for the run storage and once for the
schedule storage. That costs about half a CPU-second in every `c360` command (docs/performance.md).
Dagster only uses that answer to tell a fresh database from a stamped one. Its consolidated
event log storage already skips the question when its file exists. These storages skip it too
when the database is stamped with exactly one revision. Anything else (no file, no stamp, two
heads) takes Dagster's own path: it creates and stamps the database or raises as before.

Connecting. Dagster makes a new SQLAlchemy engine and SQLite connection for every query and
closes them after it. Closing the last connection to a WAL database checkpoints it, which means
an fsync. A run on the fixtures makes about 100 of them. These storages keep one pooled engine
per process instead. SQLite must not use a connection across `fork`, so a forked child gets
its own engine and leaves its parent's connections alone.

Committing. Each event is stored in one to three transactions, and SQLite's default
(`synchronous=FULL`) syncs the write-ahead log to disk at each commit: about 60 fsyncs per
command. These connections use `synchronous=NORMAL`, which SQLite documents as safe with WAL:
the log is synced at checkpoints only, a killed process loses nothing, and a power cut can
only lose the last commits, never leave the database corrupt. The run history loses at most
its latest events then; the signed log, which syncs its own appends, reports events it has
and the instance does not as "not yet witnessed" (docs/governance.md).

Storing events. Dagster stores an asset event in up to three transactions (the event; its tags
and its asset's row; the check's row) and asks the schema, on a new engine, whether a table and
a column exist for each. The event log here stores an event in one transaction, a batch Dagster
hands it (`DAGSTER_EVENT_BATCH_SIZE`, set for runs over a batch of accounts) in one, and
remembers the schema's answers: a QBR pack's six events cost about half of what they did.

Config: `base_dir`, the instance folder. The databases are where Dagster puts them by default:
`history/runs.db`, `schedules/schedules.db`, and `event_log.db` for the consolidated event log.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._serdes import ConfigurableClassData


def _stamped(db: Path, *tables: str) -> bool:
    """Whether the SQLite database `db` exists, has one alembic revision and has these tables."""
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
            revisions = connection.execute("select count(*) from alembic_version").fetchone()[0]
            found = {
                name
                for (name,) in connection.execute(
                    f"select name from sqlite_master where type = 'table' and name in ({', '.join('?' * len(tables))})",
                    tables,
                )
            }
    except sqlite3.Error:  # no alembic_version table, or not a database: Dagster's own path says what is wrong
        return False
    return revisions == 1 and found == set(tables)


class _PooledEngine:
    """One pooled engine per process for the storage's database (`_conn_string`)."""

    _conn_string: str
    _connect_args: ClassVar[Mapping[str, Any]] = {}
    _engine: tuple[int, sqlalchemy.Engine] | None = None
    _shared: threading.local | None = None

    def _pooled_engine(self) -> sqlalchemy.Engine:
        if self._engine is not None and self._engine[0] != os.getpid():
            self._engine[1].dispose(close=False)  # the parent's connections, inherited by fork
            self._engine = None
        if self._engine is None:
            engine = sqlalchemy.create_engine(self._conn_string, connect_args=self._connect_args)
            sqlalchemy.event.listen(engine, "connect", _sync_at_checkpoints)
            self._engine = (os.getpid(), engine)
        return self._engine[1]

    @contextlib.contextmanager
    def _pooled_connection(self) -> Iterator[sqlalchemy.Connection]:
        shared = getattr(self._shared, "connection", None)
        if shared is not None:
            yield shared
            return
        with self._pooled_engine().connect() as connection, connection.begin():
            yield connection

    @contextlib.contextmanager
    def _one_transaction(self) -> Iterator[None]:
        """Every query this thread makes in the block shares one connection and one transaction."""
        if self._shared is None:
            self._shared = threading.local()
        if getattr(self._shared, "connection", None) is not None:
            yield
            return
        with self._pooled_connection() as connection:
            self._shared.connection = connection
            try:
                yield
            finally:
                self._shared.connection = None

    def dispose(self) -> None:
        if self._engine is not None and self._engine[0] == os.getpid():
            self._engine[1].dispose()
        self._engine = None
        super().dispose()  # type: ignore[misc]  # the Dagster storage's, next in the subclass's MRO


def _sync_at_checkpoints(connection: sqlite3.Connection, _record: Any) -> None:
    connection.execute("PRAGMA synchronous = NORMAL")


def _open(cls: Any, inst_data: ConfigurableClassData | None, folder: Path, db_name: str, *tables: str) -> Any:
    """Storage `cls` on `<folder>/<db_name>.db`: opened as it is when stamped, else by Dagster's
    `from_local` (which creates and stamps it, or raises). `tables`: those `from_local` makes sure exist."""
    if _stamped(folder / f"{db_name}.db", *tables):
        return cls(create_db_conn_string(str(folder), db_name), inst_data)
    return cls.from_local(str(folder), inst_data=inst_data)


class ProjectRunStorage(_PooledEngine, SqliteRunStorage):
    """Dagster's SQLite run storage in `<base_dir>/history/runs.db`."""

    connect = _PooledEngine._pooled_connection

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> ProjectRunStorage:
        return _open(cls, inst_data, Path(config_value["base_dir"]) / "history", "runs", "runs", "instance_info")


class ProjectScheduleStorage(_PooledEngine, SqliteScheduleStorage):
    """Dagster's SQLite schedule storage in `<base_dir>/schedules/schedules.db`."""

    connect = _PooledEngine._pooled_connection

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> ProjectScheduleStorage:
        return _open(cls, inst_data, Path(config_value["base_dir"]) / "schedules", "schedules", "job_ticks")


class ProjectEventLogStorage(_PooledEngine, ConsolidatedSqliteEventLogStorage):
    """Dagster's consolidated SQLite event log in `<base_dir>/event_log.db` (opened as Dagster does)."""

    _connect_args: ClassVar[Mapping[str, Any]] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}  # as Dagster connects

    _connect = _PooledEngine._pooled_connection
    # What Dagster asks the schema for each asset event, each time on a new engine or inspector;
    # a table or column, once there, stays.
    _tables: frozenset[str] = frozenset()
    _asset_key_index_cols = False

    def store_event(self, event: EventLogEntry) -> None:
        """Dagster's, with its two to four transactions per event made one (one commit)."""
        with self._one_transaction():
            super().store_event(event)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A batch Dagster hands over (planned and materialization events, with
        `DAGSTER_EVENT_BATCH_SIZE` set) in one transaction, where Dagster's stores them one by one."""
        with self._one_transaction():
            for event in events:
                super().store_event(event)

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables and super().has_table(table_name):
            self._tables = self._tables | {table_name}
        return table_name in self._tables

    def _has_asset_key_index_cols_on_connection(self, conn: sqlalchemy.Connection) -> bool:
        self._asset_key_index_cols = self._asset_key_index_cols or super()._has_asset_key_index_cols_on_connection(conn)
        return self._asset_key_index_cols
