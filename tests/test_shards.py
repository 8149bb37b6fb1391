"""Shards: the rule that places an account, the split of the inputs, and roll-ups byte-identical for any N."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from c360_dagster.bench.generator import generate_dataset
from c360_dagster.domain.core.config import load_scale_config
from c360_dagster.domain.core.errors import C360Error, ConfigError
from c360_dagster.domain.core.stages import ROW_GROUP_ROWS, open_stage, write_stage
from c360_dagster.domain.governance.lake import open_lake
from c360_dagster.domain.ingest import integrity, loader, shards
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.quality import SAMPLE_ROWS
from c360_dagster.runner import ProjectPaths, run_chain, run_job

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "customer"

# The first 8 bytes of sha256(id) in hex, as `printf %s ACME-001 | sha256sum` prints them.
HASH_PREFIXES = {
    "ACME-001": "fc1290cf0fab8819",
    "GLOBEX-002": "9b944ed7f76b9c70",
    "STARK-008": "f3992f2d5ae99ad6",
}


@pytest.mark.parametrize("count", [1, 2, 3, 8, 256])
def test_the_shard_of_an_account_is_its_ids_sha256_prefix_mod_n(count):
    for account_id, prefix in HASH_PREFIXES.items():
        assert shards.shard_of(account_id, count) == int(prefix, 16) % count
    # Worked by hand: 0x...8819 is odd, and its last 3 bits (1001) are 1 mod 8.
    assert shards.shard_of("ACME-001", 2) == 1 and shards.shard_of("ACME-001", 8) == 1
    assert shards.shard_of("STARK-008", 8) == 6  # ...d6 = 1101 0110: the last 3 bits are 110


def test_the_vectorised_rule_is_the_rule_and_adding_accounts_moves_none():
    ids = [f"ACC-{n:05d}" for n in range(500)] + list(HASH_PREFIXES) + ["Ünïcode-ÄÖ"]
    for count in (3, 8):
        table = shards.shard_table(pl.Series(ids), count)
        placed = dict(table.iter_rows())
        assert placed == {account_id: shards.shard_of(account_id, count) for account_id in ids}
        more = shards.shard_table(pl.Series(ids + [f"NEW-{n}" for n in range(300)]), count)
        assert {a: k for a, k in more.iter_rows() if a in placed} == placed
        assert table["shard"].dtype == pl.Int64


def test_the_split_puts_every_row_in_its_accounts_shard_exactly_once():
    view = loader.read_customer_360(FIXTURES)
    for count in (1, 3, 8):
        parts = shards.split_tables(view.tables, count)
        assert len(parts) == count
        for name, whole in view.tables.items():
            for shard, tables in enumerate(parts):
                part = tables[name]
                assert part.schema == whole.schema
                assert all(shards.shard_of(a, count) == shard for a in part["account_id"]), (name, shard)
            together = pl.concat([tables[name] for tables in parts])
            assert together.height == whole.height
            # Every row once: the parts, put back in key order, are the table itself.
            assert together.sort(list(ENTITIES[name].key)).equals(whole)
    # With 3 shards the fixtures' accounts spread over all of them (the test means something).
    assert all(tables["accounts"].height for tables in shards.split_tables(view.tables, 3))


def test_in_shard_keeps_the_rows_of_that_shards_accounts_in_their_order():
    frame = pl.DataFrame({"account_id": ["STARK-008", "ACME-001", "GLOBEX-002", "ACME-001"], "row": [0, 1, 2, 3]})
    assert shards.in_shard(frame, 0, 1).equals(frame)
    # By the hash prefixes above: ACME-001's ends in 0x19, odd (shard 1 of 2); GLOBEX-002's 0x70
    # and STARK-008's 0xd6 are even (shard 0).
    assert shards.in_shard(frame, 1, 2)["row"].to_list() == [1, 3]
    assert shards.in_shard(frame, 0, 2)["row"].to_list() == [0, 2]
    assert shards.in_shard(frame, 0, 2).columns == frame.columns


def test_the_shards_integrity_findings_merged_are_those_of_the_whole_book(tmp_path):
    generate_dataset(tmp_path, 240, seed=17, weeks=10)
    view = loader.read_customer_360(tmp_path)
    whole = integrity.run_integrity_checks(view, contract_enforced=True)
    # Some checks find more offenders than a sample shows, so merging the samples means something.
    assert any(found.count > SAMPLE_ROWS for found in whole), whole
    for count in (1, 3, 8):
        parts = [
            Customer360(view.as_of, tables, view.source_hashes, view.warnings)
            for tables in shards.split_tables(view.tables, count)
        ]
        found = [integrity.run_integrity_checks(part, contract_enforced=True) for part in parts]
        assert integrity.merge_findings(found) == whole, count


def _in_batches(frame: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    return [frame.slice(offset, rows) for offset in range(0, frame.height, rows)]


# A book's frame over several row groups, with a nested list like health's per-currency evidence.
BOOK_ROWS = 2 * ROW_GROUP_ROWS + 1234


def _book() -> pl.DataFrame:
    """Accounts in a scrambled order (7919 is prime to 100,003), 3 signal codes, 97 renewal days."""
    numbers = range(BOOK_ROWS)
    return pl.DataFrame(
        {
            "account_id": [f"A-{n * 7919 % 100_003:06d}" for n in numbers],
            "code": [("churn", "expansion", "nps_drop")[n % 3] for n in numbers],
            "renewal_date": [dt.date(2026, 1, 1) + dt.timedelta(days=n % 97) for n in numbers],
            "amount": [n * 0.37 for n in numbers],
            "evidence": [{"by_currency": [{"currency": "EUR", "arr": float(n)}] * (n % 3)} for n in numbers],
        }
    ).with_columns(subscription_id=pl.col("account_id") + "-" + pl.col("code"))


@pytest.mark.parametrize(
    "keys", [["account_id", "code"], ["renewal_date", "subscription_id"]], ids=["account-first", "date-first"]
)
@pytest.mark.untraced
def test_the_merge_gives_the_whole_sort_and_the_same_bytes_for_any_n(tmp_path, keys):
    whole = _book().sort(keys)
    # In pieces, as a shard's computed frame can be: the Parquet must not depend on them.
    book = pl.concat([whole.slice(offset, 5000) for offset in range(0, BOOK_ROWS, 5000)], rechunk=False)
    assert book.n_chunks() > 1
    written: dict[int, bytes] = {}
    for count in (1, 2, 3, 8):
        parts = shards.split_table(book, count)
        assert count == 1 or all(part.height for part in parts)
        # Each shard's frame written as its stage writes it; one shard's bytes are copied, N are merged.
        with write_stage(tmp_path, f"shards{count}") as shard_out:
            for k, part in enumerate(parts):
                shard_out.write_frame(f"{k}.parquet", part)
            sources = [shard_out.written(f"{k}.parquet").read_bytes() for k in range(count)]
        with write_stage(tmp_path, f"merged{count}") as out:
            schema = shards.write_merged(out, "frame.parquet", sources, keys)
            written[count] = out.written("frame.parquet").read_bytes()
        assert schema == whole.schema
        merged = pl.read_parquet(io.BytesIO(written[count]))
        # The rows in the whole book's order (a date-first key interleaves the shards' rows).
        assert merged.equals(book), count
    assert pq.ParquetFile(io.BytesIO(written[1])).metadata.num_row_groups == 3
    assert {count: data == written[1] for count, data in written.items()} == {1: True, 2: True, 3: True, 8: True}
    # What the merge's sink writes of the one shard's frame: the bytes copied at N = 1.
    with write_stage(tmp_path, "sunk") as out:
        out.write_lazy_frame("frame.parquet", shards.merged([written[1]], keys))
        assert out.written("frame.parquet").read_bytes() == written[1]


def test_a_slice_of_a_larger_frame_writes_the_bytes_of_its_rows_read_back_or_merged(tmp_path):
    # Found at 1M accounts: one shard's health.parquet (its frame a view into larger buffers)
    # differed from the N-shard merge (row groups read back) in the nested evidence columns' data
    # pages: Polars splits a row group's pages by an estimate that counts the whole buffer.
    book = pl.DataFrame({"n": range(100_000)}).select(
        account_id=pl.format("A-{}", pl.col("n")),
        evidence=pl.struct(
            by_currency=pl.concat_list(
                pl.struct(currency=pl.lit("EUR"), arr=pl.col("n") * 1.5, credits=pl.col("n") * 0.25)
            )
        ),
    )
    frame = book.head(4 * ROW_GROUP_ROWS)
    with write_stage(tmp_path, "slice") as out:
        out.write_frame("slice.parquet", frame)
        written = out.written("slice.parquet").read_bytes()
    read_back = pl.read_parquet(io.BytesIO(written))
    assert read_back.equals(frame)
    with write_stage(tmp_path, "again") as out:
        out.write_frame("again.parquet", read_back)
        out.write_lazy_frame("merged.parquet", shards.merged([written], ["account_id"]))
        assert out.written("again.parquet").read_bytes() == written
        assert out.written("merged.parquet").read_bytes() == written


@pytest.mark.parametrize("batch_rows", [1, 2, 7, 1000])
def test_whole_groups_never_splits_an_account_and_keeps_every_row_in_order(batch_rows):
    # Accounts with 0 to 4 signals each.
    codes = ["churn", "expansion", "low_usage", "nps_drop"]
    rows = [(f"A-{n:03d}", code) for n in range(60) for code in codes[: n % 5]]
    signals = pl.DataFrame(rows, schema={"account_id": pl.Utf8, "code": pl.Utf8}, orient="row")
    batches = list(shards.whole_groups(_in_batches(signals, batch_rows), ["account_id"]))
    assert pl.concat(batches).equals(signals)
    accounts = [set(batch["account_id"]) for batch in batches]
    assert sum(len(batch) for batch in accounts) == len(set().union(*accounts)), "an account in two batches"
    assert all(batch.height for batch in batches)
    assert list(shards.whole_groups([signals.clear()], ["account_id"])) == []


def test_scale_yaml_defaults_to_one_shard_and_refuses_a_bad_count(tmp_path):
    assert load_scale_config(tmp_path)["shards"] == 1
    assert load_scale_config(REPO / "configs" / "customer")["shards"] == 1
    (tmp_path / "scale.yaml").write_text("shards: 0\n")
    with pytest.raises(ConfigError, match=r"scale.yaml: shards: 0 is less than the minimum of 1"):
        load_scale_config(tmp_path)
    (tmp_path / "scale.yaml").write_text("shards: 257\n")
    with pytest.raises(ConfigError, match=r"scale.yaml: shards"):
        load_scale_config(tmp_path)


# --- roll-ups: the documents and lake rows of N shards are those of one ------------------------

# Folders of artifacts/customer that hold the shards' own outputs (and the stage generations);
# every other file is a public document or frame, which must not depend on N.
SHARD_ONLY = {"stages", "shards", "inputs"}


def _run_chain(root: Path, inputs: Path, count: int, monkeypatch, as_of: str | None = None, workers: int = 1) -> Path:
    """The chain (load → health, signals → renewals → lake → roll-ups) with `count` shards, run
    `workers` at a time (1: in this process); its artifacts."""
    configs = root / "configs"
    if not configs.exists():
        shutil.copytree(REPO / "configs" / "customer", configs)
        (configs / "scale.yaml").write_text(f"shards: {count}\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    paths = ProjectPaths(
        fixtures_dir=str(inputs),
        configs_dir=str(configs),
        contracts_dir=str(REPO / "contracts" / "schemas"),
        artifacts_dir=str(root / "artifacts"),
    )
    ops = {"customer_inputs": {"as_of": as_of}} if as_of else None
    run_chain("c360_chain", paths, ops=ops, progress=False, workers=workers)
    return root / "artifacts"


def _documents(artifacts: Path) -> dict[str, bytes]:
    customer = artifacts / "customer"
    return {
        path.relative_to(customer).as_posix(): path.read_bytes()
        for path in sorted(customer.rglob("*"))
        if path.is_file() and path.relative_to(customer).parts[0] not in SHARD_ONLY
    }


def _lake_rows(artifacts: Path) -> dict[str, bytes]:
    """Every lake table's rows (all snapshots) as CSV bytes, without the shard that wrote them."""
    lake = open_lake(artifacts.parent / "configs", artifacts, REPO / "contracts" / "schemas")
    return {
        table: b"".join(
            lake.read_snapshot(table, as_of).drop("shard").write_csv().encode() for as_of in lake.snapshots(table)
        )
        for table in ("crm_opps", "account_health", "customer_signals", "renewal_forecasts")
    }


def _assert_same_for_any_n(runs: dict[int, Path]) -> None:
    one = runs[1]
    documents = _documents(one)
    assert {"360.json", "health.json", "signals.json", "summary.md", "frames/health.parquet"} <= set(documents)
    assert any(name.startswith("renewals_") for name in documents)
    for count, artifacts in runs.items():
        # The shards really split the book (an empty shard is fine: its frames have no rows).
        manifest = json.loads((artifacts / "customer" / "inputs" / "manifest.json").read_text())
        assert manifest["shards"] == count == len(manifest["shard_counts"])
        spread = [counts["accounts"] for counts in manifest["shard_counts"]]
        assert sum(spread) == manifest["counts"]["accounts"], spread
        assert count == 1 or max(spread) < sum(spread), spread
        got = _documents(artifacts)
        assert sorted(got) == sorted(documents), count
        assert [name for name in documents if got[name] != documents[name]] == [], count
        assert _lake_rows(artifacts) == _lake_rows(one), count


# The two roll-up tests below run the chain twice and four times (15 shard runs) to compare bytes;
# they run no line that other tests do not, so coverage does not trace them (`untraced`,
# tests/conftest.py): on Python 3.11 tracing them cost half again their CPU (docs/performance.md,
# the suite's wall time). Each N costs about 2 CPU-s a shard run (Dagster's per-run work), so each
# N is there for what it splits: the fixtures' 6 shards an empty one and one with an account but no
# usage, cases or survey answers, in worker processes as the c360 commands run them; the
# generated book's 3 uneven shards, none empty, over two snapshots.
@pytest.mark.untraced
def test_the_roll_ups_of_the_fixtures_are_byte_identical_for_1_and_6_shards(tmp_path, monkeypatch):
    runs = {1: _run_chain(tmp_path / "n1", FIXTURES, 1, monkeypatch)}
    runs[6] = _run_chain(tmp_path / "n6", FIXTURES, 6, monkeypatch, workers=2)
    spread = json.loads((runs[6] / "customer" / "inputs" / "manifest.json").read_text())["shard_counts"]
    assert any(not shard["accounts"] for shard in spread), spread
    assert any(shard["accounts"] and not (shard["usage"] or shard["cases"] or shard["nps"]) for shard in spread), spread
    _assert_same_for_any_n(runs)


@pytest.mark.untraced
def test_the_roll_ups_of_a_generated_book_are_byte_identical_for_1_and_3_shards(tmp_path, monkeypatch):
    inputs = tmp_path / "generated"
    generate_dataset(inputs, 240, seed=17, weeks=10)
    runs = {}
    for count in (1, 3):
        root = tmp_path / f"n{count}"
        # Two snapshots: the second one's signals are new, ongoing or resolved against the first.
        _run_chain(root, inputs, count, monkeypatch, as_of="2026-09-02")
        runs[count] = _run_chain(root, inputs, count, monkeypatch)
    signals = json.loads((runs[1] / "customer" / "signals.json").read_text())
    assert signals["lifecycle"]["previous_as_of"] == "2026-09-02"
    assert signals["lifecycle"]["ongoing"] and signals["lifecycle"]["resolved"]
    _assert_same_for_any_n(runs)


def test_a_roll_up_refuses_shards_made_from_another_split_and_writes_nothing(tmp_path, monkeypatch):
    artifacts = _run_chain(tmp_path, FIXTURES, 2, monkeypatch)
    paths = ProjectPaths(
        fixtures_dir=str(FIXTURES),
        configs_dir=str(tmp_path / "configs"),
        contracts_dir=str(REPO / "contracts" / "schemas"),
        artifacts_dir=str(artifacts),
    )
    # The inputs split again (another as_of: another split), then only shard 0's view rebuilt from it.
    run_job(
        "c360_chain",
        paths,
        ops={"customer_inputs": {"as_of": "2026-09-15"}},
        asset_selection=["customer_inputs"],
        progress=False,
    )
    run_job("c360_chain", paths, partition_key="0", asset_selection=["customer_360"], progress=False)
    split_hash = open_stage(artifacts / "customer", shards.SPLIT_STAGE).manifest_hash
    before = _documents(artifacts)
    events = (artifacts / "governance" / "events.jsonl").read_bytes()
    for report, stale in (
        ("report/customer_360_report", "shard 1's 360"),
        ("report/account_health_report", "shard 0's health"),
    ):
        with pytest.raises(C360Error) as refused:
            run_job("c360_chain", paths, asset_selection=[report], progress=False)
        assert refused.value.code == "SHARD_STALE"
        message = str(refused.value)
        assert message.startswith(f"{stale} output (") and f"than the live one ({split_hash})" in message, message
    # Nothing written: every published document and frame, and the signed log, as before.
    assert _documents(artifacts) == before
    assert (artifacts / "governance" / "events.jsonl").read_bytes() == events
