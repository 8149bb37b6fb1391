"""The Customer 360 view: one validated, typed Polars frame per entity plus the run's `as_of`.

It is persisted as one Parquet file per entity beside a small manifest, in the `360` stage's
generation (domain/core/stages.py), so downstream stages read columns (and, per account, only the
rows they need) instead of the whole JSON view, each file verified against its hash.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

from c360_dagster.domain.core.stages import StageReader, StageWriter
from c360_dagster.domain.ingest.entities import ENTITIES

STAGE = "360"
VIEW_DIR = "frames/360"  # the tables' folder inside the stage (and under artifacts/customer)
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Customer360:
    """Validated input tables keyed by entity file name (`accounts`, `subs`, ...)."""

    as_of: dt.date
    tables: dict[str, pl.DataFrame]
    source_hashes: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # The hash of the stage manifest it was read from (what a run that read it signs); empty
    # when the view was built from the inputs rather than read back.
    stored_hash: str = ""

    @property
    def accounts(self) -> pl.DataFrame:
        return self.tables["accounts"]

    @property
    def contacts(self) -> pl.DataFrame:
        return self.tables["contacts"]

    @property
    def subs(self) -> pl.DataFrame:
        return self.tables["subs"]

    @property
    def usage(self) -> pl.DataFrame:
        return self.tables["usage"]

    @property
    def cases(self) -> pl.DataFrame:
        return self.tables["cases"]

    @property
    def nps(self) -> pl.DataFrame:
        return self.tables["nps"]

    @property
    def invoices(self) -> pl.DataFrame:
        return self.tables["invoices"]

    @property
    def crm_opps(self) -> pl.DataFrame:
        return self.tables["crm_opps"]

    def counts(self) -> dict[str, int]:
        return {name: self.tables[name].height for name in sorted(self.tables)}

    @classmethod
    def open(
        cls, stored: StageReader, account_ids: list[str] | None = None, tables: Iterable[str] = tuple(ENTITIES)
    ) -> Customer360:
        """Read the persisted view, every file read verified; with `account_ids`, only those accounts'
        rows; with `tables`, only those tables (a stage that reads a few keeps the others out of memory:
        at 1M accounts `contacts` and `crm_opps` alone hold about 0.9 GB in a health run)."""
        manifest = stored.read_json(f"{VIEW_DIR}/{MANIFEST}")
        read = {name: read_view_table(stored, name, account_ids) for name in tables}
        return cls(
            as_of=dt.date.fromisoformat(manifest["as_of"]),
            tables=read,
            source_hashes=manifest["source_hashes"],
            warnings=tuple(manifest["warnings"]),
            stored_hash=stored.manifest_hash,
        )


def table_path(name: str) -> str:
    """Where the view keeps entity `name`'s table inside the `360` stage."""
    return f"{VIEW_DIR}/{name}.parquet"


def save_manifest(
    out: StageWriter, as_of: str, counts: dict[str, int], source_hashes: dict[str, str], warnings: Iterable[str]
) -> None:
    """The view's manifest (`as_of` in ISO form, row counts per table), beside its tables."""
    manifest = {"as_of": as_of, "counts": counts, "source_hashes": source_hashes, "warnings": list(warnings)}
    out.write_json(f"{VIEW_DIR}/{MANIFEST}", manifest)


def view_as_of(stored: StageReader) -> dt.date:
    """The `as_of` of a persisted view, from its manifest alone."""
    return dt.date.fromisoformat(stored.read_json(f"{VIEW_DIR}/{MANIFEST}")["as_of"])


def read_view_table(stored: StageReader, name: str, account_ids: list[str] | None = None) -> pl.DataFrame:
    """One table of a persisted view (optionally only these accounts' rows), without reading the others."""
    return stored.read_frame(table_path(name), account_ids).cast(ENTITIES[name].polars_schema)  # type: ignore[arg-type]  # Polars types cast()'s dict keys as an invariant union


def decode_table(name: str, data: bytes) -> pl.DataFrame:
    """Entity `name`'s table from Parquet bytes already verified, typed as the contract says."""
    return pl.read_parquet(io.BytesIO(data)).cast(ENTITIES[name].polars_schema)  # type: ignore[arg-type]  # Polars types cast()'s dict keys as an invariant union


def empty_table(name: str) -> pl.DataFrame:
    """A table with the entity's columns and no rows (an optional file that is absent)."""
    return pl.DataFrame(schema=ENTITIES[name].polars_schema)


# What `active_arr_by_segment` reads of each table (a streamed load keeps just these).
ACTIVE_ARR_COLUMNS = {"accounts": ("account_id", "segment"), "subs": ("account_id", "arr", "currency", "status")}


def active_arr_by_segment(accounts: pl.DataFrame, subs: pl.DataFrame) -> list[dict]:
    """Active ARR and subscriptions per segment and currency (never summed across currencies)."""
    return (
        subs.filter(pl.col("status") == "active")
        .join(accounts.select("account_id", "segment"), on="account_id")
        .group_by("segment", "currency")
        .agg(pl.col("arr").sum().round(2), pl.len().alias("subscriptions"))
        .sort("segment", "currency")
        .to_dicts()
    )
