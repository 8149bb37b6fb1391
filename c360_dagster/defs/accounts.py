"""Per-account assets, partitioned by `account`: the success playbook and the QBR pack."""

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from c360_dagster.defs.customer import (
    OWNERS,
    customer_360_report,
    health_report,
    renewals_report,
    signals_report,
)
from c360_dagster.defs.lake import lake_key
from c360_dagster.defs.partitions import ACCOUNT_BACKFILL, ACCOUNT_PARTITIONS
from c360_dagster.defs.resources import C360Project
from c360_dagster.defs.versions import source_version
from c360_dagster.domain.core.errors import C360Error, GateError
from c360_dagster.domain.core.io import sha256_bytes, sha256_file
from c360_dagster.domain.core.text import unknown_account
from c360_dagster.domain.renewals import playbooks
from c360_dagster.domain.scoring import account_state, health, signals

if TYPE_CHECKING:
    from c360_dagster.domain.qbr import pack as qbr

# The QBR pack's modules (its context, deck, layout and PowerPoint writer) are imported by its
# asset's run only, not by every command that loads the asset graph (docs/performance.md,
# "Start-up, round 9"); its code version is computed from their source all the same.
QBR_MODULES = (
    "c360_dagster.domain.qbr.pack",
    "c360_dagster.domain.qbr.deck",
    "c360_dagster.domain.qbr.layout",
    "c360_dagster.domain.qbr.powerpoint",
)


class QbrConfig(dg.Config):
    """Run config of `qbr_pack`: contact-level data needs the privacy sign-off."""

    include_contacts: bool = False
    privacy_signoff: bool = False
    pptx: bool = True


@dataclass(frozen=True)
class AccountInputs:
    """What the per-account assets know of one account."""

    account: dict
    health: dict
    signals: list
    renewals: list[dict]
    contacts: list[dict]
    next_renewal: dt.date | None  # the earliest renewal_date of its active subscriptions


class RunInputs:
    """The run's accounts' rows from the 360 view and the stage frames (read by predicate, not whole)."""

    def __init__(self, project: C360Project, account_ids: list[str]) -> None:
        self.view = project.stages.open_view(account_ids)
        accounts = {row["account_id"]: row for row in self.view.accounts.iter_rows(named=True)}
        for account_id in account_ids:
            if account_id not in accounts:
                raise unknown_account(account_id, project.stages.view_table("accounts")[0]["account_id"].to_list())
        health_frame, health_hash = project.stages.frame_and_hash("health", account_ids)
        signals_frame, signals_hash = project.stages.frame_and_hash("signals", account_ids)
        renewals_frame, renewals_hash = project.stages.frame_and_hash("renewals", account_ids)
        scores = dict(health.health_records(health_frame))
        fired = signals.signals_by_account(signals_frame)
        renewals = renewals_frame.partition_by("account_id", as_dict=True)
        contacts = self.view.contacts.partition_by("account_id", as_dict=True)
        next_renewals = dict(
            self.view.subs.filter(pl.col("status") == "active")
            .group_by("account_id")
            .agg(pl.col("renewal_date").min())
            .iter_rows()
        )
        self.accounts = {
            account_id: AccountInputs(
                account=accounts[account_id],
                health=scores[account_id],
                signals=fired.get(account_id, []),
                renewals=renewals[(account_id,)].to_dicts() if (account_id,) in renewals else [],
                contacts=contacts[(account_id,)].to_dicts() if (account_id,) in contacts else [],
                next_renewal=next_renewals.get(account_id),
            )
            for account_id in account_ids
        }
        # The hashes of the bytes actually read and verified, which is what the events sign.
        self.input_hashes = {
            "customer_360": self.view.stored_hash,
            "account_health": health_hash,
            "customer_signals": signals_hash,
            "renewal_forecasts": renewals_hash,
        }

    def refuse_not_live(self, what: str) -> None:
        """A churned or not-started account gets no `what`; one stops the batch before anything is written."""
        account_state.refuse_not_live({a: one.health["lifecycle"] for a, one in self.accounts.items()}, what)


def account_facts(one: AccountInputs) -> dict[str, dg.MetadataValue]:
    """The account's own headline facts for its partition's materialization: tier and score (or,
    for an unscored account, why there is none: its status in words), lifecycle state and next
    renewal date; why the tier is not green's when too little is measured."""
    record = one.health
    facts: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(health.STATUS_WORDS[record["status"]]),
        "next_renewal": dg.MetadataValue.text(one.next_renewal.isoformat() if one.next_renewal else "none"),
    }
    if record["tier"] is not None:  # only a scored account has a tier and score
        facts["tier"] = dg.MetadataValue.text(record["tier"])
    if record.get("tier_reason"):  # amber although the score is green's: too little measured
        facts["tier_reason"] = dg.MetadataValue.text(record["tier_reason"])
    if record["score"] is not None:
        facts["score"] = dg.MetadataValue.int(record["score"])
    if record.get("lifecycle"):
        facts["lifecycle"] = dg.MetadataValue.text(record["lifecycle"])
    return facts


def playbook_stage(account_id: str) -> str:
    return f"playbooks/{account_id}"


def playbook_paths(account_id: str) -> tuple[str, str]:
    """The playbook's Markdown and JSON, relative to artifacts/customer."""
    return f"playbooks/{account_id}.md", f"playbooks/{account_id}.json"


def stored_playbook(project: C360Project, account_id: str) -> bytes | None:
    """The account's playbook JSON, verified against its stage, or None when it has none."""
    try:
        stored = project.stages.stored(playbook_stage(account_id))
    except C360Error as exc:
        if exc.code == "STAGE_MISSING":
            return None
        raise
    return stored.read_bytes(playbook_paths(account_id)[1])


@dg.asset(
    group_name="accounts",
    kinds={"markdown", "json"},
    owners=OWNERS,
    code_version=source_version(playbooks, account_state),
    partitions_def=ACCOUNT_PARTITIONS,
    backfill_policy=ACCOUNT_BACKFILL,
    deps=[customer_360_report, health_report, signals_report, renewals_report],
)
def playbook(context: dg.AssetExecutionContext, project: C360Project) -> dg.MaterializeResult:
    """Success playbook per account: plays, RACI, dated steps, KPIs and checkpoints."""
    inputs = RunInputs(project, context.partition_keys)
    inputs.refuse_not_live("success playbook")
    library_file = project.paths.config_path("playbooks")
    library = playbooks.load_playbook_library(library_file)
    inputs_hashes = {**inputs.input_hashes, "playbooks.yaml": sha256_file(library_file)}
    plans = playbooks.build_playbooks(
        [
            playbooks.PlanInputs(one.account, one.health, one.signals, one.renewals, one.contacts)
            for one in inputs.accounts.values()
        ],
        library,
        inputs.view.as_of,
    )
    results = dict(zip(inputs.accounts, plans, strict=True))
    # The batch's playbooks go live together, then are signed together (one sync each).
    outputs = {}
    with project.stages.writing():
        with project.stages.batch() as batch:
            for account_id, result in results.items():
                md_path, json_path = playbook_paths(account_id)
                out = batch.stage(playbook_stage(account_id))
                outputs[account_id] = {
                    Path(md_path).name: out.write_text(md_path, playbooks.render_playbook_markdown(result)),
                    Path(json_path).name: out.write_json(json_path, result.to_dict()),
                }
        project.ledger.record_partition_events(
            context,
            as_of=inputs.view.as_of.isoformat(),
            inputs=dict.fromkeys(outputs, inputs_hashes),
            outputs=outputs,
        )
    # Each partition's materialization carries its own account's plan only, even in a batch.
    for account_id, result in results.items():
        md_path, _ = playbook_paths(account_id)
        context.add_asset_metadata(
            {
                **account_facts(inputs.accounts[account_id]),
                "plays": dg.MetadataValue.json(list(result.plays)),
                "steps": dg.MetadataValue.int(len(result.steps)),
                "path": dg.MetadataValue.path(str(project.paths.customer_dir / md_path)),
            },
            partition_key=account_id,
        )
    return dg.MaterializeResult()


QBR_GATES = [
    ("duty_of_care", "A red account's QBR needs a materialized playbook (DUTY_PLAYBOOK_MISSING)."),
    ("privacy_signoff", "Contact-level data in a QBR needs the privacy sign-off (PRIVACY_SIGNOFF_REQUIRED)."),
]


def gate_results(
    context: dg.AssetExecutionContext, gates: dict[str, list["qbr.Gate"]]
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """Report each account's gates as partitioned check results.

    Dagster 1.13 resolves an `AssetCheckResult` to the run's single partition only, so a run of
    several accounts logs one evaluation per account and check, then yields each check's
    (empty) output once.
    """
    if context.has_partition_key:
        for (name, _), gate in zip(QBR_GATES, gates[context.partition_key], strict=True):
            yield dg.AssetCheckResult(check_name=name, passed=gate.passed, metadata=_gate_metadata(gate))
        return
    for account_id, account_gates in gates.items():
        for (name, _), gate in zip(QBR_GATES, account_gates, strict=True):
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=context.asset_key,
                    check_name=name,
                    passed=gate.passed,
                    metadata=_gate_metadata(gate),
                    partition=account_id,
                )
            )
    for name, _ in QBR_GATES:
        check_key = dg.AssetCheckKey(context.asset_key, name)
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(check_key))


def _gate_metadata(gate: "qbr.Gate") -> dict[str, dg.MetadataValue]:
    return {"code": dg.MetadataValue.text(gate.code), "message": dg.MetadataValue.text(gate.message)}


@dg.asset(
    group_name="accounts",
    kinds={"markdown", "pptx"},
    owners=OWNERS,
    code_version=source_version(*QBR_MODULES, account_state),
    partitions_def=ACCOUNT_PARTITIONS,
    backfill_policy=ACCOUNT_BACKFILL,
    # Everything it reads, so the graph is the lineage: the lake's score history included.
    deps=[
        customer_360_report,
        health_report,
        signals_report,
        renewals_report,
        playbook,
        lake_key("account_health"),
    ],
    check_specs=[
        dg.AssetCheckSpec(name, asset="qbr_pack", description=text, partitions_def=ACCOUNT_PARTITIONS)
        for name, text in QBR_GATES
    ],
)
def qbr_pack(context: dg.AssetExecutionContext, config: QbrConfig, project: C360Project):
    """Exec-ready QBR pack per account (Markdown and PowerPoint), behind governance gates."""
    from c360_dagster.domain.qbr import pack as qbr

    settings_file = project.paths.config_path("qbr")
    settings = qbr.load_qbr_settings(settings_file)
    health_config = health.load_health_config(project.paths.config_path("health"))  # its windows name the periods
    settings_hash = {"qbr.yaml": sha256_file(settings_file)} if settings_file.exists() else {}
    if settings.template is not None:
        settings_hash["qbr_template.pptx"] = sha256_bytes(settings.template)
    inputs = RunInputs(project, context.partition_keys)
    inputs.refuse_not_live("QBR pack")
    stored = {account_id: stored_playbook(project, account_id) for account_id in inputs.accounts}
    playbook_texts = {account_id: data for account_id, data in stored.items() if data is not None}
    gates = {
        account_id: qbr.check_gates(
            one.health["tier"],
            account_id in playbook_texts,
            config.include_contacts,
            config.privacy_signoff,
            account_id=account_id,
        )
        for account_id, one in inputs.accounts.items()
    }
    yield from gate_results(context, gates)
    # One blocked account blocks the run's batch before anything is written.
    blocked = [gate for account_gates in gates.values() for gate in account_gates if not gate.passed]
    if blocked:
        raise GateError("; ".join(gate.message for gate in blocked), code=blocked[0].code)
    histories = project.lake.score_histories(list(inputs.accounts))
    facts = qbr.view_facts(
        inputs.view,
        list(inputs.accounts),
        as_of=inputs.view.as_of,
        include_contacts=config.include_contacts,
        health_config=health_config,
    )
    # Rendered before taking the write lock, so runs of other batches render at the same time.
    # One account that cannot be rendered does not sink the batch: the others are written and
    # the run then fails naming it.
    packs, failed = {}, {}
    for account_id, one in inputs.accounts.items():
        try:
            packs[account_id] = qbr.render_qbr_pack(
                qbr.build_qbr_context(
                    account=one.account,
                    facts=facts[account_id],
                    health=one.health,
                    signals=one.signals,
                    renewals=one.renewals,
                    playbook=json.loads(playbook_texts[account_id]) if account_id in playbook_texts else None,
                    score_history=histories[account_id],
                    include_contacts=config.include_contacts,
                    as_of=inputs.view.as_of,
                    health_config=health_config,
                    settings=settings,
                ),
                pptx=config.pptx,
            )
        except Exception as exc:
            failed[account_id] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    # The batch's packs go live together, then are signed together (one sync each).
    written: dict[str, dict[str, str]] = {}
    with project.stages.writing():
        with project.stages.batch() as batch:
            for account_id, pack in packs.items():
                written[account_id] = qbr.save_qbr_pack(pack, batch.stage(pack.name))
        project.ledger.record_partition_events(
            context,
            as_of=inputs.view.as_of.isoformat(),
            inputs={
                account_id: {
                    **inputs.input_hashes,
                    **settings_hash,
                    **({"playbook": sha256_bytes(playbook_texts[account_id])} if account_id in playbook_texts else {}),
                }
                for account_id in written
            },
            outputs=written,
            extra={"privacy_signoff": "granted"} if config.include_contacts else None,
        )
        counted = project.metrics.count("c360_qbr_packs_generated", len(packs))
    # Each partition's materialization lists its own account's files only, even in a batch.
    for account_id, files in written.items():
        context.add_asset_metadata(
            {**account_facts(inputs.accounts[account_id]), "files": dg.MetadataValue.json(sorted(files))},
            partition_key=account_id,
        )
    if failed:
        raise C360Error(
            f"QBR_RENDER_FAILED: the QBR pack of {len(failed)} account(s) could not be rendered and was not written "
            f"({len(packs)} other(s) written): " + "; ".join(f"{key}: {why}" for key, why in sorted(failed.items())),
            code="QBR_RENDER_FAILED",
        )
    yield dg.MaterializeResult(metadata={**counted, "path": dg.MetadataValue.path(str(project.paths.customer_dir))})
