"""The lake: validated, transactional snapshots per as_of, and the readers over them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pytest

from c360_dagster.domain import lake
from c360_dagster.domain.errors import C360Error, ContractError

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "schemas"
D1, D2, D3 = dt.date(2026, 7, 31), dt.date(2026, 8, 31), dt.date(2026, 9, 30)


def health(scores: dict[str, int], config: str = "ab") -> pl.DataFrame:
    """account_health rows without as_of; the tier follows the score (<50 red, <75 amber)."""
    ids = sorted(scores)
    tiers = ["red" if scores[i] < 50 else "amber" if scores[i] < 75 else "green" for i in ids]
    return pl.DataFrame(
        {
            "account_id": ids,
            "segment": ["smb"] * len(ids),
            "scorecard": ["default"] * len(ids),
            "score": [scores[i] for i in ids],
            "tier": tiers,
            "status": ["scored"] * len(ids),
            "status_reason": pl.Series([None] * len(ids), dtype=pl.Utf8),
            "lifecycle": ["active"] * len(ids),
            "config_hash": ["sha256:" + config * 32] * len(ids),
            # Not overridden: the computed values are the effective ones.
            "computed_score": [scores[i] for i in ids],
            "computed_tier": tiers,
            "override_reason": pl.Series([None] * len(ids), dtype=pl.Utf8),
            "override_author": pl.Series([None] * len(ids), dtype=pl.Utf8),
            "override_expires_on": pl.Series([None] * len(ids), dtype=pl.Date),
            "components": [json.dumps({"adoption": {"points": scores[i]}}) for i in ids],
        }
    )


def signals(count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": [f"A{i:03d}" for i in range(count)],
            "code": ["SIG_SUPPORT_SPIKE"] * count,
            "kind": ["risk"] * count,
            "evidence": ['{"cases":4}'] * count,
            "signal_id": [f"{i:016x}" for i in range(count)],
            "status": ["new"] * count,
            "since": [D1] * count,
            "snoozed_until": pl.Series([None] * count, dtype=pl.Date),
        }
    )


def count_rows(db: Path, table: str) -> dict[dt.date, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute(f"SELECT as_of, count(*) FROM {table} GROUP BY as_of ORDER BY as_of").fetchall())


def test_write_adds_as_of_and_reads_back(tmp_path: Path) -> None:
    db = tmp_path / "lake" / "c360.duckdb"
    written = lake.write_snapshot(db, "account_health", health({"A1": 80, "A2": 40}), D1, CONTRACTS)
    assert written == 2
    snapshot = lake.read_snapshot(db, "account_health")
    assert snapshot.columns[0] == "as_of" and snapshot["as_of"].to_list() == [D1, D1]
    assert snapshot.drop("as_of").equals(health({"A1": 80, "A2": 40}))


def test_column_types_come_from_the_contract(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "account_health", health({"A1": 80}), D1, CONTRACTS)
    with duckdb.connect(str(db), read_only=True) as con:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'account_health'"
            ).fetchall()
        )
    assert types["as_of"] == "DATE" and types["score"] == "BIGINT" and types["tier"] == "VARCHAR"


def test_rerun_replaces_its_as_of_and_keeps_other_snapshots(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "customer_signals", signals(3), D1, CONTRACTS)
    lake.write_snapshot(db, "customer_signals", signals(5), D2, CONTRACTS)
    lake.write_snapshot(db, "customer_signals", signals(2), D1, CONTRACTS)  # rerun of D1
    lake.write_snapshot(db, "customer_signals", signals(2), D1, CONTRACTS)  # and again
    assert count_rows(db, "customer_signals") == {D1: 2, D2: 5}
    assert lake.snapshots(db, "customer_signals") == [D1, D2]
    assert lake.read_snapshot(db, "customer_signals").height == 5  # latest is D2
    assert lake.read_snapshot(db, "customer_signals", D1).height == 2


def test_contract_violation_writes_nothing_and_names_table_row_field(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "account_health", health({"A1": 80}), D1, CONTRACTS)
    bad = health({"A1": 70, "A2": 60, "A3": 50}).with_columns(
        pl.when(pl.col("account_id") == "A2").then(pl.lit("purple")).otherwise(pl.col("tier")).alias("tier")
    )
    with pytest.raises(ContractError) as caught:
        lake.write_snapshot(db, "account_health", bad, D1, CONTRACTS)
    assert "lake table account_health" in str(caught.value)
    assert "row 1 (0-based), field tier: is not one of" in str(caught.value)
    assert count_rows(db, "account_health") == {D1: 1}
    assert lake.read_snapshot(db, "account_health")["score"].to_list() == [80]


def test_violation_on_an_empty_lake_creates_no_table(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    with pytest.raises(ContractError, match="field score: is above the maximum 100"):
        lake.write_snapshot(db, "account_health", health({"A1": 101}), D1, CONTRACTS)
    assert lake.snapshots(db, "account_health") == []


def test_at_most_five_violations_are_named(tmp_path: Path) -> None:
    bad = signals(9).with_columns(pl.lit("SIG lower").alias("code"))
    with pytest.raises(ContractError) as caught:
        lake.write_snapshot(tmp_path / "c360.duckdb", "customer_signals", bad, D1, CONTRACTS)
    assert str(caught.value).count("field code") == 5 and "row 4 (0-based)" in str(caught.value)


def test_frame_must_not_carry_as_of(tmp_path: Path) -> None:
    frame = signals(1).with_columns(pl.lit(D1).alias("as_of"))
    with pytest.raises(ContractError, match="must not carry as_of"):
        lake.write_snapshot(tmp_path / "c360.duckdb", "customer_signals", frame, D1, CONTRACTS)


def test_crash_inside_the_transaction_keeps_the_previous_snapshot(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "customer_signals", signals(3), D1, CONTRACTS)

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lake, "_insert", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        lake.write_snapshot(db, "customer_signals", signals(7), D1, CONTRACTS)  # its DELETE ran already
    assert count_rows(db, "customer_signals") == {D1: 3}


def test_process_killed_before_commit_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "customer_signals", signals(3), D1, CONTRACTS)
    # A hard exit after the insert, before COMMIT: no Python cleanup, no rollback statement.
    script = textwrap.dedent(
        f"""
        import os, datetime as dt, polars as pl
        from pathlib import Path
        from c360_dagster.domain import lake
        real_insert = lake._insert
        def insert_then_die(con, table, rows):
            real_insert(con, table, rows)
            os._exit(3)
        lake._insert = insert_then_die
        frame = pl.DataFrame({{"account_id": ["Z1"], "code": ["SIG_X"], "kind": ["risk"], "evidence": ["{{}}"],
                              "signal_id": ["00000000000000ff"], "status": ["new"], "since": [dt.date(2026, 7, 31)],
                              "snoozed_until": pl.Series([None], dtype=pl.Date)}})
        lake.write_snapshot(Path({str(db)!r}), "customer_signals", frame, dt.date(2026, 7, 31), Path({str(CONTRACTS)!r}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 3, completed.stderr
    assert count_rows(db, "customer_signals") == {D1: 3}
    assert lake.read_snapshot(db, "customer_signals")["account_id"].to_list() == ["A000", "A001", "A002"]


def test_table_created_under_another_contract_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE customer_signals (as_of DATE, account_id VARCHAR)").fetchall()
    with pytest.raises(ContractError, match="was created with columns"):
        lake.write_snapshot(db, "customer_signals", signals(1), D1, CONTRACTS)


def test_score_history_oldest_first(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "account_health", health({"A1": 80, "A2": 40}, "aa"), D1, CONTRACTS)
    lake.write_snapshot(db, "account_health", health({"A1": 62, "A2": 45}, "bb"), D3, CONTRACTS)
    lake.write_snapshot(db, "account_health", health({"A1": 70}, "aa"), D2, CONTRACTS)
    history = lake.score_history(db, "A1")
    # Oldest first, whatever the order the snapshots were written in.
    assert [(h["as_of"], h["score"], h["tier"]) for h in history] == [
        (D1, 80, "green"),
        (D2, 70, "amber"),
        (D3, 62, "amber"),
    ]
    assert history[2]["config_hash"] == "sha256:" + "bb" * 32
    assert history[0]["components"] == {"adoption": {"points": 80}}
    assert history[0]["scorecard"] == "default" and history[0]["status"] == "scored"
    assert [h["as_of"] for h in lake.score_history(db, "A2")] == [D1, D3]  # A2 missing from D2
    assert lake.score_history(db, "NOPE") == []


def test_readers_on_a_missing_lake(tmp_path: Path) -> None:
    db = tmp_path / "absent.duckdb"
    assert lake.snapshots(db, "account_health") == []
    assert lake.score_history(db, "A1") == []
    with pytest.raises(C360Error, match="has no snapshot of account_health yet"):
        lake.read_snapshot(db, "account_health")
    assert not db.exists()  # reading never creates the file


def test_read_snapshot_of_an_unknown_as_of(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "customer_signals", signals(1), D1, CONTRACTS)
    with pytest.raises(C360Error, match="no customer_signals snapshot for as_of 2026-08-31 \\(have: 2026-07-31\\)"):
        lake.read_snapshot(db, "customer_signals", D2)


def test_lake_is_readable_while_not_being_written_and_rewritable_after_reads(tmp_path: Path) -> None:
    db = tmp_path / "c360.duckdb"
    lake.write_snapshot(db, "customer_signals", signals(2), D1, CONTRACTS)
    assert lake.read_snapshot(db, "customer_signals").height == 2  # read-only connection, closed
    assert lake.write_snapshot(db, "customer_signals", signals(4), D1, CONTRACTS) == 4
