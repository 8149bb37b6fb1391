"""The split streams the input: one validated table at a time, written before the next is read."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import polars as pl
import pytest
from conftest import replace_in

from c360_dagster.domain.core.errors import InputError
from c360_dagster.domain.core.stages import STAGES, open_stage, write_stage
from c360_dagster.domain.ingest import loader, shards
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.view import ACTIVE_ARR_COLUMNS, active_arr_by_segment

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "customer"


@pytest.mark.untraced
def test_each_table_is_let_go_once_handed_on_and_only_referenced_columns_are_kept():
    inputs = loader.ValidatedInputs(FIXTURES)
    names, previous = [], None
    for name, table in inputs:
        gc.collect()
        # Nothing in the loader still holds the table before this one.
        assert previous is None or previous() is None, names[-1]
        names.append(name)
        previous = weakref.ref(table)
        del table
    assert names == list(ENTITIES)
    # What later files' reference rules look up (docs/inputs.md): account ids, contact ids,
    # and subscription ids with their account (an invoice's subscription is of its own account).
    assert {name: frame.columns for name, frame in inputs.kept.items()} == {
        "accounts": ["account_id"],
        "contacts": ["contact_id"],
        "subs": ["account_id", "subscription_id"],
    }


def test_the_streamed_summary_is_the_whole_book_load():
    view = loader.read_customer_360(FIXTURES)
    inputs = loader.ValidatedInputs(FIXTURES, keep=ACTIVE_ARR_COLUMNS)
    for _ in inputs:
        pass
    assert inputs.counts == view.counts()
    assert inputs.as_of == view.as_of
    assert inputs.source_hashes == view.source_hashes and len(inputs.source_hashes) == len(ENTITIES)
    assert inputs.warnings == view.warnings
    assert active_arr_by_segment(inputs.kept["accounts"], inputs.kept["subs"]) == active_arr_by_segment(
        view.accounts, view.subs
    )


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.untraced
def test_the_streamed_split_writes_the_whole_views_parts(tmp_path, count):
    view = loader.read_customer_360(FIXTURES)
    with write_stage(tmp_path, shards.SPLIT_STAGE) as out:
        manifest = shards.save_split(out, loader.ValidatedInputs(FIXTURES), count)
    stored = open_stage(tmp_path, shards.SPLIT_STAGE)
    for shard, tables in enumerate(shards.split_tables(view.tables, count)):
        for name, part in tables.items():
            assert pl.read_parquet(stored.directory / shards.split_path(shard, name)).equals(part), (shard, name)
    assert manifest["counts"] == view.counts() and manifest["as_of"] == view.as_of.isoformat()
    assert sum(counts["usage"] for counts in manifest["shard_counts"]) == view.usage.height


def test_a_defect_in_a_later_file_stops_the_split_after_earlier_parts_with_nothing_switched_live(
    small_dir, tmp_path, monkeypatch
):
    replace_in(small_dir / "usage.csv", "ACME-001,", "NOPE-404,")
    with pytest.raises(InputError) as whole:
        loader.read_customer_360(small_dir)
    written: list[str] = []
    with pytest.raises(InputError) as streamed, write_stage(tmp_path, shards.SPLIT_STAGE) as out:
        write_frame = out.write_frame

        def noting_write_frame(path: str, frame: pl.DataFrame) -> str:
            written.append(path)
            return write_frame(path, frame)

        monkeypatch.setattr(out, "write_frame", noting_write_frame)
        shards.save_split(out, loader.ValidatedInputs(small_dir), 2)
    assert str(streamed.value) == str(whole.value)
    # The first ACME-001 window is usage.csv's second row.
    assert str(whole.value) == (
        "file usage.csv, row 2, column account_id: expected an account_id that exists in accounts, got NOPE-404"
    )
    # accounts, contacts and subs were split and written before usage was read...
    assert written == [shards.split_path(k, name) for name in ("accounts", "contacts", "subs") for k in (0, 1)]
    # ...and were thrown away with the unswitched generation.
    assert not [path for path in (tmp_path / STAGES).rglob("*") if path.is_file()]


def _count_batches(monkeypatch) -> dict[str, int]:
    """Patch the loader to count the raw batches it reads of each file (by file name)."""
    counted: dict[str, int] = {}
    read_raw = loader._read_raw

    def counting_read_raw(path, spec):
        batches, extra, digest = read_raw(path, spec)

        def counting():
            for batch in batches:
                counted[path.name] = counted.get(path.name, 0) + 1
                yield batch

        return counting(), extra, digest

    monkeypatch.setattr(loader, "_read_raw", counting_read_raw)
    return counted


def test_files_validated_in_row_batches_load_the_whole_file_tables(monkeypatch):
    whole = loader.read_customer_360(FIXTURES)
    monkeypatch.setattr(loader, "BATCH_ROWS", 5)
    counted = _count_batches(monkeypatch)
    batched = loader.read_customer_360(FIXTURES)
    # usage.csv's 144 rows come in 29 batches of at most 5, cases.json's too: batches are real.
    assert counted["usage.csv"] == 29 and counted["cases.json"] == -(-whole.cases.height // 5)
    assert all(batched.tables[name].equals(whole.tables[name]) for name in ENTITIES)
    assert (batched.as_of, batched.source_hashes, batched.warnings) == (
        whole.as_of,
        whole.source_hashes,
        whole.warnings,
    )


# Usage rows are the file's lines less the header: row 20 is line 21, row 100 is line 101.
OVERLAP_AT_ROW_20 = ("GLOBEX-002,2026-06-29,2026-07-05", "GLOBEX-002,2026-06-27,2026-07-05")
NOT_AN_INTEGER_AT_ROW_100 = ("STARK-008,2026-06-29,2026-07-05,210,", "STARK-008,2026-06-29,2026-07-05,many,")
NOT_AN_INTEGER_AT_ROW_3 = ("ACME-001,2026-06-22,2026-06-28,168,", "ACME-001,2026-06-22,2026-06-28,many,")
BROKEN_QUOTE_AT_ROW_130 = ("KV-010,2026-06-15,2026-06-21,18,677", 'KV-010,2026-06-15,2026-06-21,"18"x,677')


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        # A row judged against the rows before it (an overlapping window, batch 4) comes before a
        # row judged alone (batch 20), though the batch judging it alone is read first.
        (
            [OVERLAP_AT_ROW_20, NOT_AN_INTEGER_AT_ROW_100],
            "file usage.csv, row 20, column window_start: expected a window_start after the end of the "
            "previous window of the same account_id (GLOBEX-002), got 2026-06-27",
        ),
        (
            [NOT_AN_INTEGER_AT_ROW_100],
            "file usage.csv, row 100, column active_users: expected an integer, got many",
        ),
        # A broken CSV row anywhere in the file comes before any value's defect, as in one read.
        ([NOT_AN_INTEGER_AT_ROW_3, BROKEN_QUOTE_AT_ROW_130], "file usage.csv, row 130"),
    ],
)
@pytest.mark.untraced
def test_a_file_validated_in_row_batches_raises_the_defect_of_a_whole_file_pass(
    tmp_path, monkeypatch, breaks, expected
):
    shutil.copytree(FIXTURES, tmp_path / "in")
    for old, new in breaks:
        replace_in(tmp_path / "in" / "usage.csv", old, new)
    with pytest.raises(InputError) as whole:
        loader.read_customer_360(tmp_path / "in")
    monkeypatch.setattr(loader, "BATCH_ROWS", 5)
    with pytest.raises(InputError) as batched:
        loader.read_customer_360(tmp_path / "in")
    assert str(batched.value) == str(whole.value)
    assert str(whole.value).startswith(expected)
