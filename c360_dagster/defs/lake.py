"""Lake tables (key prefix `lake`) in DuckDB or Delta Lake, as scale.yaml says: each write validated against its contract."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
from c360_dagster.defs.shards import ONE_SHARD, run_shard
from c360_dagster.defs.versions import source_version
from c360_dagster.domain.governance import contracts, lake, lake_tables
from c360_dagster.domain.governance.lake import DuckDBLake


@dataclass(frozen=True)
class LakeTable:
    """Where a lake table's rows come from."""

    upstream: dg.AssetsDefinition
    # A shard's rows and the hash of the verified bytes they were read from (what the event signs).
    rows: Callable[[C360Project, int], tuple[pl.DataFrame, str]]


def _from_frame(
    name: str, to_rows: Callable[[pl.DataFrame], pl.DataFrame]
) -> Callable[[C360Project, int], tuple[pl.DataFrame, str]]:
    def rows(project: C360Project, shard: int) -> tuple[pl.DataFrame, str]:
        frame, digest = project.stages.frame_and_hash(name, shard=shard)
        return to_rows(frame), digest

    return rows


def _opp_rows(project: C360Project, shard: int) -> tuple[pl.DataFrame, str]:
    opps, digest = project.stages.view_table("crm_opps", shard)
    return lake_tables.opp_rows(opps), digest


LAKE_TABLES = {
    "crm_opps": LakeTable(customer_360, _opp_rows),
    "account_health": LakeTable(account_health, _from_frame("health", lake_tables.health_rows)),
    "customer_signals": LakeTable(customer_signals, _from_frame("signals", lake_tables.signal_rows)),
    "renewal_forecasts": LakeTable(renewal_forecasts, _from_frame("renewals", lake_tables.renewal_rows)),
}


def lake_key(table: str) -> dg.AssetKey:
    """A lake table's asset key. Dagster 1.13's graph names a node by the key's last part only
    (no display-name override), so `_table` keeps it apart from the customer asset it is made of."""
    return dg.AssetKey(["lake", f"{table}_table"])


def _lake_asset(table: str, spec: LakeTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=lake_key(table),
        group_name="lake",
        kinds={"duckdb", "delta"},
        owners=OWNERS,
        code_version=source_version(lake, contracts, lake_tables),
        deps=[spec.upstream],
        partitions_def=ONE_SHARD,
        description=(
            f"The `{table}` lake table (DuckDB file by default, Delta Lake per scale.yaml), made of "
            f"`{spec.upstream.key.to_user_string()}`: one snapshot per as_of and shard, each shard's rows "
            "written under its contract."
        ),
        # The default lake's name; each materialization records the configured one.
        metadata={"dagster/table_name": f"{DuckDBLake.CATALOG}.{table}"},
    )
    def write_table(context: dg.AssetExecutionContext, project: C360Project) -> dg.MaterializeResult:
        shard, count = run_shard(context)
        frame, source_hash = spec.rows(project, shard)
        as_of = project.stages.view_as_of(shard)
        target = project.lake
        # Hashing the rows (Polars' CSV writer, sha256) overlaps the lake compressing them.
        with ThreadPoolExecutor(max_workers=1) as pool, project.stages.writing(str(shard)):
            rows_hash = pool.submit(lake.rows_hash, frame)
            written = target.write_snapshot(table, frame, as_of, shard=shard, shards=count)
            project.ledger.record_event(
                context,
                shard=str(shard),
                as_of=as_of.isoformat(),
                inputs={spec.upstream.key.to_user_string(): source_hash},
                outputs={lake.snapshot_output(table, as_of): rows_hash.result()},
            )
            counted = project.metrics.count("c360_lake_rows_written", written, {"table": table})
        return dg.MaterializeResult(
            metadata={
                **counted,
                "dagster/row_count": written,
                "dagster/table_name": target.table_name(table),
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn(name, column_type, description=text)
                        for name, column_type, text in target.table_columns(table)
                    ]
                ),
                "as_of": as_of.isoformat(),
                "lake_format": target.FORMAT,
                "lake": dg.MetadataValue.path(target.where),
            }
        )

    return write_table


lake_assets = [_lake_asset(table, spec) for table, spec in LAKE_TABLES.items()]
