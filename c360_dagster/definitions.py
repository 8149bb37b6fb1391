"""The c360 asset graph, in one place: assets, checks, jobs, schedule, sensors, resources."""

from __future__ import annotations

import functools

import dagster as dg

from c360_dagster.defs.accounts import playbook, qbr_pack
from c360_dagster.defs.automation import (
    account_refresh_sensor,
    chain_schedule,
    input_files_sensor,
)
from c360_dagster.defs.customer import (
    REPORT_ASSETS,
    account_health,
    customer_360,
    customer_inputs,
    customer_signals,
    renewal_forecasts,
)
from c360_dagster.defs.executors import chosen_executor
from c360_dagster.defs.inputs import input_files
from c360_dagster.defs.jobs import JOBS
from c360_dagster.defs.lake import lake_assets
from c360_dagster.defs.progress import progress_logger
from c360_dagster.defs.resources import C360Project
from c360_dagster.defs.shards import with_shards

# The chain's per-shard assets, declared with one shard.
SHARDED = [customer_360, account_health, customer_signals, renewal_forecasts, *lake_assets]


@functools.cache
def definitions_for(shards: int) -> dg.Definitions:
    """The asset graph with the chain's assets split into `shards` shard partitions."""
    return dg.Definitions(
        assets=[
            input_files,
            customer_inputs,
            *(with_shards(asset, shards) if shards > 1 else asset for asset in SHARDED),
            *REPORT_ASSETS,
            playbook,
            qbr_pack,
        ],
        jobs=JOBS,
        schedules=[chain_schedule],
        sensors=[input_files_sensor, account_refresh_sensor],
        resources={"project": C360Project()},
        executor=chosen_executor(),
        loggers={"console": dg.colored_console_logger, "progress": progress_logger},
    )


# What `dagster dev` and `dagster asset materialize -m c360_dagster.definitions` load: the
# shards of the project's scale.yaml (run from the project's folder).
defs = definitions_for(C360Project().paths.shards)
