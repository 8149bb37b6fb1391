"""Per-account assets, partitioned by `account`: the success playbook and the QBR pack."""


import json
import warnings
from pathlib import Path

import dagster as dg

from c360_dagster.defs.customer import (
    OWNERS,
    account_health,
    customer_360,
    customer_signals,
    renewal_forecasts,
)
from c360_dagster.defs.partitions import ACCOUNT_PARTITIONS
from c360_dagster.defs.resources import C360Project
from c360_dagster.defs.versions import source_version
from c360_dagster.domain import health, lake, playbooks, qbr, qbr_pptx, signals
from c360_dagster.domain.errors import GateError
from c360_dagster.domain.io import sha256_file, write_json_atomic, write_text_atomic
from c360_dagster.domain.text import unknown_account


class QbrConfig(dg.Config):
    """Run config of `qbr_pack`: contact-level data needs the privacy sign-off."""

    include_contacts: bool = False
    privacy_signoff: bool = False
    pptx: bool = True


class AccountInputs:
    """One account's rows from the 360 view and the stage frames (read by predicate, not whole)."""

    def __init__(self, project: C360Project, account_id: str) -> None:
        self.view = project.open_view([account_id])
        if self.view.accounts.is_empty():
            raise unknown_account(account_id, project.view_table("accounts")["account_id"].to_list())
        self.account = self.view.accounts.row(0, named=True)
        self.health = dict(health.health_records(project.read_frame("health", account_id)))[account_id]
        self.signals = signals.signals_by_account(project.read_frame("signals", account_id)).get(
            account_id, []
        )
        self.renewals = project.read_frame("renewals", account_id).to_dicts()
        self.input_hashes = {
            "customer_360": project.view_hash(),
            "account_health": project.frame_hash("health"),
            "customer_signals": project.frame_hash("signals"),
            "renewal_forecasts": project.frame_hash("renewals"),
        }


def playbook_paths(project: C360Project, account_id: str) -> tuple[Path, Path]:
    base = project.customer_dir / "playbooks" / account_id
    return base.with_suffix(".md"), base.with_suffix(".json")


@dg.asset(
    group_name="accounts",
    kinds={"markdown", "json"},
    owners=OWNERS,
    code_version=source_version(playbooks),
    partitions_def=ACCOUNT_PARTITIONS,
    deps=[customer_360, account_health, customer_signals, renewal_forecasts],
)
def playbook(context: dg.AssetExecutionContext, project: C360Project) -> dg.MaterializeResult:
    """Success playbook for one account: plays, RACI, dated steps, KPIs and checkpoints."""
    account_id = context.partition_key
    inputs = AccountInputs(project, account_id)
    library_file = project.config_path("playbooks")
    library = playbooks.load_playbook_library(library_file)
    result = playbooks.build_playbook(
        inputs.account, inputs.health, inputs.signals, inputs.renewals, library, inputs.view.as_of
    )
    md_path, json_path = playbook_paths(project, account_id)
    with project.writing():
        md_hash = write_text_atomic(md_path, playbooks.render_playbook_markdown(result))
        json_hash = write_json_atomic(json_path, result.to_dict())
        project.record_event(
            context,
            as_of=inputs.view.as_of.isoformat(),
            inputs={**inputs.input_hashes, "playbooks.yaml": sha256_file(library_file)},
            outputs={md_path.name: md_hash, json_path.name: json_hash},
        )
    return dg.MaterializeResult(
        metadata={
            "plays": dg.MetadataValue.json(list(result.plays)),
            "tier": result.tier,
            "path": dg.MetadataValue.path(str(md_path)),
        }
    )


# Partitioned asset checks are a preview feature in Dagster 1.13; the gates need them per account.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec")

QBR_GATES = [
    ("duty_of_care", "A red account's QBR needs a materialized playbook (DUTY_PLAYBOOK_MISSING)."),
    ("privacy_signoff", "Contact-level data in a QBR needs the privacy sign-off (PRIVACY_SIGNOFF_REQUIRED)."),
]


@dg.asset(
    group_name="accounts",
    kinds={"markdown", "pptx"},
    owners=OWNERS,
    code_version=source_version(qbr, qbr_pptx),
    partitions_def=ACCOUNT_PARTITIONS,
    # Everything it reads, so the graph is the lineage: the lake's score history included.
    deps=[customer_360, account_health, customer_signals, renewal_forecasts, playbook, dg.AssetKey(["lake", "account_health"])],
    check_specs=[
        dg.AssetCheckSpec(name, asset="qbr_pack", description=text, partitions_def=ACCOUNT_PARTITIONS)
        for name, text in QBR_GATES
    ],
)
def qbr_pack(context: dg.AssetExecutionContext, config: QbrConfig, project: C360Project):
    """Exec-ready QBR pack for one account (Markdown and PowerPoint), behind governance gates."""
    account_id = context.partition_key
    inputs = AccountInputs(project, account_id)
    _, playbook_json = playbook_paths(project, account_id)
    gates = qbr.check_gates(
        inputs.health["tier"],
        playbook_json.exists(),
        config.include_contacts,
        config.privacy_signoff,
        account_id=account_id,
    )
    for (name, _), gate in zip(QBR_GATES, gates, strict=True):
        yield dg.AssetCheckResult(
            check_name=name, passed=gate.passed, metadata={"code": gate.code, "message": gate.message}
        )
    blocked = [gate for gate in gates if not gate.passed]
    if blocked:
        raise GateError("; ".join(gate.message for gate in blocked), code=blocked[0].code)
    ctx = qbr.build_qbr_context(
        account=inputs.account,
        view=inputs.view,
        health=inputs.health,
        signals=inputs.signals,
        renewals=inputs.renewals,
        playbook=json.loads(playbook_json.read_text(encoding="utf-8")) if playbook_json.exists() else None,
        score_history=lake.score_history(project.lake_path, account_id) if project.lake_path.exists() else [],
        include_contacts=config.include_contacts,
        as_of=inputs.view.as_of,
    )
    with project.writing():
        written = qbr.write_qbr_pack(ctx, project.customer_dir, pptx=config.pptx)
        project.record_event(
            context,
            as_of=inputs.view.as_of.isoformat(),
            inputs={**inputs.input_hashes, **({"playbook": sha256_file(playbook_json)} if playbook_json.exists() else {})},
            outputs=written,
            extra={"privacy_signoff": "granted"} if config.include_contacts else None,
        )
        counted = project.count("qbr_generated", 1, {"account": account_id})
    yield dg.MaterializeResult(
        metadata={
            **counted,
            "files": dg.MetadataValue.json(sorted(written)),
            "path": dg.MetadataValue.path(str(project.customer_dir / f"qbr_{account_id}")),
        }
    )
