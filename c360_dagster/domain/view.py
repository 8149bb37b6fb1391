"""The Customer 360 view: one validated, typed Polars frame per entity plus the run's `as_of`.

It is persisted as one Parquet file per entity beside a small manifest, so downstream stages
read columns (and, per account, only the rows they need) instead of the whole JSON view.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from c360_dagster.domain.entities import ENTITIES
from c360_dagster.domain.io import atomic_writer, sha256_file, write_json_atomic

MANIFEST = "manifest.json"
# Small row groups with statistics let a per-account read skip most of a large table.
ROW_GROUP_ROWS = 16_384


@dataclass(frozen=True)
class Customer360:
    """Validated input tables keyed by entity file name (`accounts`, `subs`, ...)."""

    as_of: dt.date
    tables: dict[str, pl.DataFrame]
    source_hashes: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

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

    def save(self, directory: Path) -> str:
        """Write each table as Parquet, then the manifest; return the manifest's hash."""
        directory.mkdir(parents=True, exist_ok=True)
        table_hashes = {}
        for name in sorted(self.tables):
            path = directory / f"{name}.parquet"
            with atomic_writer(path, "wb") as handle:
                self.tables[name].write_parquet(handle, statistics=True, row_group_size=ROW_GROUP_ROWS)
            table_hashes[name] = sha256_file(path)
        # The manifest names every table's hash, so its own hash identifies the whole view.
        manifest = {
            "as_of": self.as_of.isoformat(),
            "counts": self.counts(),
            "source_hashes": self.source_hashes,
            "table_hashes": table_hashes,
            "warnings": list(self.warnings),
        }
        return write_json_atomic(directory / MANIFEST, manifest)

    @classmethod
    def open(cls, directory: Path, account_ids: list[str] | None = None) -> Customer360:
        """Read the persisted view; with `account_ids`, only those accounts' rows."""
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        tables = {}
        for name, spec in ENTITIES.items():
            frame = pl.scan_parquet(directory / f"{name}.parquet")
            if account_ids is not None:
                frame = frame.filter(pl.col("account_id").is_in(account_ids))
            tables[name] = frame.collect().cast(spec.polars_schema)  # type: ignore[arg-type]
        return cls(
            as_of=dt.date.fromisoformat(manifest["as_of"]),
            tables=tables,
            source_hashes=manifest["source_hashes"],
            warnings=tuple(manifest["warnings"]),
        )


def view_as_of(directory: Path) -> dt.date:
    """The `as_of` of a persisted view, from its manifest alone."""
    return dt.date.fromisoformat(json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["as_of"])


def read_view_table(directory: Path, name: str) -> pl.DataFrame:
    """One table of a persisted view, without reading the others."""
    return pl.read_parquet(directory / f"{name}.parquet").cast(ENTITIES[name].polars_schema)  # type: ignore[arg-type]


def empty_table(name: str) -> pl.DataFrame:
    """A table with the entity's columns and no rows (an optional file that is absent)."""
    return pl.DataFrame(schema=ENTITIES[name].polars_schema)


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
