"""The account-level chain: Customer 360 → health and signals → renewal forecasts."""

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl

from c360_dagster.defs.checks import check_result, check_specs
from c360_dagster.defs.inputs import INPUT_SPECS
from c360_dagster.defs.partitions import register_accounts
from c360_dagster.defs.resources import C360Project
from c360_dagster.defs.shards import ONE_SHARD, run_shard
from c360_dagster.defs.versions import source_version
from c360_dagster.domain.core.errors import ContractError
from c360_dagster.domain.core.io import json_stream, sha256_file, write_chunks_atomic
from c360_dagster.domain.core.stages import StageReader, StageWriter, frame_path
from c360_dagster.domain.governance import lake_tables
from c360_dagster.domain.governance.contracts import load_contract
from c360_dagster.domain.ingest import integrity, loader, shards, view_json
from c360_dagster.domain.ingest import view as view_module
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.view import ACTIVE_ARR_COLUMNS, active_arr_by_segment
from c360_dagster.domain.renewals import forecast as renewals
from c360_dagster.domain.renewals import playbooks
from c360_dagster.domain.scoring import account_state, health, lifecycle, overrides, quality, signals
from c360_dagster.domain.scoring.quality import Finding

OWNERS = ["team:customer-success-ops"]


class LoadConfig(dg.Config):
    """Run config of `customer_360`."""

    as_of: str | None = None  # YYYY-MM-DD; default: derived from the data (docs/inputs.md "Time")


class StageConfig(dg.Config):
    """Run config of a scoring stage: an alternative YAML config."""

    config_path: str | None = None


class RenewalsConfig(dg.Config):
    """Run config of `renewal_forecasts`."""

    config_path: str | None = None
    window_days: int = 120


# The lake tables whose contracts describe a stage frame's columns (renewals' `tier_reason` is health's).
FRAME_CONTRACTS = {
    "health": ("account_health",),
    "signals": ("customer_signals",),
    "renewals": ("renewal_forecasts", "account_health"),
}


def _frame_metadata(project: C360Project, stage: str, schema: pl.Schema, rows: int, path: Path) -> dict:
    """A stage frame's row count, columns (with what each means, for the UI) and where it went."""
    try:
        contracts = [load_contract(table, project.paths.contracts_dir) for table in FRAME_CONTRACTS[stage]]
    except ContractError:
        contracts = []  # the lake's step refuses a broken contract; the frame's columns go without words
    words = lake_tables.frame_column_words(schema.names(), *contracts)
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype), description=words.get(name)) for name, dtype in schema.items()]
        ),
        "path": dg.MetadataValue.path(str(path)),
    }


@dg.asset(
    group_name="customer",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    code_version=source_version(loader, shards),
    deps=INPUT_SPECS,
)
def customer_inputs(
    context: dg.AssetExecutionContext, config: LoadConfig, project: C360Project
) -> dg.MaterializeResult:
    """The input files read and validated once, `as_of` derived over all of them, split into each shard's Parquet."""
    as_of = dt.date.fromisoformat(config.as_of) if config.as_of else None
    inputs = loader.ValidatedInputs(Path(project.fixtures_dir), as_of=as_of, keep=ACTIVE_ARR_COLUMNS)
    with project.stages.writing():
        # A defect found part-way, or a config entry naming no account of the book, leaves the
        # split's generation unswitched: nothing is written.
        with project.stages.stage(shards.SPLIT_STAGE) as out:
            manifest = shards.save_split(out, inputs, project.paths.shards)
            check_config_entries(project, lambda: inputs.kept["accounts"]["account_id"])
        project.ledger.record_event(
            context,
            as_of=manifest["as_of"],
            inputs=inputs.source_hashes,
            outputs={"inputs": out.manifest_hash},
        )
        counted = project.metrics.count("c360_accounts_loaded", inputs.counts["accounts"])
    return dg.MaterializeResult(
        metadata={
            **counted,
            "as_of": manifest["as_of"],
            "counts": dg.MetadataValue.json(inputs.counts),
            "shards": manifest["shards"],
            "shard_counts": dg.MetadataValue.json(manifest["shard_counts"]),
            "active_arr_by_segment": dg.MetadataValue.json(
                active_arr_by_segment(inputs.kept["accounts"], inputs.kept["subs"])
            ),
            "warnings": dg.MetadataValue.json(list(inputs.warnings)),
            "dagster/row_count": inputs.counts["accounts"],
        },
        data_version=dg.DataVersion(out.manifest_hash),
    )


@dg.asset(
    group_name="customer",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    code_version=source_version(integrity, view_module, shards),
    partitions_def=ONE_SHARD,
    deps=[customer_inputs],
    check_specs=[dg.AssetCheckSpec(name, asset="customer_360", description=text) for name, _, text in integrity.CHECKS],
)
def customer_360(context: dg.AssetExecutionContext, project: C360Project) -> dg.MaterializeResult:
    """Validated, normalized Customer 360 view of one shard's accounts."""
    shard, count = run_shard(context)
    split = project.stages.stored(shards.SPLIT_STAGE)
    with project.stages.writing(str(shard)):
        with project.stages.stage(view_module.STAGE, shard) as out:
            view, counts = shards.save_view(out, split, shard, count, tables=integrity.WARN_TABLES)
            checks = integrity.run_integrity_checks(view, contract_enforced=True)
            shards.save_record(out, split.manifest_hash, checks=[dataclasses.asdict(found) for found in checks])
        project.ledger.record_event(
            context,
            shard=str(shard),
            as_of=view.as_of.isoformat(),
            inputs={"customer_inputs": split.manifest_hash},
            outputs={"view": out.manifest_hash},
        )
    return dg.MaterializeResult(
        metadata={
            "as_of": view.as_of.isoformat(),
            "counts": dg.MetadataValue.json(counts),
            "path": dg.MetadataValue.path(str(project.stages.root(shard) / view_module.VIEW_DIR)),
            "dagster/row_count": view.accounts.height,
        },
        check_results=[check_result(found) for found in checks],
        data_version=dg.DataVersion(out.manifest_hash),
    )


def _split_of_view(project: C360Project, shard: int) -> str:
    """The split a shard's live 360 view was made from (what the stages made from that view record)."""
    return shards.read_record(project.stages.stored(view_module.STAGE, shard))["split"]


def _count_table(label: str, counts: dict[str, int]) -> dg.TableMetadataValue:
    """A small two-column table (e.g. tier → accounts) for the asset's page in the UI."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({label: key, "accounts": count}) for key, count in counts.items()],
        schema=dg.TableSchema(columns=[dg.TableColumn(label, "string"), dg.TableColumn("accounts", "int")]),
    )


def _config_file(project: C360Project, override: str | None, name: str) -> Path:
    return Path(override) if override else project.paths.config_path(name)


def _file_hashes(*paths: Path) -> dict[str, str]:
    """Content hashes of the config files a stage read, by file name (absent optional ones skipped)."""
    return {path.name: sha256_file(path) for path in paths if path.exists()}


@dg.asset(
    group_name="customer",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    code_version=source_version(health, account_state, overrides, shards),
    partitions_def=ONE_SHARD,
    deps=[customer_360],
    check_specs=check_specs("account_health", quality.HEALTH_RULES),
)
def account_health(
    context: dg.AssetExecutionContext, config: StageConfig, project: C360Project
) -> dg.MaterializeResult:
    """Rule-based health score per account of one shard: five weighted components with their evidence."""
    shard, count = run_shard(context)
    config_file = _config_file(project, config.config_path, "health")
    health_config = health.load_health_config(config_file)
    view = project.stages.open_view(shard=shard, tables=health.VIEW_TABLES)
    as_of, view_hash, account_ids = view.as_of, view.stored_hash, view.accounts["account_id"]
    measures = health.health_measures(view, health_config)
    del view  # nothing past the measures reads its tables: scoring reuses their memory (1.7 GB at 1M)
    computed = health.score_measures(measures, health_config, as_of)
    overrides_file = project.paths.config_path("overrides")
    outcome = overrides.apply_overrides(
        computed,
        _in_shard(_overrides(project), shard, count),
        as_of,
        health_config.red_below,
        health_config.green_from,
        str(overrides_file),
    )
    frame = outcome.frame
    with project.stages.writing(str(shard)):
        with project.stages.stage("health", shard) as out:
            frame_hash = out.write_frame(frame_path("health"), frame)
            shards.save_record(out, _split_of_view(project, shard))
        project.ledger.record_event(
            context,
            shard=str(shard),
            as_of=as_of.isoformat(),
            inputs={"customer_360": view_hash, **_file_hashes(config_file, overrides_file)},
            outputs={"health.parquet": frame_hash},
            config_hash=health_config.config_hash,
            extra={"overrides": list(outcome.applied)} if outcome.applied else None,
        )
        counted = project.metrics.count("c360_accounts_scored", frame.filter(pl.col("status") == health.SCORED).height)
    return dg.MaterializeResult(
        metadata={
            **counted,
            **_frame_metadata(
                project, "health", frame.schema, frame.height, project.stages.root(shard) / frame_path("health")
            ),
            "as_of": as_of.isoformat(),
            "summary": dg.MetadataValue.json(health.health_summary(frame)),
        },
        # The checks judge the scorecard's own result; an override is a person's call on top.
        check_results=[
            check_result(found) for found in quality.health_findings(computed, account_ids, health.COMPONENTS)
        ],
        data_version=dg.DataVersion(frame_hash),
    )


def _overrides(project: C360Project) -> tuple[overrides.Override, ...]:
    path = project.paths.config_path("overrides")
    return overrides.load_overrides(path) if path.exists() else ()


def _snoozes(project: C360Project) -> tuple[lifecycle.Snooze, ...]:
    path = project.paths.config_path("snoozes")
    return lifecycle.load_snoozes(path) if path.exists() else ()


def check_config_entries(project: C360Project, book: Callable[[], pl.Series]) -> None:
    """Every override and snooze names an account of the whole book (`book()`, read only when
    there are entries). Checked once before any shard writes: an entry only one shard's accounts
    would trip then stops the command with nothing of the run written."""
    entries = {"overrides": _overrides(project), "snoozes": _snoozes(project)}
    if any(entries.values()):
        account_ids = book()
        for name, found in entries.items():
            overrides.check_accounts(found, account_ids, str(project.paths.config_path(name)))


# The configs each asset reads: its own first (`--config` names another file: the op's
# `config_path`), then the project's others. `check_configs` loads them before any run.
CONFIGS_READ = {
    "account_health": ("health",),
    "customer_signals": ("signals", "health"),  # health.yaml's `lifecycle`
    "renewal_forecasts": ("renewals",),
    "report/renewal_forecasts_report": ("renewals",),
}
CONFIG_LOADERS: dict[str, Callable[[Path], object]] = {
    "health": health.load_health_config,
    "signals": signals.load_signals_config,
    "renewals": renewals.load_renewals_config,
}


def check_configs(project: C360Project, assets: list[str], ops: dict) -> None:
    """Load (and so validate) every config file these assets will read, once, before any of
    them runs: a bad file stops the command before the split or a shard writes anything."""
    files: dict[Path, Callable[[Path], object]] = {}
    for asset in assets:
        op_config = ops.get(dg.AssetKey.from_user_string(asset).to_python_identifier(), {})
        for position, name in enumerate(CONFIGS_READ.get(asset, ())):
            own = op_config.get("config_path") if position == 0 else None
            files[_config_file(project, own, name)] = CONFIG_LOADERS[name]
    for path, load in sorted(files.items()):
        load(path)


def book_account_ids(project: C360Project, count: int) -> pl.Series:
    """Every account id of the live view, over the `count` shards' views."""
    return pl.concat([project.stages.view_table("accounts", shard=k)[0]["account_id"] for k in range(count)])


def _in_shard(entries, shard: int, count: int) -> tuple:
    """The config entries (overrides, snoozes) about accounts of this shard; one naming an unknown
    account goes to that id's shard, which reports it."""
    return tuple(entry for entry in entries if shards.shard_of(entry.account, count) == shard)


@dg.asset(
    group_name="customer",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    code_version=source_version(signals, account_state, lifecycle, shards),
    partitions_def=ONE_SHARD,
    deps=[customer_360],
    check_specs=check_specs("customer_signals", quality.SIGNAL_RULES),
)
def customer_signals(
    context: dg.AssetExecutionContext, config: StageConfig, project: C360Project
) -> dg.MaterializeResult:
    """Churn-risk and expansion signals per account of one shard, each with the evidence that tripped it."""
    shard, count = run_shard(context)
    config_file = _config_file(project, config.config_path, "signals")
    signals_config = signals.load_signals_config(config_file)
    # The account lifecycle (health.yaml's `lifecycle`) decides who is a customer today.
    health_file = project.paths.config_path("health")
    lifecycle_config = health.load_health_config(health_file).lifecycle
    view = project.stages.open_view(shard=shard, tables=signals.VIEW_TABLES)
    snoozes_file = project.paths.config_path("snoozes")
    tracked = lifecycle.signal_lifecycle(
        signals.detect_signals(view, signals_config, lifecycle_config),
        project.lake,
        view.as_of,
        _in_shard(_snoozes(project), shard, count),
        view.accounts["account_id"],
        str(snoozes_file),
        shard=shard,
        shards=count,
    )
    frame = tracked.frame
    with project.stages.writing(str(shard)):
        with project.stages.stage("signals", shard) as out:
            frame_hash = out.write_frame(frame_path("signals"), frame)
            out.write_frame(RESOLVED_FRAME, tracked.resolved)
            out.write_json(LIFECYCLE_JSON, {"previous_as_of": _iso(tracked.previous_as_of)})
            shards.save_record(out, _split_of_view(project, shard))
        project.ledger.record_event(
            context,
            shard=str(shard),
            as_of=view.as_of.isoformat(),
            inputs={"customer_360": view.stored_hash, **_file_hashes(config_file, health_file, snoozes_file)},
            outputs={"signals.parquet": frame_hash, "signals": out.manifest_hash},
            config_hash=signals_config.config_hash,
        )
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(
                project, "signals", frame.schema, frame.height, project.stages.root(shard) / frame_path("signals")
            ),
            "as_of": view.as_of.isoformat(),
            "signal_counts": dg.MetadataValue.json(signals.signals_summary(frame)),
        },
        check_results=[check_result(found) for found in quality.signal_findings(frame, set(signals.SIGNAL_CATALOG))],
        data_version=dg.DataVersion(frame_hash),
    )


# What a shard's signals stage keeps beside its frame, for the roll-up's lifecycle section.
RESOLVED_FRAME = "frames/signals_resolved.parquet"
LIFECYCLE_JSON = "frames/signals_lifecycle.json"


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


@dg.asset(
    group_name="customer",
    kinds={"polars", "parquet"},
    owners=OWNERS,
    code_version=source_version(renewals, playbooks),
    partitions_def=ONE_SHARD,
    deps=[customer_360, account_health, customer_signals],
)
def renewal_forecasts(
    context: dg.AssetExecutionContext, config: RenewalsConfig, project: C360Project
) -> dg.MaterializeResult:
    """Renewal forecast for every active subscription of one shard renewing within the window."""
    shard, _ = run_shard(context)
    config_file = _config_file(project, config.config_path, "renewals")
    renewals_config = renewals.load_renewals_config(config_file)
    view = project.stages.open_view(shard=shard, tables=renewals.VIEW_TABLES)
    health_frame, health_hash = project.stages.frame_and_hash("health", shard=shard)
    signals_frame, signals_hash = project.stages.frame_and_hash("signals", shard=shard)
    frame = renewals.forecast_renewals(
        view, health_frame, signals_frame, renewals_config, window_days=config.window_days
    )
    with project.stages.writing(str(shard)):
        with project.stages.stage("renewals", shard) as out:
            frame_hash = out.write_frame(frame_path("renewals"), frame)
            shards.save_record(out, _split_of_view(project, shard))
        project.ledger.record_event(
            context,
            shard=str(shard),
            as_of=view.as_of.isoformat(),
            inputs={
                "customer_360": view.stored_hash,
                "account_health": health_hash,
                "customer_signals": signals_hash,
                "renewals.yaml": sha256_file(config_file),
            },
            outputs={"renewals.parquet": frame_hash},
            config_hash=renewals_config.config_hash,
        )
    # Only the accounts a team acts on become `account` partitions here; any other one does
    # when a user asks for it. Ids are only ever added: an account that left the set keeps its
    # partition and its packs.
    acted_on = renewals.acted_on_accounts(health_frame, frame)
    registered = register_accounts(context.instance, acted_on)
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(
                project, "renewals", frame.schema, frame.height, project.stages.root(shard) / frame_path("renewals")
            ),
            "as_of": view.as_of.isoformat(),
            "window_days": config.window_days,
            "accounts_acted_on": len(acted_on),
            "accounts_registered": registered,
        },
        data_version=dg.DataVersion(frame_hash),
    )


# --- roll-ups: today's documents from the shards' frames ------------------------------------
#
# Each checks that every shard's output was made from the live split, then merges the shards'
# sorted frames into the whole book's frame, in the order one unsplit run sorts it, with
# Polars' streaming merge (`shards.write_merged`; one shard's frame is copied: the shard wrote
# it as the merge writes the same rows), and writes its document from that frame batch by
# batch, with the same code for any N: the bytes are the same for any N, and no process holds
# the whole book. A summary (sums of floats) is computed
# on the columns it needs of the whole merged frame, read back in one piece, never added up
# from the shards'.

REPORTS = "reports"


def report_key(asset: str) -> dg.AssetKey:
    """The roll-up of a shard asset: `report/<asset>_report` (the graph names a node by its key's last part)."""
    return dg.AssetKey(["report", f"{asset}_report"])


class ReportConfig(dg.Config):
    """Run config of a roll-up that writes `<stage>.json`: another path for it."""

    out: str | None = None


@dataclasses.dataclass(frozen=True)
class ShardOutputs:
    """The live split and every shard's live generation of one stage, each checked to be made from that split."""

    split: dict  # the split's manifest: shards, as_of, counts, source hashes, warnings
    stored: list[StageReader]  # shard k's generation at index k

    @property
    def count(self) -> int:
        return self.split["shards"]

    @property
    def as_of(self) -> str:
        return self.split["as_of"]

    def merge_into(self, out: StageWriter, path: str, keys: list[str]) -> tuple[pl.Schema, dict[str, str]]:
        """Write the shards' frames at `path` (verified) into `out` at `path` as the book's one
        frame, merged by `keys`; its schema and, by shard, the hash of the bytes read."""
        schema = shards.write_merged(out, path, [one.read_bytes(path) for one in self.stored], keys)
        return schema, {f"{one.stage}[{shard}]": one.files[path] for shard, one in enumerate(self.stored)}


def refuse_views_of_another_split(project: C360Project, count: int) -> None:
    """Refused (SHARD_STALE) unless each of the `count` shards' views was made from the live split."""
    split = project.stages.stored(shards.SPLIT_STAGE)
    views = [project.stages.stored(view_module.STAGE, shard) for shard in range(count)]
    shards.refuse_other_splits(views, split.manifest_hash)


def _shard_outputs(project: C360Project, stage: str) -> ShardOutputs:
    """What a roll-up of `stage` reads; refused (SHARD_STALE) when a shard's output is from another split."""
    split = project.stages.stored(shards.SPLIT_STAGE)
    manifest = shards.split_manifest(split)
    stored = [project.stages.stored(stage, shard) for shard in range(manifest["shards"])]
    shards.refuse_other_splits(stored, split.manifest_hash)
    return ShardOutputs(manifest, stored)


def _columns(out: StageWriter, path: str, schema: pl.Schema, names: tuple[str, ...]) -> pl.DataFrame:
    """Those of `names` the merged frame has, read back whole (in one chunk, as a sort leaves a frame)."""
    return pl.read_parquet(out.written(path), columns=[name for name in names if name in schema]).rechunk()


def _write_json(
    project: C360Project, out: StageWriter, stage: str, elsewhere: str | None, chunks: Iterator[bytes]
) -> tuple[str, Path]:
    """`<stage>.json` into the generation, or to `elsewhere` (outside it); its hash and where it went."""
    if elsewhere:
        return write_chunks_atomic(Path(elsewhere), chunks), Path(elsewhere)
    return out.write_chunks(f"{stage}.json", chunks), project.paths.customer_dir / f"{stage}.json"


@dg.asset(
    key=report_key("customer_360"),
    group_name=REPORTS,
    kinds={"polars", "parquet", "json"},
    owners=OWNERS,
    code_version=source_version(view_json, view_module, integrity, shards),
    deps=[customer_360],
)
def customer_360_report(context: dg.AssetExecutionContext, project: C360Project) -> dg.MaterializeResult:
    """`360.json` and the whole book's view (`frames/360`), rolled up from the shards' views."""
    outputs = _shard_outputs(project, view_module.STAGE)
    split = outputs.split
    # Each shard's customer_360 ran the checks on its accounts; their findings are merged, not re-run.
    checks = integrity.merge_findings(
        [[Finding(**found) for found in shards.read_record(one)["checks"]] for one in outputs.stored]
    )
    with project.stages.writing():
        with project.stages.stage(view_module.STAGE) as out:
            for name in sorted(ENTITIES):
                outputs.merge_into(out, view_module.table_path(name), list(ENTITIES[name].key))
            view_module.save_manifest(out, split["as_of"], split["counts"], split["source_hashes"], split["warnings"])
            header = view_json.document_header(
                split["as_of"], split["counts"], split["source_hashes"], split["warnings"], checks
            )
            tables = {name: pl.scan_parquet(out.written(view_module.table_path(name))) for name in ENTITIES}
            json_hash = out.write_chunks("360.json", view_json.json_chunks(header, tables))
        project.ledger.record_event(
            context,
            rollup_of=outputs.count,
            as_of=split["as_of"],
            inputs={f"customer_360[{shard}]": one.manifest_hash for shard, one in enumerate(outputs.stored)},
            outputs={"360.json": json_hash, "view": out.manifest_hash},
        )
    return dg.MaterializeResult(
        metadata={
            "as_of": split["as_of"],
            "counts": dg.MetadataValue.json(split["counts"]),
            "path": dg.MetadataValue.path(str(project.paths.customer_dir / "360.json")),
            "dagster/row_count": split["counts"]["accounts"],
        },
        data_version=dg.DataVersion(out.manifest_hash),
    )


# What health.json's header and the asset's metadata read of the whole book's health frame.
HEALTH_HEADER_COLUMNS = (
    "account_id",
    "score",
    "tier",
    "tier_reason",
    "status",
    "lifecycle",
    "config_hash",
    "computed_score",
    "computed_tier",
    "override_reason",
    "override_author",
    "override_expires_on",
)


@dg.asset(
    key=report_key("account_health"),
    group_name=REPORTS,
    kinds={"polars", "json"},
    owners=OWNERS,
    code_version=source_version(health, overrides, shards),
    deps=[account_health],
)
def health_report(
    context: dg.AssetExecutionContext, config: ReportConfig, project: C360Project
) -> dg.MaterializeResult:
    """`health.json` and the whole book's health frame, rolled up from the shards'."""
    outputs = _shard_outputs(project, "health")
    as_of = dt.date.fromisoformat(outputs.as_of)
    path = frame_path("health")
    overrides_file = project.paths.config_path("overrides")
    with project.stages.writing():
        with project.stages.stage("health") as out:
            schema, inputs = outputs.merge_into(out, path, ["account_id"])
            frame_hash = out.hashes[path]
            header_frame = _columns(out, path, schema, HEALTH_HEADER_COLUMNS)
            summary = health.health_summary(header_frame)
            applied = overrides.applied_overrides(header_frame)
            override_report = {
                "applied": len(applied),
                "warnings": list(overrides.override_warnings(_overrides(project), as_of, header_frame)),
            }
            config_hash = header_frame["config_hash"][0] if header_frame.height else None
            header = {
                "as_of": outputs.as_of,
                "config_hash": config_hash,
                "summary": summary,
                "overrides": override_report,
            }
            entries = (
                chunk
                for batch in shards.parquet_batches(out.written(path))
                for chunk in health.health_json_entries(batch)
            )
            json_hash, json_path = _write_json(
                project, out, "health", config.out, json_stream(header, "accounts", entries)
            )
        project.ledger.record_event(
            context,
            rollup_of=outputs.count,
            as_of=outputs.as_of,
            inputs={**inputs, **_file_hashes(overrides_file)},
            outputs={"health.json": json_hash, "health.parquet": frame_hash},
            config_hash=config_hash,
            extra={"overrides": list(applied)} if applied else None,
        )
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(project, "health", schema, header_frame.height, json_path),
            "as_of": outputs.as_of,
            # Tiers are of scored accounts only; the accounts without a score are counted apart, by why.
            "tier_distribution": _count_table("tier", summary["tiers"]),
            # Amber only because too little of the scorecard's weight is measured (`tier_reason`).
            "held_at_amber": dg.MetadataValue.int(summary["held_at_amber"]),
            "unscored_accounts": _count_table(
                "not scored because",
                {health.STATUS_WORDS[s]: n for s, n in summary["status"].items() if s != health.SCORED},
            ),
            "lifecycle_distribution": _count_table("lifecycle", summary["lifecycle"]),
            "summary": dg.MetadataValue.json(summary),
            "overrides": dg.MetadataValue.json(override_report),
        },
        data_version=dg.DataVersion(frame_hash),
    )


@dg.asset(
    key=report_key("customer_signals"),
    group_name=REPORTS,
    kinds={"polars", "json"},
    owners=OWNERS,
    code_version=source_version(signals, lifecycle, shards),
    deps=[customer_signals],
)
def signals_report(
    context: dg.AssetExecutionContext, config: ReportConfig, project: C360Project
) -> dg.MaterializeResult:
    """`signals.json` and the whole book's signals frame, rolled up from the shards'."""
    outputs = _shard_outputs(project, "signals")
    as_of = dt.date.fromisoformat(outputs.as_of)
    path = frame_path("signals")
    previous = outputs.stored[0].read_json(LIFECYCLE_JSON)["previous_as_of"]
    # The resolved signals (a small part of the book) are merged whole: signals.json's header lists them.
    resolved = shards.merge_frames(
        [one.read_frame(RESOLVED_FRAME) for one in outputs.stored], ["account_id", "code", "signal_id"]
    )
    with project.stages.writing():
        with project.stages.stage("signals") as out:
            schema, inputs = outputs.merge_into(out, path, ["account_id", "code"])
            frame_hash = out.hashes[path]
            tracked = lifecycle.Lifecycle(
                frame=_columns(out, path, schema, ("account_id", "code", "status", "snoozed_until")),
                resolved=resolved,
                previous_as_of=dt.date.fromisoformat(previous) if previous else None,
                warnings=lifecycle.snooze_warnings(_snoozes(project), as_of),
            )
            counts = {**lifecycle.lifecycle_summary(tracked), "warnings": list(tracked.warnings)}
            header = {"as_of": outputs.as_of, "lifecycle": counts, "resolved": lifecycle.resolved_records(resolved)}
            # Batches end between accounts: an account's signals are one entry.
            batches = shards.whole_groups(shards.parquet_batches(out.written(path)), ["account_id"])
            entries = (chunk for batch in batches for chunk in signals.signal_json_entries(batch))
            json_hash, json_path = _write_json(
                project, out, "signals", config.out, json_stream(header, "accounts", entries)
            )
        project.ledger.record_event(
            context,
            rollup_of=outputs.count,
            as_of=outputs.as_of,
            inputs={**inputs, **_file_hashes(project.paths.config_path("snoozes"))},
            outputs={"signals.json": json_hash, "signals.parquet": frame_hash},
        )
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(project, "signals", schema, tracked.frame.height, json_path),
            "as_of": outputs.as_of,
            "signal_counts": dg.MetadataValue.json(signals.signals_summary(tracked.frame)),
            "lifecycle": dg.MetadataValue.json(counts),
        },
        data_version=dg.DataVersion(frame_hash),
    )


@dg.asset(
    key=report_key("renewal_forecasts"),
    group_name=REPORTS,
    kinds={"polars", "json", "markdown"},
    owners=OWNERS,
    code_version=source_version(renewals, shards),
    deps=[renewal_forecasts],
)
def renewals_report(
    context: dg.AssetExecutionContext, config: RenewalsConfig, project: C360Project
) -> dg.MaterializeResult:
    """`renewals_<yyyymm>.json`, `summary.md` and the whole book's renewals frame, rolled up from the shards'."""
    config_file = _config_file(project, config.config_path, "renewals")
    renewals_config = renewals.load_renewals_config(config_file)
    outputs = _shard_outputs(project, "renewals")
    as_of = dt.date.fromisoformat(outputs.as_of)
    path = frame_path("renewals")
    json_name = f"renewals_{as_of:%Y%m}.json"
    with project.stages.writing():
        with project.stages.stage("renewals") as out:
            schema, inputs = outputs.merge_into(out, path, ["renewal_date", "subscription_id"])
            frame_hash = out.hashes[path]
            # The window's renewals, read back whole for the summary (its top risks quote any column).
            frame = _columns(out, path, schema, tuple(schema))
            summary = renewals.renewal_summary(frame, renewals_config)
            summary_md = renewals.render_renewal_summary_md(summary, as_of, config.window_days)
            items = (
                chunk
                for batch in shards.parquet_batches(out.written(path))
                for chunk in renewals.renewal_json_items(batch)
            )
            json_hash = out.write_chunks(json_name, json_stream({"summary": summary}, "renewals", items, array=True))
            md_hash = out.write_text("summary.md", summary_md)
        project.ledger.record_event(
            context,
            rollup_of=outputs.count,
            as_of=outputs.as_of,
            inputs={**inputs, "renewals.yaml": sha256_file(config_file)},
            outputs={json_name: json_hash, "summary.md": md_hash, "renewals.parquet": frame_hash},
            config_hash=renewals_config.config_hash,
        )
    return dg.MaterializeResult(
        metadata={
            **_frame_metadata(project, "renewals", schema, frame.height, project.paths.customer_dir / json_name),
            "as_of": outputs.as_of,
            "window_days": config.window_days,
            "forecast": dg.MetadataValue.json(summary),
            "summary": dg.MetadataValue.md(summary_md),
        },
        data_version=dg.DataVersion(frame_hash),
    )


REPORT_ASSETS = [customer_360_report, health_report, signals_report, renewals_report]

# The chain in order, without the lake tables: what a test or a tool materializes to get the documents.
CHAIN_ASSETS = [customer_inputs, customer_360, account_health, customer_signals, renewal_forecasts, *REPORT_ASSETS]
