"""Schedule and sensors: rerun the chain on new input files; refresh only changed accounts."""

from pathlib import Path

import dagster as dg

from c360_dagster.defs.jobs import account_job, chain_job
from c360_dagster.defs.partitions import ACCOUNT_PARTITIONS_NAME
from c360_dagster.defs.resources import C360Project
from c360_dagster.domain.core.io import atomic_writer, canonical_json, sha256_bytes
from c360_dagster.domain.scoring.changes import account_digests, changed_accounts

chain_schedule = dg.ScheduleDefinition(
    name="c360_daily",
    job=chain_job,
    cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Run the whole chain every morning at 06:00 (off until switched on).",
)


def input_folder_state(folder: Path) -> str:
    """A digest of the input files' names, sizes and modification times (a cheap change test)."""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*") if p.is_file())
    return sha256_bytes(canonical_json(entries).encode("utf-8"))


@dg.sensor(
    job=chain_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a chain run when files in the input folder are added or changed.",
)
def input_files_sensor(context: dg.SensorEvaluationContext, project: C360Project):
    folder = Path(project.fixtures_dir)
    if not folder.is_dir():
        return dg.SkipReason(f"input folder {folder} does not exist")
    state = input_folder_state(folder)
    if state == context.cursor:
        return dg.SkipReason("no new or changed input files")
    context.update_cursor(state)
    return dg.RunRequest(run_key=state)


@dg.sensor(
    job=account_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "After a new renewal forecast, refreshes the playbook and QBR of only the accounts that changed "
        "and have an `account` partition."
    ),
)
def account_refresh_sensor(context: dg.SensorEvaluationContext, project: C360Project):
    records = context.instance.fetch_materializations(
        dg.AssetKey(["report", "renewal_forecasts_report"]), limit=1
    ).records
    if not records:
        return dg.SkipReason("report/renewal_forecasts_report has not been materialized yet")
    latest = records[0]
    if str(latest.storage_id) == context.cursor:
        return dg.SkipReason("no new renewal forecast since the last refresh")
    digests = account_digests(
        project.stages.read_frame("health"), project.stages.read_frame("signals"), project.stages.read_frame("renewals")
    )
    recorded = project.paths.frames_dir / "account_digests.parquet"
    changed = changed_accounts(digests, recorded)
    with atomic_writer(recorded, "wb") as handle:
        digests.write_parquet(handle)
    context.update_cursor(str(latest.storage_id))
    # Only accounts with a partition (the ones a team acts on or someone asked for) have packs to refresh.
    registered = set(context.instance.get_dynamic_partitions(ACCOUNT_PARTITIONS_NAME))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{latest.event_log_entry.run_id}:{account_id}", partition_key=account_id)
            for account_id in changed
            if account_id in registered
        ]
    )
