"""Lake tables in DuckDB (key prefix `lake`): each write validated against its contract."""


import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from c360_dagster.defs.customer import (
    OWNERS,
    account_health,
    customer_360,
    customer_signals,
    renewal_forecasts,
)
from c360_dagster.defs.resources import C360Project
from c360_dagster.defs.versions import source_version
from c360_dagster.domain import contracts, lake, lake_tables
from c360_dagster.domain.io import sha256_bytes


@dataclass(frozen=True)
class LakeTable:
    """Where a lake table's rows come from."""

    upstream: dg.AssetsDefinition
    source_hash: Callable[[C360Project], str]
    rows: Callable[[C360Project], pl.DataFrame]


LAKE_TABLES = {
    "crm_opps": LakeTable(
        customer_360,
        lambda p: p.view_hash(),
        lambda p: lake_tables.opp_rows(p.view_table("crm_opps")),
    ),
    "account_health": LakeTable(
        account_health,
        lambda p: p.frame_hash("health"),
        lambda p: lake_tables.health_rows(p.read_frame("health")),
    ),
    "customer_signals": LakeTable(
        customer_signals,
        lambda p: p.frame_hash("signals"),
        lambda p: lake_tables.signal_rows(p.read_frame("signals")),
    ),
    "renewal_forecasts": LakeTable(
        renewal_forecasts,
        lambda p: p.frame_hash("renewals"),
        lambda p: lake_tables.renewal_rows(p.read_frame("renewals")),
    ),
}


def _rows_hash(frame: pl.DataFrame) -> str:
    """The rows' content hash: sha256 of their CSV, written as bytes (no Python str of it)."""
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    return sha256_bytes(buffer.getvalue())


# The lake is one DuckDB file, `c360.duckdb`: DuckDB names its catalog after the file.
LAKE_CATALOG = "c360.main"


def _lake_asset(table: str, spec: LakeTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=["lake", table],
        group_name="lake",
        kinds={"duckdb"},
        owners=OWNERS,
        code_version=source_version(lake, contracts, lake_tables),
        deps=[spec.upstream],
        description=f"The `{table}` lake table (DuckDB): one snapshot per as_of, written under its contract.",
        metadata={"dagster/table_name": f"{LAKE_CATALOG}.{table}"},
    )
    def write_table(context: dg.AssetExecutionContext, project: C360Project) -> dg.MaterializeResult:
        frame = spec.rows(project)
        as_of = project.view_as_of()
        # Hashing the rows (Polars' CSV writer, sha256) overlaps DuckDB compressing them.
        with ThreadPoolExecutor(max_workers=1) as pool, project.writing():
            rows_hash = pool.submit(_rows_hash, frame)
            written = lake.write_snapshot(project.lake_path, table, frame, as_of, Path(project.contracts_dir))
            project.record_event(
                context,
                as_of=as_of.isoformat(),
                inputs={spec.upstream.key.to_user_string(): spec.source_hash(project)},
                outputs={f"{table}@{as_of.isoformat()}": rows_hash.result()},
            )
            counted = project.count("c360_lake_rows_written", written, {"table": table})
        return dg.MaterializeResult(
            metadata={
                **counted,
                "dagster/row_count": written,
                "dagster/table_name": f"{LAKE_CATALOG}.{table}",
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn(name, sql_type, description=text)
                        for name, sql_type, text in lake.table_columns(table, Path(project.contracts_dir))
                    ]
                ),
                "as_of": as_of.isoformat(),
                "database": dg.MetadataValue.path(str(project.lake_path)),
            }
        )

    return write_table


lake_assets = [_lake_asset(table, spec) for table, spec in LAKE_TABLES.items()]
