"""Jobs: the whole chain, one per `c360:*` command, and the per-account job."""

from __future__ import annotations

import dagster as dg

from c360_dagster.defs.customer import report_key
from c360_dagster.defs.inputs import input_files
from c360_dagster.defs.lake import lake_key


def _stage(name: str, asset: str, description: str) -> dg.UnresolvedAssetJobDefinition:
    """A stage's job: its shard asset, its lake table and its roll-up."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(asset, lake_key(asset), report_key(asset)),
        description=description,
    )


# A chain job holds the split (unpartitioned), the shard assets (partitioned by `shard`) and
# the roll-ups; the c360 commands run it as one run with one shard, else layer by layer.
chain_job = dg.define_asset_job(
    "c360_chain",
    selection=dg.AssetSelection.assets(input_files) | dg.AssetSelection.groups("customer", "lake", "reports"),
    description="Observe the input files → load and split → per shard: 360, health and signals, renewals, lake → roll-ups.",
)
load_job = dg.define_asset_job(
    "c360_load",
    selection=dg.AssetSelection.assets(
        input_files, "customer_inputs", "customer_360", lake_key("crm_opps"), report_key("customer_360")
    ),
    description=(
        "Observe the input files, load and split them, build each shard's Customer 360 view "
        "(and the crm_opps lake table), roll up 360.json."
    ),
)
health_job = _stage("c360_health", "account_health", "Score account health.")
signals_job = _stage("c360_signals", "customer_signals", "Detect churn and expansion signals.")
renewals_job = _stage("c360_renewals", "renewal_forecasts", "Forecast upcoming renewals.")
playbook_job = dg.define_asset_job(
    "c360_playbook",
    selection=dg.AssetSelection.assets("playbook"),
    description="Build one account's success playbook.",
)
qbr_job = dg.define_asset_job(
    "c360_qbr",
    selection=dg.AssetSelection.assets("qbr_pack"),
    description="Build one account's QBR pack.",
)
account_job = dg.define_asset_job(
    "c360_account",
    selection=dg.AssetSelection.groups("accounts"),
    description="Refresh one account's playbook and QBR pack.",
)

JOBS = [chain_job, load_job, health_job, signals_job, renewals_job, playbook_job, qbr_job, account_job]
