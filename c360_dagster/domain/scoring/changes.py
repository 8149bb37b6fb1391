"""Which accounts changed between two runs: a per-account digest over the stage frames."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl


def _per_account(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """One string per account holding all of its rows, in a stable order."""
    encoded = frame.sort(frame.columns).select(
        "account_id", pl.struct(pl.exclude("account_id")).struct.json_encode().alias(name)
    )
    return encoded.group_by("account_id").agg(pl.col(name).str.join("\n"))


def account_digests(health: pl.DataFrame, signals: pl.DataFrame, renewals: pl.DataFrame) -> pl.DataFrame:
    """`account_id, digest`: the digest changes when any of the account's rows change."""
    joined = _per_account(health, "h")
    for frame, name in ((signals, "s"), (renewals, "r")):
        joined = joined.join(_per_account(frame, name), on="account_id", how="left")
    text = pl.concat_str([pl.col(c).fill_null("") for c in ("h", "s", "r")], separator="\x1e")
    return joined.select(
        "account_id",
        text.map_elements(lambda s: hashlib.sha256(s.encode()).hexdigest(), return_dtype=pl.Utf8).alias("digest"),
    ).sort("account_id")


def changed_accounts(current: pl.DataFrame, previous_path: Path) -> list[str]:
    """Accounts whose digest differs from (or is missing in) the previously recorded digests."""
    if not previous_path.exists():
        return current["account_id"].to_list()
    previous = pl.read_parquet(previous_path)
    joined = current.join(previous, on="account_id", how="left", suffix="_previous")
    return joined.filter(pl.col("digest") != pl.col("digest_previous").fill_null(""))["account_id"].to_list()
