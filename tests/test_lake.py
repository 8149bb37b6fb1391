"""The lake, on both backends: validated, transactional snapshots per as_of and shard, and the readers over them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path

import deltalake
import duckdb
import polars as pl
import pytest
from forked import ForkServer

from c360_dagster.domain.core.errors import C360Error, ConfigError, ContractError
from c360_dagster.domain.governance import lake as lake_module
from c360_dagster.domain.governance.contracts import load_contract
from c360_dagster.domain.governance.lake import DeltaLake, DuckDBLake, Lake, open_lake

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = REPO / "contracts" / "schemas"
D1, D2, D3 = dt.date(2026, 7, 31), dt.date(2026, 8, 31), dt.date(2026, 9, 30)
BACKENDS = {"duckdb": DuckDBLake, "delta": DeltaLake}


@pytest.fixture(params=sorted(BACKENDS))
def lake(request, tmp_path: Path) -> Lake:
    """An empty lake of each backend in a fresh folder."""
    return BACKENDS[request.param](str(tmp_path / "lake"), CONTRACTS)


def health(scores: dict[str, int], config: str = "ab") -> pl.DataFrame:
    """account_health rows without as_of and shard; the tier follows the score (<50 red, <75 amber)."""
    ids = sorted(scores)
    tiers = ["red" if scores[i] < 50 else "amber" if scores[i] < 75 else "green" for i in ids]
    return pl.DataFrame(
        {
            "account_id": ids,
            "segment": ["smb"] * len(ids),
            "scorecard": ["default"] * len(ids),
            "score": [scores[i] for i in ids],
            "tier": tiers,
            "tier_reason": pl.Series([None] * len(ids), dtype=pl.Utf8),
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


def signals(count: int, prefix: str = "A") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": [f"{prefix}{i:03d}" for i in range(count)],
            "code": ["SIG_SUPPORT_SPIKE"] * count,
            "kind": ["risk"] * count,
            "evidence": ['{"cases":4}'] * count,
            "signal_id": [f"{i:016x}" for i in range(count)],
            "status": ["new"] * count,
            "since": [D1] * count,
            "snoozed_until": pl.Series([None] * count, dtype=pl.Date),
        }
    )


def stored_rows(lake: Lake, table: str) -> Counter:
    """(as_of, shard) → rows, read straight from the backend's own storage, not through `Lake`."""
    if isinstance(lake, DuckDBLake):
        if not lake.path.exists():
            return Counter()
        with duckdb.connect(str(lake.path), read_only=True) as con:
            query = f"SELECT as_of, shard, count(*) FROM {table} GROUP BY ALL"
            return Counter({(d, s): n for d, s, n in con.execute(query).fetchall()})
    uri = lake.table_uri(table)
    if not deltalake.DeltaTable.is_deltatable(uri):
        return Counter()
    rows = pl.read_delta(uri).group_by("as_of", "shard").len()
    return Counter({(d, s): n for d, s, n in rows.iter_rows()})


def stored_types(lake: Lake, table: str) -> dict[str, str]:
    """Column → type as the backend itself reports it."""
    if isinstance(lake, DuckDBLake):
        with duckdb.connect(str(lake.path), read_only=True) as con:
            query = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?"
            return dict(con.execute(query, [table]).fetchall())
    return {f.name: f.type.type for f in deltalake.DeltaTable(lake.table_uri(table)).schema().fields}


def worker_script(lake: Lake, statements: str) -> str:
    """A Python program that opens `lake` in another process (this module's helpers at hand), then runs `statements`."""
    return (
        textwrap.dedent(
            f"""
        import datetime as dt, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_lake import signals
        from c360_dagster.domain.governance.lake import {type(lake).__name__}
        lake = {type(lake).__name__}({lake.location!r}, Path({str(CONTRACTS)!r}))
        """
        )
        + statements
    )


def test_write_adds_as_of_and_shard_and_reads_back(lake: Lake) -> None:
    written = lake.write_snapshot("account_health", health({"A1": 80, "A2": 40}), D1)
    assert written == 2
    snapshot = lake.read_snapshot("account_health")
    assert snapshot.columns[:2] == ["as_of", "shard"]
    assert snapshot["as_of"].to_list() == [D1, D1] and snapshot["shard"].to_list() == [0, 0]
    assert snapshot.drop("as_of", "shard").equals(health({"A1": 80, "A2": 40}))


def test_column_types_come_from_the_contract(lake: Lake) -> None:
    lake.write_snapshot("account_health", health({"A1": 80}), D1)
    types = stored_types(lake, "account_health")
    expected = {
        "duckdb": {"as_of": "DATE", "shard": "BIGINT", "score": "BIGINT", "tier": "VARCHAR"},
        "delta": {"as_of": "date", "shard": "long", "score": "long", "tier": "string"},
    }[lake.FORMAT]
    assert {name: types[name] for name in expected} == expected
    assert list(types)[:3] == ["as_of", "shard", "account_id"]
    assert lake.table_columns("account_health")[1][:2] == ("shard", f"{expected['shard']} NOT NULL")


def test_rows_hash_is_the_sha256_of_the_rows_csv_hashed_as_it_is_written() -> None:
    frame = pl.DataFrame({"a": [1, None], "d": [D1, D2], "s": ["x,y", 'q"']})
    # By hand: the CSV, quoting the comma and doubling the quote.
    csv = 'a,d,s\n1,2026-07-31,"x,y"\n,2026-08-31,"q"""\n'
    assert lake_module.rows_hash(frame) == "sha256:" + hashlib.sha256(csv.encode()).hexdigest()
    # Many chunks of CSV (the sink's), the same bytes as the whole.
    big = pl.concat([health({f"A{n:05d}": n % 101 for n in range(20_000)})] * 3, rechunk=False)
    assert lake_module.rows_hash(big) == "sha256:" + hashlib.sha256(big.write_csv().encode()).hexdigest()


def test_the_contracts_json_text_columns_are_stored_packed_with_zstd_in_duckdb(tmp_path: Path) -> None:
    json_text = {
        table: [c.name for c in lake_module.contract_columns(table, load_contract(table, CONTRACTS)) if c.json_text]
        for table in ("account_health", "customer_signals", "renewal_forecasts", "crm_opps")
    }
    # By hand: the string columns the contracts mark `contentMediaType: application/json`.
    assert json_text == {
        "account_health": ["components"],
        "customer_signals": ["evidence"],
        "renewal_forecasts": ["renewal_prob", "risk_reasons"],
        "crm_opps": [],
    }
    lake = DuckDBLake(str(tmp_path / "lake"), CONTRACTS)
    lake.write_snapshot("account_health", health({f"A{n:04d}": n % 101 for n in range(3000)}), D1)
    with duckdb.connect(str(lake.path), read_only=True) as con:
        found = con.execute(
            "SELECT DISTINCT column_name, compression FROM pragma_storage_info('account_health')"
            " WHERE column_name IN ('components', 'account_id') AND segment_type = 'VARCHAR'"
        ).fetchall()
    assert ("components", "ZSTD") in found
    assert ("account_id", "ZSTD") not in found


def test_delta_tables_are_partitioned_by_as_of_and_shard(tmp_path: Path) -> None:
    delta = DeltaLake(str(tmp_path / "lake"), CONTRACTS)
    delta.write_snapshot("customer_signals", signals(2), D1, shard=1, shards=2)
    table = deltalake.DeltaTable(delta.table_uri("customer_signals"))
    assert table.metadata().partition_columns == ["as_of", "shard"]
    assert (tmp_path / "lake" / "customer_signals" / "as_of=2026-07-31" / "shard=1").is_dir()


@pytest.mark.untraced
def test_rerun_replaces_its_as_of_and_keeps_other_snapshots(lake: Lake) -> None:
    lake.write_snapshot("customer_signals", signals(3), D1)
    lake.write_snapshot("customer_signals", signals(5), D2)
    lake.write_snapshot("customer_signals", signals(2), D1)  # rerun of D1
    lake.write_snapshot("customer_signals", signals(2), D1)  # and again
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 2, (D2, 0): 5}
    assert lake.snapshots("customer_signals") == [D1, D2]
    assert lake.read_snapshot("customer_signals").height == 5  # latest is D2
    assert lake.read_snapshot("customer_signals", D1).height == 2


@pytest.mark.untraced
def test_replacing_a_shard_leaves_the_other_shards_rows_untouched(lake: Lake) -> None:
    for shard, prefix in enumerate("XYZ"):
        lake.write_snapshot("customer_signals", signals(2 + shard, prefix), D1, shard=shard, shards=3)
    lake.write_snapshot("customer_signals", signals(2, "Y"), D2, shard=1, shards=3)  # another date
    lake.write_snapshot("customer_signals", signals(4, "Q"), D1, shard=1, shards=3)  # shard 1 again
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 2, (D1, 1): 4, (D1, 2): 4, (D2, 1): 2}
    snapshot = lake.read_snapshot("customer_signals", D1)
    by_shard = {k: sorted(g["account_id"]) for (k,), g in snapshot.group_by("shard")}
    assert by_shard == {0: ["X000", "X001"], 1: ["Q000", "Q001", "Q002", "Q003"], 2: ["Z000", "Z001", "Z002", "Z003"]}


@pytest.mark.untraced
def test_shrinking_the_shard_count_removes_the_stale_shards(lake: Lake) -> None:
    for shard in range(3):
        lake.write_snapshot("customer_signals", signals(2, "XYZ"[shard]), D1, shard=shard, shards=3)
    lake.write_snapshot("customer_signals", signals(1, "X"), D2, shard=2, shards=3)  # another date: kept
    lake.write_snapshot("customer_signals", signals(3, "P"), D1, shard=1, shards=2)
    # Shard 1 of 2 replaced shard 1 and every shard from 2 on; shard 0 waits for its own write.
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 2, (D1, 1): 3, (D2, 2): 1}
    lake.write_snapshot("customer_signals", signals(1, "O"), D1, shard=0, shards=1)
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 1, (D2, 2): 1}


@pytest.mark.untraced
def test_a_snapshot_reads_the_same_whatever_the_shard_count(lake: Lake) -> None:
    rows = signals(9)
    lake.write_snapshot("customer_signals", rows, D1)
    for shard in range(3):
        lake.write_snapshot("customer_signals", rows[shard::3], D2, shard=shard, shards=3)
    one = lake.read_snapshot("customer_signals", D1).drop("as_of", "shard")
    three = lake.read_snapshot("customer_signals", D2).drop("as_of", "shard")
    assert one.equals(three) and one["account_id"].to_list() == [f"A{i:03d}" for i in range(9)]


def test_a_shard_outside_the_count_is_refused(lake: Lake) -> None:
    with pytest.raises(C360Error, match=r"shard 3 is not one of 0\.\.2"):
        lake.write_snapshot("customer_signals", signals(1), D1, shard=3, shards=3)
    assert lake.snapshots("customer_signals") == []


def test_contract_violation_writes_nothing_and_names_table_row_field(lake: Lake) -> None:
    lake.write_snapshot("account_health", health({"A1": 80}), D1)
    bad = health({"A1": 70, "A2": 60, "A3": 50}).with_columns(
        pl.when(pl.col("account_id") == "A2").then(pl.lit("purple")).otherwise(pl.col("tier")).alias("tier")
    )
    with pytest.raises(ContractError) as caught:
        lake.write_snapshot("account_health", bad, D1)
    assert "lake table account_health" in str(caught.value)
    assert "row 1 (0-based), field tier: is not one of" in str(caught.value)
    assert stored_rows(lake, "account_health") == {(D1, 0): 1}
    assert lake.read_snapshot("account_health")["score"].to_list() == [80]


def test_violation_on_an_empty_lake_creates_no_table(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="field score: is above the maximum 100"):
        lake.write_snapshot("account_health", health({"A1": 101}), D1)
    assert lake.snapshots("account_health") == []
    assert not (tmp_path / "lake").exists()


def test_at_most_five_violations_are_named(lake: Lake) -> None:
    bad = signals(9).with_columns(pl.lit("SIG lower").alias("code"))
    with pytest.raises(ContractError) as caught:
        lake.write_snapshot("customer_signals", bad, D1)
    assert str(caught.value).count("field code") == 5 and "row 4 (0-based)" in str(caught.value)


@pytest.mark.parametrize("column", ["as_of", "shard"])
def test_frame_must_not_carry_the_columns_the_writer_adds(lake: Lake, column: str) -> None:
    frame = signals(1).with_columns(pl.lit(0).alias(column))
    with pytest.raises(ContractError, match=f"must not carry {column}"):
        lake.write_snapshot("customer_signals", frame, D1)


def test_a_failure_before_the_commit_keeps_the_previous_snapshot(lake: Lake, monkeypatch) -> None:
    lake.write_snapshot("customer_signals", signals(3), D1)

    def explode(name: str) -> None:
        raise RuntimeError("disk on fire")

    # The failpoint sits where the new rows are handed over (DuckDB: its DELETE ran already).
    monkeypatch.setattr(lake_module, "failpoint", explode)
    with pytest.raises((RuntimeError, C360Error), match="disk on fire"):
        lake.write_snapshot("customer_signals", signals(7), D1)
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 3}


def test_process_killed_before_the_commit_keeps_the_previous_snapshot(forks: ForkServer, lake: Lake) -> None:
    lake.write_snapshot("customer_signals", signals(3), D1)
    # A real SIGKILL from the failpoints module once every new row is handed over (DuckDB: inserted
    # in the open transaction; Delta: data files being written), before the commit.
    script = worker_script(lake, 'lake.write_snapshot("customer_signals", signals(200_000, "Z"), dt.date(2026, 7, 31))')
    env = {**os.environ, "C360_FAILPOINT": "lake:customer_signals", "PYTHONPATH": str(REPO)}
    completed = forks.run([sys.executable, "-c", script], env=env, timeout=120)
    assert completed.returncode == -9, completed.stderr
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 3}
    assert lake.read_snapshot("customer_signals")["account_id"].to_list() == ["A000", "A001", "A002"]
    assert lake.write_snapshot("customer_signals", signals(4), D1) == 4  # and the next write goes through
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 4}


def test_delta_reads_only_committed_data_files(tmp_path: Path) -> None:
    delta = DeltaLake(str(tmp_path / "lake"), CONTRACTS)
    delta.write_snapshot("customer_signals", signals(3), D1)
    # What a writer killed before its commit leaves: a data file beside the committed one.
    partition = tmp_path / "lake" / "customer_signals" / "as_of=2026-07-31" / "shard=0"
    orphan = (
        delta.read_snapshot("customer_signals")
        .drop("as_of", "shard")
        .with_columns(pl.lit("ORPHAN").alias("account_id"))
    )
    orphan.write_parquet(partition / "part-00000-orphan.parquet")
    assert delta.read_snapshot("customer_signals")["account_id"].to_list() == ["A000", "A001", "A002"]
    assert delta.snapshots("customer_signals") == [D1]


def test_shards_written_by_parallel_processes_all_land(forks: ForkServer, lake: Lake) -> None:
    script = worker_script(
        lake,
        "shard = int(sys.argv[1])\n"
        'lake.write_snapshot("customer_signals", signals(100 + shard, "XYZ"[shard]), dt.date(2026, 7, 31), shard, 3)',
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [forks.start([sys.executable, "-c", script, str(k)], env=env) for k in range(3)]
    assert [(done.returncode, done.stderr) for done in (w.communicate(timeout=120) for w in workers)] == [(0, "")] * 3
    assert stored_rows(lake, "customer_signals") == {(D1, 0): 100, (D1, 1): 101, (D1, 2): 102}


def test_table_created_under_another_contract_is_refused(lake: Lake) -> None:
    if isinstance(lake, DuckDBLake):
        lake.path.parent.mkdir(parents=True)
        with duckdb.connect(str(lake.path)) as con:
            con.execute("CREATE TABLE customer_signals (as_of DATE, account_id VARCHAR)").fetchall()
    else:  # a table of before shards: no shard column
        older = pl.DataFrame({"as_of": [D1], "account_id": ["A1"]})
        deltalake.write_deltalake(lake.table_uri("customer_signals"), older.to_arrow(), partition_by=["as_of"])
    with pytest.raises(ContractError, match="was created with columns"):
        lake.write_snapshot("customer_signals", signals(1), D1)


def test_score_history_oldest_first(lake: Lake) -> None:
    lake.write_snapshot("account_health", health({"A1": 80, "A2": 40}, "aa"), D1)
    lake.write_snapshot("account_health", health({"A1": 62, "A2": 45}, "bb"), D3)
    lake.write_snapshot("account_health", health({"A1": 70}, "aa"), D2)
    history = lake.score_history("A1")
    # Oldest first, whatever the order the snapshots were written in.
    assert [(h["as_of"], h["score"], h["tier"]) for h in history] == [
        (D1, 80, "green"),
        (D2, 70, "amber"),
        (D3, 62, "amber"),
    ]
    assert history[2]["config_hash"] == "sha256:" + "bb" * 32
    assert history[0]["components"] == {"adoption": {"points": 80}}
    assert history[0]["scorecard"] == "default" and history[0]["status"] == "scored"
    assert [h["as_of"] for h in lake.score_history("A2")] == [D1, D3]  # A2 missing from D2
    assert lake.score_history("NOPE") == []


def test_readers_on_a_missing_lake(lake: Lake, tmp_path: Path) -> None:
    assert lake.snapshots("account_health") == []
    assert lake.score_history("A1") == []
    with pytest.raises(C360Error, match="has no snapshot of account_health yet"):
        lake.read_snapshot("account_health")
    assert not (tmp_path / "lake").exists()  # reading never creates anything


def test_read_snapshot_of_an_unknown_as_of(lake: Lake) -> None:
    lake.write_snapshot("customer_signals", signals(1), D1)
    with pytest.raises(C360Error, match="no customer_signals snapshot for as_of 2026-08-31 \\(have: 2026-07-31\\)"):
        lake.read_snapshot("customer_signals", D2)


def test_lake_is_readable_while_not_being_written_and_rewritable_after_reads(lake: Lake) -> None:
    lake.write_snapshot("customer_signals", signals(2), D1)
    assert lake.read_snapshot("customer_signals").height == 2
    assert lake.write_snapshot("customer_signals", signals(4), D1) == 4


# --- scale.yaml's `lake` ---------------------------------------------------------------------


def scale(tmp_path: Path, text: str) -> Path:
    configs = tmp_path / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "scale.yaml").write_text(text)
    return configs


def test_without_scale_yaml_the_lake_is_the_duckdb_file_under_artifacts(tmp_path: Path) -> None:
    found = open_lake(tmp_path / "no-configs", tmp_path / "artifacts", CONTRACTS)
    assert isinstance(found, DuckDBLake) and found.path == tmp_path / "artifacts" / "lake" / "c360.duckdb"
    assert found.table_name("account_health") == "c360.main.account_health"


def test_scale_yaml_picks_delta_and_its_location(tmp_path: Path) -> None:
    configs = scale(tmp_path, f"shards: 2\nlake:\n  format: delta\n  location: {tmp_path / 'shared'}\n")
    found = open_lake(configs, tmp_path / "artifacts", CONTRACTS)
    assert isinstance(found, DeltaLake)
    assert found.table_name("customer_signals") == f"{tmp_path / 'shared'}/customer_signals"
    found.write_snapshot("customer_signals", signals(1), D1)
    assert (tmp_path / "shared" / "customer_signals" / "_delta_log").is_dir()
    assert not (tmp_path / "artifacts").exists()


def test_an_object_store_url_is_a_config_change(tmp_path: Path) -> None:
    configs = scale(
        tmp_path,
        "lake:\n  format: delta\n  location: s3://books/c360/\n"
        "  storage_options:\n    AWS_REGION: eu-west-1\n    AWS_ENDPOINT_URL: http://127.0.0.1:9\n",
    )
    found = open_lake(configs, tmp_path / "artifacts", CONTRACTS)
    assert isinstance(found, DeltaLake)
    assert found.table_uri("account_health") == "s3://books/c360/account_health"
    assert found.storage_options == {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}


def test_delta_without_its_library_says_which_extra_to_install(tmp_path: Path, monkeypatch) -> None:
    configs = scale(tmp_path, "lake:\n  format: delta\n")
    monkeypatch.setitem(sys.modules, "deltalake", None)  # as if not installed
    with pytest.raises(C360Error) as caught:
        open_lake(configs, tmp_path / "artifacts", CONTRACTS)
    assert caught.value.code == "EXTRA_MISSING" and 'pip install -c constraints.txt -e ".[scale]"' in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lake:\n  location: s3://books/c360\n", "lake.location: the duckdb lake is one local file"),
        ("lake:\n  storage_options:\n    AWS_REGION: eu-west-1\n", "lake.storage_options: only a delta lake"),
        ("lake:\n  format: parquet\n", "lake.format: 'parquet' is not one of"),
        ("lake:\n  formt: delta\n", "lake.formt: unknown key"),
        ("lake:\n  format: delta\n  storage_options:\n    AWS_REGION: 3\n", "lake.storage_options.AWS_REGION"),
    ],
)
def test_a_wrong_lake_setting_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    configs = scale(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        open_lake(configs, tmp_path / "artifacts", CONTRACTS)
    assert str(caught.value).startswith(f"{configs / 'scale.yaml'}: ") and message in str(caught.value)


def test_verify_signed_rehashes_each_signed_shard_snapshot(lake: Lake) -> None:
    """The hash the writer signs (`rows_hash` of the frame written) is what a re-read of the rows gives."""
    signed = {}
    for shard, scores in enumerate([{"A1": 80, "A2": 40}, {"B1": 60}]):
        frame = health(scores)
        lake.write_snapshot("account_health", frame, D1, shard=shard, shards=2)
        signed[str(shard)] = {lake_module.snapshot_output("account_health", D1): lake_module.rows_hash(frame)}
    assert lake.verify_signed(signed) == 2
    # One row of shard 1 edited behind the writer's back.
    if isinstance(lake, DuckDBLake):
        with duckdb.connect(str(lake.path)) as con:
            con.execute("UPDATE account_health SET score = 95, tier = 'green' WHERE account_id = 'B1'")
    else:
        deltalake.DeltaTable(lake.table_uri("account_health")).update(
            updates={"score": "95", "tier": "'green'"}, predicate="account_id = 'B1'"
        )
    with pytest.raises(C360Error) as caught:
        lake.verify_signed(signed)
    assert caught.value.code == "ARTIFACT_CORRUPT"
    assert str(caught.value).startswith(f"lake table account_health ({lake.table_name('account_health')}), ")
    assert "snapshot as_of 2026-07-31, shard 1:" in str(caught.value)
