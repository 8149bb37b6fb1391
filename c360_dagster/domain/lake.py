"""The lake: one embedded DuckDB file, one table per contract, one snapshot per `as_of`.

A write validates every row against the table's contract first, then replaces that
`as_of`'s rows in a single transaction, so history accumulates, a rerun never duplicates
and a failure anywhere leaves the previous state. Anyone can read the file with the duckdb
CLI or Python.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from c360_dagster.domain.contracts import load_contract, validate_frame
from c360_dagster.domain.errors import C360Error, ContractError
from c360_dagster.domain.failpoints import failpoint

SHOWN_VIOLATIONS = 5
CONNECT_TIMEOUT_S = 10.0
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
SQL_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}


def write_snapshot(db_path: Path, table: str, frame: pl.DataFrame, as_of: dt.date, contracts_dir: Path) -> int:
    """Validate `frame` (the table's columns without `as_of`), then replace `as_of`'s rows; return rows written."""
    schema = load_contract(table, contracts_dir)
    if "as_of" in frame.columns:
        raise ContractError(f"lake table {table}: the frame must not carry as_of; the writer adds it")
    rows = frame.select(pl.lit(as_of, dtype=pl.Date).alias("as_of"), pl.all())
    violations = validate_frame(rows, schema, table, limit=SHOWN_VIOLATIONS)
    if violations:
        shown = "; ".join(f"row {v.row} (0-based), field {v.field}: {v.message}" for v in violations)
        raise ContractError(f"lake table {table}: rows break the contract, nothing written: {shown}")
    columns = _sql_columns(table, schema)
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    with _connect(db_path, read_only=False) as con:
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            definition = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns)
            con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({definition})').fetchall()
            _check_columns(con, table, columns)
            con.execute(f'DELETE FROM "{table}" WHERE as_of = ?', [as_of]).fetchall()
            _insert(con, table, rows.select([name for name, _ in columns]))
            failpoint(f"lake:{table}")
            con.execute("COMMIT").fetchall()
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK").fetchall()
            if isinstance(exc, duckdb.IOException | duckdb.TransactionException):  # e.g. a full disk
                reason = str(exc).splitlines()[0]
                raise C360Error(
                    f"cannot write the lake {db_path}, nothing written: {reason}; "
                    "free some space (or make its folder writable) and run the command again",
                    code="LAKE_WRITE_FAILED",
                ) from None
            raise
    return rows.height


def read_snapshot(db_path: Path, table: str, as_of: dt.date | None = None) -> pl.DataFrame:
    """One snapshot of a table (the latest when `as_of` is None), rows in a stable order."""
    taken = snapshots(db_path, table)
    if not taken:
        raise C360Error(f"the lake {db_path} has no snapshot of {table} yet; materialize lake/{table} first")
    as_of = taken[-1] if as_of is None else as_of
    if as_of not in taken:
        have = ", ".join(d.isoformat() for d in taken)
        raise C360Error(f"the lake has no {table} snapshot for as_of {as_of.isoformat()} (have: {have})")
    with _connect(db_path, read_only=True) as con:
        query = f'SELECT * FROM "{_checked_name(table)}" WHERE as_of = ? ORDER BY ALL'
        return pl.from_arrow(con.sql(query, params=[as_of]).to_arrow_table())  # type: ignore[return-value]


def snapshots(db_path: Path, table: str) -> list[dt.date]:
    """The `as_of` dates a table holds, oldest first (none when the lake or table is absent)."""
    rows = _query(db_path, table, f'SELECT DISTINCT as_of FROM "{table}" ORDER BY as_of', [])
    return [row[0] for row in rows]


def score_history(db_path: Path, account_id: str) -> list[dict[str, Any]]:
    """An account's health per snapshot, oldest first: as_of, score, tier, components, provenance."""
    return score_histories(db_path, [account_id])[account_id]


def score_histories(db_path: Path, account_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """`score_history` of several accounts in one query."""
    rows = _query(
        db_path,
        "account_health",
        "SELECT account_id, as_of, score, tier, status, scorecard, config_hash, components"
        " FROM account_health WHERE list_contains(?, account_id) ORDER BY account_id, as_of",
        [account_ids],
    )
    histories: dict[str, list[dict[str, Any]]] = {account_id: [] for account_id in account_ids}
    for account_id, *record in rows:
        histories[account_id].append(_score_record(record))
    return histories


def _score_record(row: list) -> dict[str, Any]:
    as_of, score, tier, status, scorecard, config_hash, components = row
    return {
        "as_of": as_of,
        "score": score,
        "tier": tier,
        "status": status,
        "scorecard": scorecard,
        "config_hash": config_hash,
        "components": json.loads(components),
    }


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


def table_columns(table: str, contracts_dir: Path) -> list[tuple[str, str, str]]:
    """(name, SQL type, description) of each column of the lake table, as its contract defines them."""
    schema = load_contract(table, contracts_dir)
    return [
        (name, sql_type, schema["properties"][name].get("description", ""))
        for name, sql_type in _sql_columns(table, schema)
    ]


def _sql_columns(table: str, schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, SQL type) per contract property, in contract order; NOT NULL unless nullable."""
    _checked_name(table)
    columns = []
    for name, spec in schema["properties"].items():
        types = {spec["type"]} if isinstance(spec["type"], str) else set(spec["type"])
        json_types = sorted(types - {"null"})
        if len(json_types) != 1:
            raise ContractError(f"contract {table}: field {name}: a lake column needs one type besides null")
        sql_type = "DATE" if spec.get("format") == "date" else SQL_TYPES[json_types[0]]
        columns.append((name, sql_type if "null" in types else f"{sql_type} NOT NULL"))
    return columns


def _check_columns(con: duckdb.DuckDBPyConnection, table: str, columns: list[tuple[str, str]]) -> None:
    """Refuse to write into a table created under a different contract."""
    existing = con.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    found = [(name, sql_type if nullable == "YES" else f"{sql_type} NOT NULL") for name, sql_type, nullable in existing]
    if found != columns:
        raise ContractError(
            f"lake table {table} was created with columns {found} but the contract now wants "
            f"{columns}; migrate the table or start a new lake file"
        )


def _checked_name(table: str) -> str:
    if not TABLE_NAME.match(table):
        raise C360Error(f"{table!r} is not a lake table name (lowercase letters, digits, _)")
    return table


def _query(db_path: Path, table: str, query: str, params: list[Any]) -> list[tuple]:
    """Run a read query; no rows when the lake file or the table does not exist yet."""
    if not Path(db_path).exists():
        return []
    with _connect(db_path, read_only=True) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [_checked_name(table)]
        ).fetchone()
        return con.execute(query, params).fetchall() if found and found[0] else []


@contextlib.contextmanager
def _connect(db_path: Path, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the lake, waiting a little while another process holds DuckDB's file lock."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            con = duckdb.connect(str(db_path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise C360Error(f"cannot open the lake {db_path}: {exc}") from None
            if time.monotonic() >= deadline:
                raise C360Error(
                    f"the lake {db_path} is in use by another process; try again when it finishes"
                ) from None
            time.sleep(0.1)
    try:
        yield con
    finally:
        con.close()
