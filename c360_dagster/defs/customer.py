"""The account-level chain: Customer 360 → health and signals → renewal forecasts."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl

from c360_dagster.defs.checks import check_result, check_specs
from c360_dagster.defs.inputs import INPUT_SPECS
from c360_dagster.defs.partitions import register_accounts
from c360_dagster.defs.resources import C360Project, frame_path
from c360_dagster.defs.versions import source_version
from c360_dagster.domain.core.io import json_stream, sha256_file, write_chunks_atomic
from c360_dagster.domain.ingest import integrity, loader, view_json
from c360_dagster.domain.ingest import view as view_module
from c360_dagster.domain.ingest.view import active_arr_by_segment
from c360_dagster.domain.renewals import forecast as renewals
from c360_dagster.domain.renewals import playbooks
from c360_dagster.domain.scoring import account_state, health, lifecycle, overrides, quality, signals

OWNERS = ["team:customer-success-ops"]


class LoadConfig(dg.Config):
    """Run config of `customer_360`."""

    as_of: str | None = None  # YYYY-MM-DD; default: derived from the data (docs/inputs.md "Time")


class StageConfig(dg.Config):
    """Run config of a scoring stage: an alternative YAML config and output path."""

    config_path: str | None = None
    out: str | None = None


class RenewalsConfig(dg.Config):
    """Run config of `renewal_forecasts`."""

    config_path: str | None = None
    window_days: int = 120


def _frame_metadata(frame: pl.DataFrame, path: Path) -> dict:
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
        ),
        "path": dg.MetadataValue.path(str(path)),
    }


@dg.asset(
    group_name="customer",
    kinds={"polars", "parquet", "json"},
    owners=OWNERS,
    code_version=source_version(loader, integrity, view_json, view_module),
    deps=INPUT_SPECS,
    check_specs=[dg.AssetCheckSpec(name, asset="customer_360", description=text) for name, _, text in integrity.CHECKS],
)
def customer_360(context: dg.AssetExecutionContext, config: LoadConfig, project: C360Project) -> dg.MaterializeResult:
    """Validated, normalized Customer 360 view of the exported customer data."""
    as_of = dt.date.fromisoformat(config.as_of) if config.as_of else None
    view = loader.read_customer_360(Path(project.fixtures_dir), as_of=as_of)
    checks = integrity.run_integrity_checks(view, contract_enforced=True)
    with project.writing():
        with project.stage(view_module.STAGE) as out:
            json_hash = out.write_chunks("360.json", view_json.customer_360_json_chunks(view, checks))
            view.save(out)
        view_hash = out.manifest_hash
        project.record_event(
            context,
            as_of=view.as_of.isoformat(),
            inputs=dict(sorted(view.source_hashes.items())),
            outputs={"360.json": json_hash, "view": view_hash},
        )
        counted = project.count("c360_accounts_loaded", view.accounts.height)
    return dg.MaterializeResult(
        metadata={
            **counted,
            "as_of": view.as_of.isoformat(),
            "counts": dg.MetadataValue.json(view.counts()),
            "active_arr_by_segment": dg.MetadataValue.json(active_arr_by_segment(view.accounts, view.subs)),
            "warnings": dg.MetadataValue.json(list(view.warnings)),
            "path": dg.MetadataValue.path(str(project.customer_dir / "360.json")),
            "dagster/row_count": view.accounts.height,
        },
        check_results=[check_result(found) for found in checks],
        data_version=dg.DataVersion(view_hash),
    )


def _count_table(label: str, counts: dict[str, int]) -> dg.TableMetadataValue:
    """A small two-column table (e.g. tier → accounts) for the asset's page in the UI."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({label: key, "accounts": count}) for key, count in counts.items()],
        schema=dg.TableSchema(columns=[dg.TableColumn(label, "string"), dg.TableColumn("accounts", "int")]),
    )


def _config_file(project: C360Project, override: str | None, name: str) -> Path:
    return Path(override) if override else project.config_path(name)


def _write_stage(
    project: C360Project, stage: str, out: str | None, json_chunks: Iterator[bytes], frame: pl.DataFrame
) -> tuple[str, Path, str]:
    """Write a scoring stage's generation: `<stage>.json` (or the JSON at `out`, outside it) and its frame.

    Returns the JSON's hash, where it went and the frame's hash.
    """
    json_path = Path(out) if out else project.customer_dir / f"{stage}.json"
    with project.stage(stage) as stored:
        json_hash = (
            write_chunks_atomic(json_path, json_chunks) if out else stored.write_chunks(json_path.name, json_chunks)
        )
        frame_hash = stored.write_frame(frame_path(stage), frame)
    return json_hash, json_path, frame_hash


def _file_hashes(*paths: Path) -> dict[str, str]:
    """Content hashes of the config files a stage read, by file name (absent optional ones skipped)."""
    return {path.name: sha256_file(path) for path in paths if path.exists()}


@dg.asset(
    group_name="customer",
    kinds={"polars", "json"},
    owners=OWNERS,
    code_version=source_version(health, account_state, overrides),
    deps=[customer_360],
    check_specs=check_specs("account_health", quality.HEALTH_RULES),
)
def account_health(
    context: dg.AssetExecutionContext, config: StageConfig, project: C360Project
) -> dg.MaterializeResult:
    """Rule-based health score per account: five weighted components with their evidence."""
    config_file = _config_file(project, config.config_path, "health")
    health_config = health.load_health_config(config_file)
    view = project.open_view()
    computed = health.score_health(view, health_config)
    overrides_file = project.config_path("overrides")
    outcome = overrides.apply_overrides(
        computed,
        overrides.load_overrides(overrides_file) if overrides_file.exists() else (),
        view.as_of,
        health_config.red_below,
        health_config.green_from,
        str(overrides_file),
    )
    frame = outcome.frame
    summary = health.health_summary(frame)
    override_report = {"applied": len(outcome.applied), "warnings": list(outcome.warnings)}
    header = {
        "as_of": view.as_of.isoformat(),
        "config_hash": frame["config_hash"][0] if frame.height else None,
        "summary": summary,
        "overrides": override_report,
    }
    with project.writing():
        json_hash, out, frame_hash = _write_stage(
            project, "health", config.out, json_stream(header, "accounts", health.health_json_entries(frame)), frame
        )
        project.record_event(
            context,
            as_of=view.as_of.isoformat(),
            inputs={"customer_360": view.stored_hash, **_file_hashes(config_file, overrides_file)},
            outputs={"health.json": json_hash, "health.parquet": frame_hash},
            config_hash=health_config.config_hash,
            extra={"overrides": list(outcome.applied)} if outcome.applied else None,
        )
        counted = project.count("c360_accounts_scored", frame.height)
    return dg.MaterializeResult(
        metadata={
            **counted,
            **_frame_metadata(frame, out),
            "as_of": view.as_of.isoformat(),
            # Every account once: the tiers of scored accounts, then the unscored ones by status.
            "tier_distribution": _count_table(
                "tier", {**summary["tiers"], **{s: n for s, n in summary["status"].items() if s != health.SCORED}}
            ),
            "lifecycle_distribution": _count_table("lifecycle", summary["lifecycle"]),
            "summary": dg.MetadataValue.json(summary),
            "overrides": dg.MetadataValue.json(override_report),
        },
        # The checks judge the scorecard's own result; an override is a person's call on top.
        check_results=[
            check_result(found)
            for found in quality.health_findings(computed, view.accounts["account_id"], health.COMPONENTS)
        ],
        data_version=dg.DataVersion(frame_hash),
    )


@dg.asset(
    group_name="customer",
    kinds={"polars", "json"},
    owners=OWNERS,
    code_version=source_version(signals, account_state, lifecycle),
    deps=[customer_360],
    check_specs=check_specs("customer_signals", quality.SIGNAL_RULES),
)
def customer_signals(
    context: dg.AssetExecutionContext, config: StageConfig, project: C360Project
) -> dg.MaterializeResult:
    """Churn-risk and expansion signals per account, each with the evidence that tripped it."""
    config_file = _config_file(project, config.config_path, "signals")
    signals_config = signals.load_signals_config(config_file)
    # The account lifecycle (health.yaml's `lifecycle`) decides who is a customer today.
    health_file = project.config_path("health")
    lifecycle_config = health.load_health_config(health_file).lifecycle
    view = project.open_view()
    snoozes_file = project.config_path("snoozes")
    tracked = lifecycle.signal_lifecycle(
        signals.detect_signals(view, signals_config, lifecycle_config),
        project.lake,
        view.as_of,
        lifecycle.load_snoozes(snoozes_file) if snoozes_file.exists() else (),
        view.accounts["account_id"],
        str(snoozes_file),
    )
    frame = tracked.frame
    counts = {**lifecycle.lifecycle_summary(tracked), "warnings": list(tracked.warnings)}
    header = {
        "as_of": view.as_of.isoformat(),
        "lifecycle": counts,
        "resolved": lifecycle.resolved_records(tracked.resolved),
    }
    with project.writing():
        json_hash, out, frame_hash = _write_stage(
            project, "signals", config.out, json_stream(header, "accounts", signals.signal_json_entries(frame)), frame
        )
        project.record_event(
            context,
            as_of=view.as_of.isoformat(),
            inputs={"customer_360": view.stored_hash, **_file_hashes(config_file, health_file, snoozes_file)},
            outputs={"signals.json": json_hash, "signals.parquet": frame_hash},
            config_hash=signals_config.config_hash,
        )
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(frame, out),
            "as_of": view.as_of.isoformat(),
            "signal_counts": dg.MetadataValue.json(signals.signals_summary(frame)),
            "lifecycle": dg.MetadataValue.json(counts),
        },
        check_results=[check_result(found) for found in quality.signal_findings(frame, set(signals.SIGNAL_CATALOG))],
        data_version=dg.DataVersion(frame_hash),
    )


@dg.asset(
    group_name="customer",
    kinds={"polars", "json", "markdown"},
    owners=OWNERS,
    code_version=source_version(renewals, playbooks),
    deps=[customer_360, account_health, customer_signals],
)
def renewal_forecasts(
    context: dg.AssetExecutionContext, config: RenewalsConfig, project: C360Project
) -> dg.MaterializeResult:
    """Renewal forecast for every active subscription renewing within the window."""
    config_file = _config_file(project, config.config_path, "renewals")
    renewals_config = renewals.load_renewals_config(config_file)
    view = project.open_view()
    health_frame, health_hash = project.frame_and_hash("health")
    signals_frame, signals_hash = project.frame_and_hash("signals")
    frame = renewals.forecast_renewals(
        view, health_frame, signals_frame, renewals_config, window_days=config.window_days
    )
    summary = renewals.renewal_summary(frame, renewals_config)
    summary_md = renewals.render_renewal_summary_md(summary, view.as_of, config.window_days)
    json_name = f"renewals_{view.as_of:%Y%m}.json"
    out = project.customer_dir / json_name
    with project.writing():
        with project.stage("renewals") as stage:
            json_hash = stage.write_chunks(
                json_name, json_stream({"summary": summary}, "renewals", renewals.renewal_json_items(frame), array=True)
            )
            md_hash = stage.write_text("summary.md", summary_md)
            frame_hash = stage.write_frame(frame_path("renewals"), frame)
        project.record_event(
            context,
            as_of=view.as_of.isoformat(),
            inputs={
                "customer_360": view.stored_hash,
                "account_health": health_hash,
                "customer_signals": signals_hash,
                "renewals.yaml": sha256_file(config_file),
            },
            outputs={json_name: json_hash, "summary.md": md_hash, "renewals.parquet": frame_hash},
            config_hash=renewals_config.config_hash,
        )
    # Only the accounts a team acts on become `account` partitions here; any other one does
    # when a user asks for it. Ids are only ever added: an account that left the set keeps its
    # partition and its packs.
    acted_on = renewals.acted_on_accounts(health_frame, frame)
    registered = register_accounts(context.instance, acted_on)
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(frame, out),
            "as_of": view.as_of.isoformat(),
            "window_days": config.window_days,
            "accounts_acted_on": len(acted_on),
            "accounts_registered": registered,
            "forecast": dg.MetadataValue.json(summary),
            "summary": dg.MetadataValue.md(summary_md),
        },
        data_version=dg.DataVersion(frame_hash),
    )
