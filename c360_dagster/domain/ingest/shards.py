"""Shards: which of N shards an account belongs to, and the input tables split by it.

`shard_of(account_id, n)` is the first 8 bytes of the id's sha256 (UTF-8), big-endian, mod n:
it depends on the id alone, so adding accounts never moves another, and every row that names
an account (an entity row, an override, a lake row) finds its shard the same way. A row that
points at an unknown account goes to that id's shard, so per-shard checks still see it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow.parquet as pq

from c360_dagster.domain.core.errors import C360Error, ConfigError
from c360_dagster.domain.core.scratch import scratch
from c360_dagster.domain.core.stages import StageReader, StageWriter
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.loader import ValidatedInputs
from c360_dagster.domain.ingest.view import Customer360, decode_table, save_manifest, table_path

SHARD = "shard"
# The split pass's stage: each shard's input tables and one manifest for all of them.
SPLIT_STAGE = "inputs"
SPLIT_MANIFEST = "inputs/manifest.json"


def shard_of(account_id: str, shards: int) -> int:
    """The shard (0..shards-1) of one account id."""
    return int.from_bytes(hashlib.sha256(account_id.encode("utf-8")).digest()[:8], "big") % shards


def shard_keys(shards: int) -> list[str]:
    """The shard partition keys, "0".."N-1"."""
    return [str(k) for k in range(shards)]


def shard_table(account_ids: pl.Series, shards: int) -> pl.DataFrame:
    """`account_id`, `shard` (Int64) for each distinct id, hashed once by DuckDB in one vectorised pass."""
    ids = pl.DataFrame({"account_id": account_ids.unique()}, schema={"account_id": pl.Utf8})
    with scratch() as con:
        con.register("ids", ids.to_arrow())
        # The first 16 hex digits of the sha256 are its first 8 bytes, read as one unsigned integer.
        return con.sql(
            f"SELECT account_id, (('0x' || left(sha256(account_id), 16))::UBIGINT % {int(shards)})::BIGINT AS {SHARD} "
            "FROM ids ORDER BY account_id"
        ).pl()


def with_shard(frame: pl.DataFrame, shards: int, table: pl.DataFrame | None = None) -> pl.DataFrame:
    """`frame` plus its rows' `shard` column (from `account_id`), row order kept."""
    table = shard_table(frame["account_id"], shards) if table is None else table
    return frame.join(table, on="account_id", how="left", maintain_order="left")


def in_shard(frame: pl.DataFrame, shard: int, shards: int) -> pl.DataFrame:
    """The rows of `frame` whose `account_id` belongs to `shard` (all rows when there is one shard)."""
    if shards == 1:
        return frame
    table = shard_table(frame["account_id"], shards)
    return frame.filter(pl.col("account_id").is_in(table.filter(pl.col(SHARD) == shard)["account_id"].implode()))


def split_tables(tables: Mapping[str, pl.DataFrame], shards: int) -> list[dict[str, pl.DataFrame]]:
    """Each entity's rows split by their account's shard: one dict of tables per shard, every
    row in exactly one of them, each table's row order kept (so still sorted by its key)."""
    ids = pl.concat([frame["account_id"] for frame in tables.values()]) if tables else pl.Series([], dtype=pl.Utf8)
    table = shard_table(ids, shards)
    split: list[dict[str, pl.DataFrame]] = [{} for _ in range(shards)]
    for name, frame in tables.items():
        for k, part in enumerate(split_table(frame, shards, table)):
            split[k][name] = part
    return split


def split_table(frame: pl.DataFrame, shards: int, table: pl.DataFrame | None = None) -> list[pl.DataFrame]:
    """`frame`'s rows in each shard, row order kept (`table`: the accounts' shards, if already known)."""
    if shards == 1:
        return [frame]
    parts = with_shard(frame, shards, table).partition_by(SHARD, as_dict=True, include_key=False)
    return [parts.get((k,), frame.clear()) for k in range(shards)]


def with_new_accounts(table: pl.DataFrame | None, account_ids: pl.Series, shards: int) -> pl.DataFrame:
    """`table` (`shard_table`'s columns, or None) plus the shards of those `account_ids` it lacks,
    so a pass over many files hashes each account id once."""
    if table is None:
        return shard_table(account_ids, shards)
    new = account_ids.filter(~account_ids.is_in(table["account_id"].implode()))
    return table if new.is_empty() else pl.concat([table, shard_table(new, shards)])


def split_path(shard: int, name: str) -> str:
    """Where the split stage keeps shard `shard`'s table `name`."""
    return f"inputs/{shard}/{name}.parquet"


def save_split(out: StageWriter, inputs: ValidatedInputs, shards: int) -> dict:
    """Split the inputs into `shards` shards as they are validated, writing each table's parts
    before the next file is read, then the split's manifest; return the manifest."""
    shard_counts: list[dict[str, int]] = [{} for _ in range(shards)]
    known = None  # the accounts' shards, each id hashed once (none with one shard: nothing to split)
    for name, frame in inputs:
        if shards > 1:
            known = with_new_accounts(known, frame["account_id"], shards)
        for shard, part in enumerate(split_table(frame, shards, known)):
            out.write_frame(split_path(shard, name), part)
            shard_counts[shard][name] = part.height
    manifest = {
        "as_of": inputs.as_of.isoformat(),
        "counts": inputs.counts,
        "shard_counts": [dict(sorted(counts.items())) for counts in shard_counts],
        "shards": shards,
        "source_hashes": inputs.source_hashes,
        "warnings": list(inputs.warnings),
    }
    out.write_json(SPLIT_MANIFEST, manifest)
    return manifest


def split_manifest(stored: StageReader) -> dict:
    return stored.read_json(SPLIT_MANIFEST)


def record_path(stage: str) -> str:
    """Where a shard's generation of `stage` keeps what its roll-up needs to know of it."""
    return f"frames/{stage}.shard.json"


def save_record(out: StageWriter, split_hash: str, **facts: object) -> None:
    """Record in a shard's generation of a stage the split (its manifest's hash) it was made from,
    and any `facts` its roll-up merges (the 360's integrity findings)."""
    out.write_json(record_path(out.stage), {"split": split_hash, **facts})


def read_record(stored: StageReader) -> dict:
    """What a shard's generation of a stage recorded for its roll-up (see `save_record`)."""
    return stored.read_json(record_path(stored.stage))


def refuse_other_splits(stored: Sequence[StageReader], split_hash: str) -> None:
    """Refuse shard generations (one per shard, in shard order) not made from the live split:
    a roll-up of them would mix two different books."""
    for shard, one in enumerate(stored):
        found = read_record(one)["split"] if record_path(one.stage) in one.files else "none recorded"
        if found != split_hash:
            raise C360Error(
                f"shard {shard}'s {one.stage} output ({one.directory}) was made from another split of the "
                f"inputs ({found}) than the live one ({split_hash}); run the chain again (`c360 c360:run`) "
                "so that every shard is rebuilt from the live split",
                code="SHARD_STALE",
            )


def save_view(
    out: StageWriter, stored: StageReader, shard: int, shards: int, tables: Iterable[str] = tuple(ENTITIES)
) -> tuple[Customer360, dict[str, int]]:
    """Write shard `shard`'s `360` view into `out` from the split, which must have made `shards`
    shards; return the view with the tables named in `tables` (every table is written), and its rows
    per table as the split counted them. Each table's verified bytes are written unchanged: the split
    encoded them as the view does, so they are never re-encoded, and only `tables` are decoded (for
    the view's checks: at 1M accounts all eight decoded held about 2.5 GB)."""
    manifest = split_manifest(stored)
    if manifest["shards"] != shards:
        raise ConfigError(
            f"scale.yaml: shards: {shards}, but the loaded input was split into {manifest['shards']} shards; "
            "run `c360 c360:load` again"
        )
    decoded = set(tables)
    read = {}
    for name in ENTITIES:
        data = stored.read_bytes(split_path(shard, name))
        out.write_bytes(table_path(name), data)
        if name in decoded:
            read[name] = decode_table(name, data)
    view = Customer360(
        as_of=dt.date.fromisoformat(manifest["as_of"]),
        tables=read,
        source_hashes=manifest["source_hashes"],
        warnings=tuple(manifest["warnings"]),
        stored_hash=stored.manifest_hash,
    )
    counts = manifest["shard_counts"][shard]
    save_manifest(out, manifest["as_of"], counts, view.source_hashes, view.warnings)
    return view, counts


def merge_frames(frames: Sequence[pl.DataFrame], keys: Sequence[str]) -> pl.DataFrame:
    """Shards' frames as one, in the order one unsplit run sorts it (by `keys`)."""
    return pl.concat(list(frames)).sort(list(keys), maintain_order=True)


# Rows per batch when streaming a frame: one row group of a stage's Parquet (stages.ROW_GROUP_ROWS).
BATCH_ROWS = 16_384


def parquet_batches(source: bytes | Path, batch_rows: int = BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """A Parquet file's rows (its verified bytes, or a file) in order, `batch_rows` at a time."""
    parquet = pq.ParquetFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    for batch in parquet.iter_batches(batch_size=batch_rows):
        yield cast(pl.DataFrame, pl.from_arrow(batch))


def merged(sources: Sequence[bytes], keys: Sequence[str]) -> pl.LazyFrame:
    """Parquet files (their verified bytes), each sorted by `keys`, as one frame in the order of
    `merge_frames`: Polars' streaming merge, which holds a few batches per source, never the book.

    No key value may be in two sources (an account's rows are all in its shard, and every key
    here is unique or starts with an id). Key columns are never null. The keys are merged as
    one struct column, which orders column by column as a sort by `keys` does.
    """
    scans = [pl.scan_parquet(io.BytesIO(data)) for data in sources]
    if len(scans) == 1:
        return scans[0]
    keyed = [scan.with_columns(pl.struct(list(keys)).alias(_MERGE_KEY)).set_sorted(_MERGE_KEY) for scan in scans]
    return functools.reduce(lambda left, right: left.merge_sorted(right, _MERGE_KEY), keyed).drop(_MERGE_KEY)


_MERGE_KEY = "__merge_key"


def write_merged(out: StageWriter, path: str, sources: Sequence[bytes], keys: Sequence[str]) -> pl.Schema:
    """Write the shards' frames (their verified Parquet bytes, each sorted by `keys`) into `out`
    at `path` as the book's one frame (`merged`); return its schema.

    One shard's frame is the book's: `StageWriter.write_frame` wrote it as the merge's sink writes
    the same rows (`tests/test_shards.py` holds them byte-equal), so its bytes are copied, not
    decoded and encoded again.
    """
    if len(sources) == 1:
        out.write_bytes(path, sources[0])
        return pl.scan_parquet(io.BytesIO(sources[0])).collect_schema()
    frame = merged(sources, keys)
    out.write_lazy_frame(path, frame)
    return frame.collect_schema()


def whole_groups(batches: Iterable[pl.DataFrame], group: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Batches of a frame sorted by `group`, re-cut so that no group (rows equal on `group`)
    spans two of them: each batch's last group waits for the next (a per-group document can
    then be written batch by batch)."""
    group = list(group)
    held: pl.DataFrame | None = None
    for batch in batches:
        frame = batch if held is None else pl.concat([held, batch])
        if frame.is_empty():
            continue
        last = pl.all_horizontal(
            pl.col(name) == value for name, value in zip(group, frame.select(group).row(-1), strict=True)
        )
        # Sorted by `group`: the last group's rows are the frame's last ones.
        complete = frame.height - frame.select(last.sum()).item()
        if complete:
            yield frame.head(complete)
        held = frame.slice(complete)
    if held is not None and held.height:
        yield held
