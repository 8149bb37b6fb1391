"""The c360 asset graph, in one place: assets, checks, jobs, schedule, sensors, resources."""

from __future__ import annotations

import dagster as dg

from c360_dagster.defs.accounts import playbook, qbr_pack
from c360_dagster.defs.automation import (
    account_refresh_sensor,
    chain_schedule,
    input_files_sensor,
)
from c360_dagster.defs.customer import (
    account_health,
    customer_360,
    customer_signals,
    renewal_forecasts,
)
from c360_dagster.defs.executors import chosen_executor
from c360_dagster.defs.inputs import input_files
from c360_dagster.defs.jobs import JOBS
from c360_dagster.defs.lake import lake_assets
from c360_dagster.defs.progress import progress_logger
from c360_dagster.defs.resources import C360Project

defs = dg.Definitions(
    assets=[
        input_files,
        customer_360,
        account_health,
        customer_signals,
        renewal_forecasts,
        *lake_assets,
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
