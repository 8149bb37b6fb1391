"""The lake: one table per contract, one snapshot per `as_of` and shard, behind one `Lake`.

Two backends share everything but storage (`open_lake` picks one from scale.yaml's `lake`):
- `DuckDBLake`, the default for one machine: one embedded DuckDB file, `<location>/c360.duckdb`;
- `DeltaLake`, for writers on several machines: one Delta Lake table per contract,
  `<location>/<table>`, partitioned by `as_of` and `shard`; the location may be an object-store
  URL (`s3://bucket/prefix`), its storage options passed through to delta-rs.

A write validates every row against the table's contract first, then replaces, in one
transaction (DuckDB) or one commit (Delta), the rows `as_of = X AND (shard = k OR shard >= N)`
of shard k of N: history accumulates, a rerun never duplicates, shrinking N leaves no stale
shard behind, other shards' rows are untouched, and a failure anywhere (a killed process
included) leaves the previous state. Readers see committed snapshots only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import polars as pl
import pyarrow as pa

from c360_dagster.domain.core.config import SCALE_FILE, load_scale_config
from c360_dagster.domain.core.errors import C360Error, ConfigError, ContractError
from c360_dagster.domain.core.failpoints import failpoint
from c360_dagster.domain.core.io import sink_chunks
from c360_dagster.domain.core.scratch import attached
from c360_dagster.domain.core.stages import IntegrityError
from c360_dagster.domain.governance.contracts import load_contract, validate_frame

SHOWN_VIOLATIONS = 5
# DuckDB lets one process at a time open the file for writing: the shards of a run take turns.
CONNECT_TIMEOUT_S = 120.0
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# Columns the writer adds to every row; the Delta tables are partitioned by them.
KEYS = ("as_of", "shard")
ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}
# Columns of the health history (`score_histories`), as the lake stores them.
HISTORY_COLUMNS = [
    "account_id",
    "as_of",
    "score",
    "tier",
    "tier_reason",
    "status",
    "scorecard",
    "config_hash",
    "components",
]


def rows_hash(frame: pl.DataFrame) -> str:
    """The rows' content hash, as a lake event signs it and verify recomputes it: sha256 of their
    CSV (in the frame's row and column order), hashed chunk by chunk as Polars writes it (the
    CSV of a million health rows, 1.5 GB, is never held whole)."""
    digest = hashlib.sha256()
    for chunk in sink_chunks(frame.lazy().sink_csv):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def snapshot_output(table: str, as_of: dt.date) -> str:
    """The output name a lake event gives a table's snapshot: `<table>@<as_of>`."""
    return f"{table}@{as_of.isoformat()}"


@dataclass(frozen=True)
class Column:
    """A lake column as the contract defines it: its JSON kind (`date` for format date), nullability,
    and whether its strings are JSON text (`contentMediaType: application/json`)."""

    name: str
    kind: str
    nullable: bool
    description: str
    json_text: bool = False


def is_url(location: str) -> bool:
    """An object-store location (`s3://…`, `gs://…`, `az://…`), not a local folder."""
    return "://" in location


def open_lake(configs_dir: Path | str, artifacts_dir: Path | str, contracts_dir: Path | str) -> Lake:
    """The project's lake as `configs_dir/scale.yaml`'s `lake` describes it (DuckDB under
    `<artifacts>/lake` by default); a relative location resolves against the working directory."""
    settings = load_scale_config(configs_dir)["lake"]
    backend = DeltaLake if settings.get("format") == "delta" else DuckDBLake
    location = settings.get("location") or str(Path(artifacts_dir) / "lake")
    source = Path(configs_dir) / SCALE_FILE
    if backend is DuckDBLake and is_url(location):
        raise ConfigError(
            f"{source}: lake.location: the duckdb lake is one local file; an object-store URL needs format: delta"
        )
    if backend is DuckDBLake and "storage_options" in settings:
        raise ConfigError(f"{source}: lake.storage_options: only a delta lake has storage options")
    if backend is DeltaLake:
        try:
            import deltalake  # noqa: F401  # only whether it imports
        except ImportError:
            raise C360Error(
                f'{source}: lake.format: delta needs the `scale` extra: pip install -c constraints.txt -e ".[scale]"',
                code="EXTRA_MISSING",
            ) from None
    return backend(location, Path(contracts_dir), dict(settings.get("storage_options", {})))


@dataclass(frozen=True)
class Lake:
    """What every backend offers; the subclasses only store and fetch rows."""

    location: str
    contracts_dir: Path
    storage_options: Mapping[str, str] = field(default_factory=dict)

    FORMAT: ClassVar[str]
    TYPES: ClassVar[Mapping[str, str]]  # a column's type in the backend, by JSON kind

    def write_snapshot(self, table: str, frame: pl.DataFrame, as_of: dt.date, shard: int = 0, shards: int = 1) -> int:
        """Validate `frame` (the table's columns without as_of and shard), then replace shard `shard`
        of `shards`'s rows for `as_of`; return the rows written."""
        _checked_name(table)
        if not 0 <= shard < shards:
            raise C360Error(f"lake table {table}: shard {shard} is not one of 0..{shards - 1}")
        schema = load_contract(table, self.contracts_dir)
        carried = [key for key in KEYS if key in frame.columns]
        if carried:
            raise ContractError(f"lake table {table}: the frame must not carry {carried[0]}; the writer adds it")
        rows = frame.select(
            pl.lit(as_of, dtype=pl.Date).alias("as_of"), pl.lit(shard, dtype=pl.Int64).alias("shard"), pl.all()
        )
        violations = validate_frame(rows, schema, table, limit=SHOWN_VIOLATIONS)
        if violations:
            shown = "; ".join(f"row {v.row} (0-based), field {v.field}: {v.message}" for v in violations)
            raise ContractError(f"lake table {table}: rows break the contract, nothing written: {shown}")
        columns = contract_columns(table, schema)
        self._replace(table, rows.select([c.name for c in columns]), columns, as_of, shard, shards)
        return rows.height

    def read_snapshot(self, table: str, as_of: dt.date | None = None) -> pl.DataFrame:
        """One snapshot of a table, every shard (the latest when `as_of` is None), rows in a stable order."""
        taken = self.snapshots(table)
        if not taken:
            raise C360Error(
                f"the lake {self.where} has no snapshot of {table} yet; materialize lake/{table}_table first"
            )
        as_of = taken[-1] if as_of is None else as_of
        if as_of not in taken:
            have = ", ".join(d.isoformat() for d in taken)
            raise C360Error(f"the lake has no {table} snapshot for as_of {as_of.isoformat()} (have: {have})")
        rows = self._read(table, as_of=as_of)
        assert rows is not None  # it has snapshots
        # The same order whatever the shard count: the shard a row was written by sorts last.
        return rows.sort([*(c for c in rows.columns if c != "shard"), "shard"], nulls_last=True)

    def score_history(self, account_id: str) -> list[dict[str, Any]]:
        """An account's health per snapshot, oldest first: as_of, score, tier, components, provenance."""
        return self.score_histories([account_id])[account_id]

    def score_histories(self, account_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """`score_history` of several accounts in one read."""
        histories: dict[str, list[dict[str, Any]]] = {account_id: [] for account_id in account_ids}
        rows = self._read("account_health", account_ids=account_ids, columns=HISTORY_COLUMNS)
        if rows is None:
            return histories
        for row in rows.sort("account_id", "as_of").iter_rows(named=True):
            histories[row.pop("account_id")].append({**row, "components": json.loads(row["components"])})
        return histories

    def verify_signed(self, signed: Mapping[str, Mapping[str, str]]) -> int:
        """Re-hash each snapshot the signed log names and check it against the recorded hash.

        `signed` holds, per shard key, the latest signed hash of each output name
        (`eventlog.signed_outputs`); a name `<table>@<as_of>` is that shard's rows of the table's
        snapshot, hashed by `rows_hash` as the writer hashed them. Returns the snapshots checked;
        raises `IntegrityError` on the first whose rows are not the ones signed (edited, added,
        or deleted after the write).
        """
        snapshots: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (table, as_of) -> (shard, hash)
        for shard_key, outputs in signed.items():
            for name, digest in outputs.items():
                table, at, day = name.partition("@")
                if at and TABLE_NAME.match(table):
                    snapshots.setdefault((table, day), []).append((int(shard_key), digest))
        checked = 0
        for (table, day), shards in sorted(snapshots.items()):
            rows = self._read(table, as_of=dt.date.fromisoformat(day))  # every shard's rows, read once
            for shard, digest in sorted(shards):
                stored = pl.DataFrame() if rows is None else rows.filter(pl.col("shard") == shard).drop(list(KEYS))
                found = rows_hash(stored)
                checked += 1
                if found != digest:
                    raise IntegrityError(
                        f"lake table {table} ({self.table_name(table)}), snapshot as_of {day}, shard {shard}: "
                        f"its rows hash to {found}, not the {digest} the signed log recorded when they were "
                        "written; the rows were changed after the write. Rerun the pipeline to rewrite it."
                    )
        return checked

    def table_columns(self, table: str) -> list[tuple[str, str, str]]:
        """(name, type in this backend, description) of each column of the lake table, as its contract defines them."""
        columns = contract_columns(table, load_contract(table, self.contracts_dir))
        return [(c.name, self._column_type(c), c.description) for c in columns]

    def _column_type(self, column: Column) -> str:
        """The column's type in this backend, `NOT NULL` unless the contract lets it be null."""
        return self.TYPES[column.kind] if column.nullable else f"{self.TYPES[column.kind]} NOT NULL"

    @property
    def where(self) -> str:
        """The lake in words a user can open: its file or its folder (or URL)."""
        return self.location

    def table_name(self, table: str) -> str:
        """How a catalog (and the Dagster UI) names the table."""
        raise NotImplementedError

    def snapshots(self, table: str) -> list[dt.date]:
        """The `as_of` dates a table holds, oldest first (none when the lake or table is absent)."""
        raise NotImplementedError

    def _read(
        self,
        table: str,
        *,
        as_of: dt.date | None = None,
        account_ids: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> pl.DataFrame | None:
        """The committed rows of `as_of` (all when None) of these accounts (all when None); None without the table."""
        raise NotImplementedError

    def _replace(
        self, table: str, rows: pl.DataFrame, columns: list[Column], as_of: dt.date, shard: int, shards: int
    ) -> None:
        """Replace the rows `as_of = as_of AND (shard = shard OR shard >= shards)` by `rows`, atomically."""
        raise NotImplementedError


def contract_columns(table: str, schema: Mapping[str, Any]) -> list[Column]:
    """The table's columns in contract order; a column has one JSON type besides null."""
    columns = []
    for name, spec in schema["properties"].items():
        types = {spec["type"]} if isinstance(spec["type"], str) else set(spec["type"])
        kinds = sorted(types - {"null"})
        if len(kinds) != 1:
            raise ContractError(f"contract {table}: field {name}: a lake column needs one type besides null")
        kind = "date" if spec.get("format") == "date" else kinds[0]
        json_text = spec.get("contentMediaType") == "application/json"
        columns.append(Column(name, kind, "null" in types, spec.get("description", ""), json_text))
    if [c.name for c in columns[: len(KEYS)]] != list(KEYS):
        raise ContractError(f"contract {table}: a lake table's first columns are {', '.join(KEYS)}")
    return columns


def _checked_name(table: str) -> str:
    if not TABLE_NAME.match(table):
        raise C360Error(f"{table!r} is not a lake table name (lowercase letters, digits, _)")
    return table


def _write_failed(where: str, exc: BaseException) -> C360Error:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return C360Error(
        f"cannot write the lake {where}, nothing written: {reason}; "
        "free some space (or make its folder writable) and run the command again",
        code="LAKE_WRITE_FAILED",
    )


# --- DuckDB: one file ------------------------------------------------------------------------


@dataclass(frozen=True)
class DuckDBLake(Lake):
    """One embedded DuckDB file; anyone can read it with the duckdb CLI or Python."""

    FORMAT = "duckdb"
    TYPES: ClassVar[Mapping[str, str]] = {
        "string": "VARCHAR",
        "integer": "BIGINT",
        "number": "DOUBLE",
        "boolean": "BOOLEAN",
        "date": "DATE",
    }
    # DuckDB names the file's catalog after the file.
    CATALOG: ClassVar[str] = "c360.main"
    # JSON text (a health record's components, a signal's evidence: 1.5 KB a row) is stored with
    # zstd: at 20k health rows a fifth of the file DuckDB's own choice makes (2.1 against
    # 10.5 MB), and a third less time to write it. Only a new table's columns get it.
    JSON_TEXT_COMPRESSION: ClassVar[str] = "USING COMPRESSION zstd"

    @property
    def path(self) -> Path:
        return Path(self.location) / "c360.duckdb"

    @property
    def where(self) -> str:
        return str(self.path)

    def table_name(self, table: str) -> str:
        return f"{self.CATALOG}.{table}"

    def snapshots(self, table: str) -> list[dt.date]:
        found = self._query(table, f'SELECT DISTINCT as_of FROM "{table}" ORDER BY as_of', [])
        return [] if found is None else found["as_of"].to_list()

    def _read(
        self,
        table: str,
        *,
        as_of: dt.date | None = None,
        account_ids: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> pl.DataFrame | None:
        conditions: list[str] = []
        params: list[Any] = []
        if as_of is not None:
            conditions.append("as_of = ?")
            params.append(as_of)
        if account_ids is not None:
            conditions.append("list_contains(?, account_id)")
            params.append(account_ids)
        selected = ", ".join(f'"{name}"' for name in columns) if columns else "*"
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._query(table, f'SELECT {selected} FROM "{table}"{where}', params)

    def _query(self, table: str, query: str, params: list[Any]) -> pl.DataFrame | None:
        """Run a read query; None when the lake file or the table does not exist yet."""
        if not self.path.exists():
            return None
        with _connect(self.path, read_only=True) as con:
            [(found,)] = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
                " AND table_name = ?",
                [_checked_name(table)],
            ).fetchall()
            if not found:
                return None
            return pl.from_arrow(con.sql(query, params=params).to_arrow_table())  # type: ignore[return-value]  # a table gives a frame, not a series

    def _replace(
        self, table: str, rows: pl.DataFrame, columns: list[Column], as_of: dt.date, shard: int, shards: int
    ) -> None:
        wanted = [(c.name, self._column_type(c)) for c in columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(self.path, read_only=False) as con:
            con.execute("BEGIN TRANSACTION").fetchall()
            try:
                definition = ", ".join(
                    f'"{c.name}" {self._column_type(c)}' + (f" {self.JSON_TEXT_COMPRESSION}" if c.json_text else "")
                    for c in columns
                )
                con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({definition})').fetchall()
                _check_columns(con, table, wanted)
                con.execute(
                    f'DELETE FROM "{table}" WHERE as_of = ? AND (shard = ? OR shard >= ?)', [as_of, shard, shards]
                ).fetchall()
                _insert(con, table, rows)
                failpoint(f"lake:{table}")
                con.execute("COMMIT").fetchall()
            except BaseException as exc:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK").fetchall()
                if isinstance(exc, duckdb.IOException | duckdb.TransactionException):  # e.g. a full disk
                    raise _write_failed(str(self.path), exc) from None
                raise


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pl.DataFrame) -> None:
    """Append the rows through Arrow in one statement (no Python call per row).

    Arrow's string views are Polars' own layout, so the hand-over copies no text (the oldest
    Arrow layout cost a second per million health rows).
    """
    con.register("incoming_rows", rows.to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        con.execute(f'INSERT INTO "{table}" SELECT * FROM incoming_rows').fetchall()
    finally:
        con.unregister("incoming_rows")


def _check_columns(con: duckdb.DuckDBPyConnection, table: str, columns: list[tuple[str, str]]) -> None:
    """Refuse to write into a table created under a different contract."""
    existing = con.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_catalog = current_database() AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    found = [(name, sql_type if nullable == "YES" else f"{sql_type} NOT NULL") for name, sql_type, nullable in existing]
    if found != columns:
        raise ContractError(
            f"lake table {table} was created with columns {found} but the contract now wants "
            f"{columns}; migrate the table or start a new lake file"
        )


@contextlib.contextmanager
def _connect(db_path: Path, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the lake (attached to this process's DuckDB database), waiting a little while another
    process holds DuckDB's file lock."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    with contextlib.ExitStack() as stack:
        while True:
            try:
                con = stack.enter_context(attached(db_path, read_only=read_only))
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise C360Error(f"cannot open the lake {db_path}: {exc}") from None
                if time.monotonic() >= deadline:
                    raise C360Error(
                        f"the lake {db_path} is in use by another process; try again when it finishes"
                    ) from None
                time.sleep(0.1)
        yield con


# --- Delta Lake: a table per contract, partitioned by as_of and shard -------------------------


@dataclass(frozen=True)
class DeltaLake(Lake):
    """Delta Lake tables (delta-rs, no JVM), written from Arrow; `deltalake` is imported only here."""

    FORMAT = "delta"
    TYPES: ClassVar[Mapping[str, str]] = {
        "string": "string",
        "integer": "long",
        "number": "double",
        "boolean": "boolean",
        "date": "date",
    }

    def table_uri(self, table: str) -> str:
        return f"{self.location.rstrip('/')}/{_checked_name(table)}"

    def table_name(self, table: str) -> str:
        return self.table_uri(table)

    def snapshots(self, table: str) -> list[dt.date]:
        found = self._table(table)
        if found is None:
            return []
        # Partition values come from the table's log: no data file is read.
        return sorted({dt.date.fromisoformat(part["as_of"]) for part in found.partitions()})

    def _read(
        self,
        table: str,
        *,
        as_of: dt.date | None = None,
        account_ids: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> pl.DataFrame | None:
        found = self._table(table)
        if found is None:
            return None
        scan = pl.scan_delta(found)
        if as_of is not None:
            scan = scan.filter(pl.col("as_of") == as_of)  # one partition: the other dates are not read
        if account_ids is not None:
            scan = scan.filter(pl.col("account_id").is_in(account_ids))
        return (scan.select(columns) if columns else scan).collect()

    def _replace(
        self, table: str, rows: pl.DataFrame, columns: list[Column], as_of: dt.date, shard: int, shards: int
    ) -> None:
        import deltalake

        uri = self.table_uri(table)
        schema = pa.schema([pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in columns])
        try:
            self._create(table, columns, schema)
            data = rows.to_arrow().cast(schema)
            # The rows reach delta-rs as a stream: the failpoint fires once every batch is handed
            # over (data files being written), before the commit that makes them the snapshot.
            stream = pa.RecordBatchReader.from_batches(schema, _handed_over(data.to_batches(), f"lake:{table}"))
            deltalake.write_deltalake(
                uri,
                stream,
                mode="overwrite",
                partition_by=list(KEYS),
                predicate=f"as_of = '{as_of.isoformat()}' AND (shard = {int(shard)} OR shard >= {int(shards)})",
                storage_options=dict(self.storage_options) or None,
            )
        except (OSError, deltalake.exceptions.DeltaError) as exc:
            raise _write_failed(uri, exc) from None

    def _create(self, table: str, columns: list[Column], schema: pa.Schema) -> None:
        """Create the table with the contract's columns, or refuse one created under a different contract."""
        import deltalake

        uri = self.table_uri(table)
        options = dict(self.storage_options) or None
        try:
            # Several shards may create it at once: the first commit wins, the others find it.
            deltalake.DeltaTable.create(uri, schema, mode="ignore", partition_by=list(KEYS), storage_options=options)
        except deltalake.exceptions.DeltaError:
            if not deltalake.DeltaTable.is_deltatable(uri, storage_options=options):
                raise
        existing = deltalake.DeltaTable(uri, storage_options=options)
        found = [(f.name, getattr(f.type, "type", str(f.type)), f.nullable) for f in existing.schema().fields]
        wanted = [(c.name, self.TYPES[c.kind], c.nullable) for c in columns]
        if found != wanted or existing.metadata().partition_columns != list(KEYS):
            raise ContractError(
                f"lake table {table} at {uri} was created with columns {found} but the contract now wants "
                f"{wanted}, partitioned by {', '.join(KEYS)}; migrate the table or start a new lake location"
            )

    def _table(self, table: str) -> Any:
        """The Delta table, or None when it does not exist yet (reading never creates it)."""
        import deltalake

        uri = self.table_uri(table)
        options = dict(self.storage_options) or None
        if not deltalake.DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        return deltalake.DeltaTable(uri, storage_options=options)


def _handed_over(batches: list[pa.RecordBatch], point: str) -> Iterator[pa.RecordBatch]:
    yield from batches
    failpoint(point)
