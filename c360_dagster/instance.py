"""The project's persistent Dagster instance, shared by the `c360` shim and `dagster dev`."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import fsync_path
from c360_dagster.domain.core.locking import file_lock

DEFAULT_HOME = ".dagster_home"
# Written once the instance's storages exist and are migrated; later runs skip the setup.
READY_MARKER = ".c360-instance-ready"
SETUP_LOCK = ".c360-instance.lock"
SETUP_TIMEOUT_S = 120.0

# Local storage only, and telemetry off: the project runs offline. One SQLite event log for all
# runs and no stdout capture (assets log structured events, not prints) keep a run cheap: the
# per-account assets start one run per account. The storages are Dagster's SQLite ones, opened
# without re-reading its migration scripts and with one pooled connection (instance_storage.py).
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_storage:
  module: c360_dagster.instance_storage
  class: ProjectRunStorage
  config:
    base_dir:
      env: DAGSTER_HOME
schedule_storage:
  module: c360_dagster.instance_storage
  class: ProjectScheduleStorage
  config:
    base_dir:
      env: DAGSTER_HOME
event_log_storage:
  module: c360_dagster.instance_storage
  class: ProjectEventLogStorage
  config:
    base_dir:
      env: DAGSTER_HOME
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


# The metadata by which each materialization witnesses the signed log's head (docs/governance.md).
WITNESS_LOG, WITNESS_SEQ, WITNESS_HASH = "c360/event_log", "c360/event_seq", "c360/event_hash"
WITNESS_WINDOW = 1000


def dagster_home(project_root: Path | None = None) -> Path:
    """The instance folder: DAGSTER_HOME, else the project's `.dagster_home`."""
    return Path(os.environ.get("DAGSTER_HOME") or (project_root or Path.cwd()) / DEFAULT_HOME).resolve()


def ensure_dagster_home(project_root: Path | None = None) -> Path:
    """Point DAGSTER_HOME at the project's instance folder (unless set), created and migrated once.

    Dagster creates its SQLite storages and stamps their schema version on first use; two
    processes doing that at once stamp two versions, and the instance never opens again. So the
    first use happens here, under an exclusive lock, and the processes that waited find it done.

    An instance configured otherwise (a deployment's `dagster.yaml`, e.g. PostgreSQL:
    docs/deployment.md) lives elsewhere and may be down: it is opened once per process instead,
    so a database out of reach is one clean error, not a traceback from deep inside a run.
    """
    home = dagster_home(project_root)
    os.environ["DAGSTER_HOME"] = str(home)
    if (home / READY_MARKER).exists() or home in _OPENED:
        return home
    home.mkdir(parents=True, exist_ok=True)
    with file_lock(
        home / SETUP_LOCK, SETUP_TIMEOUT_S, f"another c360 process is creating the Dagster instance in {home}"
    ):
        if not (home / READY_MARKER).exists():
            config = home / "dagster.yaml"
            if not config.exists():
                config.write_text(DAGSTER_YAML, encoding="utf-8")
            own = config.read_text(encoding="utf-8") == DAGSTER_YAML
            with _synced_once(home) if own else contextlib.nullcontext():
                _create_storages(home, own)
            if home not in _OPENED:
                (home / READY_MARKER).write_text(
                    "the storages of this Dagster instance are created and migrated\n", encoding="utf-8"
                )
    return home


# Deployment instances this process has opened (they get no READY_MARKER: they are checked per process).
_OPENED: set[Path] = set()


def _create_storages(home: Path, own: bool) -> None:
    """Open the instance (this creates or upgrades its storages), or say how to recover.

    `own`: the project's SQLite instance (made once), else a deployment's (opened each process).
    """
    import dagster as dg

    try:
        with _migration_scripts_read_once(), dg.DagsterInstance.get() as instance:
            instance.get_run_records(limit=1)
            instance.get_dynamic_partitions("account")
            instance.all_instigator_state()
    except Exception as exc:  # Dagster, alembic and database drivers raise many kinds; one meaning to the user
        reason = _reason(exc)
        if not own:
            raise C360Error(
                f"the Dagster instance configured in {home / 'dagster.yaml'} cannot be opened ({reason}); "
                "check the storage it names: its database reachable, the environment variables it reads set "
                "(docs/deployment.md)",
                code="INSTANCE_UNREACHABLE",
            ) from None
        raise C360Error(
            f"the Dagster instance in {home} cannot be opened ({reason}). It keeps only run history "
            f"(the artifacts and the signed log are elsewhere): move it aside with `mv {home} {home}.broken` "
            "and run the command again to start a fresh one",
            code="INSTANCE_BROKEN",
        ) from None
    if not own:
        _OPENED.add(home)


@contextlib.contextmanager
def _migration_scripts_read_once() -> Iterator[None]:
    """While the storages are created, Alembic reads Dagster's ~180 migration scripts once, not six
    times: each of the three storages asks for the head revision and then stamps it, and each time
    Alembic makes a new script directory that imports every script again (docs/performance.md,
    "Start-up, round 8"). The three storages' Alembic configs name the same scripts."""
    from alembic.script import ScriptDirectory

    from_config = ScriptDirectory.__dict__["from_config"]
    read: dict[tuple[tuple[str, str], ...], ScriptDirectory] = {}

    def read_once(cls: type[ScriptDirectory], config: Any) -> ScriptDirectory:
        # The options the script directory is made from; not `here`, the folder of each storage's own ini file.
        section = config.get_section(config.config_ini_section, {})
        options = tuple(sorted((name, value) for name, value in section.items() if name != "here"))
        if options not in read:
            read[options] = from_config.__func__(cls, config)
        return read[options]

    ScriptDirectory.from_config = classmethod(read_once)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        ScriptDirectory.from_config = from_config  # type: ignore[method-assign]


@contextlib.contextmanager
def _synced_once(home: Path) -> Iterator[None]:
    """While the project's SQLite databases are created, SQLite syncs none of the ~100 statements
    that create them (each its own transaction: 262 fsyncs), and the instance's files are synced
    once afterwards, before the ready marker is written (docs/performance.md, "Start-up, round 9").

    A killed process loses nothing this way either: what SQLite handed to the system is written.
    Only a crash of the machine during the creation could leave a database unreadable, and then
    there is no marker: the next command creates what is missing, or names the broken database
    and how to move it aside (INSTANCE_BROKEN). Dagster's creation makes its own engines, so the
    setting applies to every SQLite connection opened meanwhile; it runs under the setup lock, at
    a process's start."""
    import sqlalchemy

    def unsynced(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous = OFF")

    sqlalchemy.event.listen(sqlalchemy.Engine, "connect", unsynced)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.Engine, "connect", unsynced)
    for folder, _, files in os.walk(home):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def _reason(exc: Exception) -> str:
    """What went wrong, in one line: Dagster's config errors bury an unset variable in a stack trace."""
    text = " ".join(str(getattr(error, "message", "")) for error in getattr(exc, "errors", [])) or str(exc)
    unset = re.search(r'environment variable "([^"]+)" which is not set', text)
    if unset:
        return f"environment variable {unset.group(1)} is not set"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def witness_metadata(log_path: Path, seq: int, line_hash: str) -> dict[str, object]:
    """What a materialization records of the event it appended to the log at `log_path` (as configured)."""
    return {WITNESS_LOG: str(log_path), WITNESS_SEQ: seq, WITNESS_HASH: line_hash}


def witnessed_heads() -> dict[str, tuple[int, str]]:
    """The latest (seq, line hash) of each signed log (the main one, each shard's) the instance's
    materializations recorded, by the log's path as the project names it.

    A run of many partitions stores their materializations in no particular order, so the
    highest seq is taken over each asset's latest WITNESS_WINDOW materializations (more than
    the runs of one batched backfill wave). Empty when there is no instance or no such record.
    """
    if not dagster_home().exists():
        return {}
    ensure_dagster_home()
    import dagster as dg

    witnessed: dict[str, tuple[int, str]] = {}
    with dg.DagsterInstance.get() as instance:
        for key in instance.get_asset_keys():
            for record in instance.fetch_materializations(key, limit=WITNESS_WINDOW).records:
                metadata = record.asset_materialization.metadata if record.asset_materialization else {}
                if WITNESS_SEQ in metadata:
                    log = str(metadata[WITNESS_LOG].value)
                    seen = (cast(int, metadata[WITNESS_SEQ].value), str(metadata[WITNESS_HASH].value))
                    witnessed[log] = max(witnessed.get(log, seen), seen)
    return witnessed
