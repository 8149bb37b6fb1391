"""Shards: which of N shards an account belongs to, and the input tables split by it.

`shard_of(account_id, n)` is the first 8 bytes of the id's sha256 (UTF-8), big-endian, mod n:
it depends on the id alone, so adding accounts never moves another, and every row that names
an account (an entity row, an override, a lake row) finds its shard the same way. A row that
points at an unknown account goes to that id's shard, so per-shard checks still see it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import duckdb
import polars as pl

SHARD = "shard"


def shard_of(account_id: str, shards: int) -> int:
    """The shard (0..shards-1) of one account id."""
    return int.from_bytes(hashlib.sha256(account_id.encode("utf-8")).digest()[:8], "big") % shards


def shard_table(account_ids: pl.Series, shards: int) -> pl.DataFrame:
    """`account_id`, `shard` (Int64) for each distinct id, hashed once by DuckDB in one vectorised pass."""
    ids = pl.DataFrame({"account_id": account_ids.unique()}, schema={"account_id": pl.Utf8})
    with duckdb.connect() as con:
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


def split_tables(tables: Mapping[str, pl.DataFrame], shards: int) -> list[dict[str, pl.DataFrame]]:
    """Each entity's rows split by their account's shard: one dict of tables per shard, every
    row in exactly one of them, each table's row order kept (so still sorted by its key)."""
    ids = pl.concat([frame["account_id"] for frame in tables.values()]) if tables else pl.Series([], dtype=pl.Utf8)
    table = shard_table(ids, shards)
    split: list[dict[str, pl.DataFrame]] = [{} for _ in range(shards)]
    for name, frame in tables.items():
        parts = with_shard(frame, shards, table).partition_by(SHARD, as_dict=True, include_key=False)
        for k in range(shards):
            split[k][name] = parts.get((k,), frame.clear())
    return split
