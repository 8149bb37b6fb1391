"""The `project` resource: the project's folders, and the parts that read and write in them."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from c360_dagster.domain.core import locking, stages
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.paths import ProjectPaths
from c360_dagster.domain.governance import anchor, eventlog, lake, metrics
from c360_dagster.domain.ingest import shards, view
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.instance import witness_metadata

# The command that makes each whole-project stage (what to run when it is missing).
COMMANDS = {
    shards.SPLIT_STAGE: "c360:load --dir {fixtures_dir}",
    view.STAGE: "c360:load --dir {fixtures_dir}",
    "health": "c360:health",
    "signals": "c360:signals",
    "renewals": "c360:renewals",
}


class C360Project(dg.ConfigurableResource):
    """The `project` resource: its config is the project's four folders (`ProjectPaths`); its
    parts do the work: `stages` (stage IO and the write locks), `ledger` (the signed log),
    `metrics` (counters) and `lake` (the lake tables)."""

    fixtures_dir: str = ProjectPaths.fixtures_dir
    configs_dir: str = ProjectPaths.configs_dir
    contracts_dir: str = ProjectPaths.contracts_dir
    artifacts_dir: str = ProjectPaths.artifacts_dir

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths(self.fixtures_dir, self.configs_dir, self.contracts_dir, self.artifacts_dir)

    @property
    def stages(self) -> Stages:
        return Stages(self.paths)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.paths)

    @property
    def metrics(self) -> Metrics:
        return Metrics(self.paths.metrics_path)

    @property
    def lake(self) -> lake.Lake:
        """The lake scale.yaml names (DuckDB under artifacts/lake by default)."""
        return lake.open_lake(self.configs_dir, self.artifacts_dir, self.contracts_dir)


@dataclass(frozen=True)
class Stages:
    """The project's stages: atomic writes under the write locks, and verified reads."""

    paths: ProjectPaths

    def root(self, shard: int | str | None = None) -> Path:
        """Where stages live: artifacts/customer, or a shard's own folder `shards/<k>` under it
        (the same layout inside, so a shard's stages read and write as the whole book's do)."""
        customer_dir = self.paths.customer_dir
        return customer_dir if shard is None else stages.shard_root(customer_dir, str(shard))

    @contextlib.contextmanager
    def stage(self, name: str, shard: int | str | None = None) -> Iterator[stages.StageWriter]:
        """Write the next generation of stage `name` (e.g. `health`, `qbr_<id>`), switched live on success.

        `with project.stages.stage("health") as out: out.write_frame(...)`; `out.manifest_hash`
        afterwards. With `shard`, the stage is that shard's own (under `shards/<k>`), written
        under that shard's lock only.
        """
        key = None if shard is None else str(shard)
        with self.writing(key), stages.write_stage(self.root(shard), name, key) as out:
            yield out

    @contextlib.contextmanager
    def batch(self) -> Iterator[stages.StageBatch]:
        """Write the next generations of several stages (`batch.stage(name)` each), switched live
        together if the block succeeds (`stages.write_stages`: one sync for all their files)."""
        with self.writing(), stages.write_stages(self.root()) as batch:
            yield batch

    def stored(self, name: str, shard: int | None = None) -> stages.StageReader:
        """The live generation of stage `name`, for verified reads (or a clear error saying what to run)."""
        try:
            return stages.open_stage(self.root(shard), name)
        except C360Error as exc:
            if exc.code != "STAGE_MISSING" or name not in COMMANDS:
                raise
            command = COMMANDS[name].format(fixtures_dir=self.paths.fixtures_dir)
            raise C360Error(f"{exc}; run `c360 {command}` first", code=exc.code) from None

    def frame_and_hash(
        self, name: str, account_ids: list[str] | None = None, shard: int | None = None
    ) -> tuple[pl.DataFrame, str]:
        """A stage's frame (optionally only these accounts' rows) and the hash of the bytes read."""
        stored = self.stored(name, shard)
        path = stages.frame_path(name)
        return stored.read_frame(path, account_ids), stored.files[path]

    def read_frame(self, name: str, account_ids: list[str] | None = None) -> pl.DataFrame:
        """A stage's persisted frame, verified, optionally only these accounts' rows."""
        return self.frame_and_hash(name, account_ids)[0]

    def open_view(
        self, account_ids: list[str] | None = None, shard: int | None = None, tables: Iterable[str] = tuple(ENTITIES)
    ) -> view.Customer360:
        """The persisted 360 view (only `tables`, if named), verified; its `stored_hash` is what a run that read it signs."""
        return view.Customer360.open(self.stored(view.STAGE, shard), account_ids, tables)

    def view_as_of(self, shard: int | None = None) -> dt.date:
        return view.view_as_of(self.stored(view.STAGE, shard))

    def view_table(self, name: str, shard: int | None = None) -> tuple[pl.DataFrame, str]:
        """One table of the 360 view and the hash of the view's generation it was read from."""
        stored = self.stored(view.STAGE, shard)
        return view.read_view_table(stored, name), stored.manifest_hash

    def writing(self, shard: str | None = None):
        """Hold the project's write lock (one unsharded c360 writer at a time), or with `shard`
        only that shard's lock: shards write in parallel with each other and with unsharded
        writers (which read a shard's outputs only through its live generations).

        Whatever a killed writer under the same lock left in its staging folder is removed first.
        """
        return _swept(locking.project_lock(self.paths.artifacts, shard=shard), self.root(shard), shard)


@dataclass(frozen=True)
class Ledger:
    """The signed log: the main chain and each shard's own chain."""

    paths: ProjectPaths

    def shard_log_path(self, shard: str) -> Path:
        """Shard `shard`'s own signed chain, `artifacts/governance/shards/<shard>/events.jsonl`."""
        return eventlog.shard_log_path(self.paths.events_path, shard)

    def shard_heads(self, shards: int) -> dict[str, dict]:
        """The heads (`{"seq", "hash"}`) of shards 0..shards-1's chains, as a roll-up event carries them."""
        return eventlog.shard_heads(self.paths.events_path, shards)

    def record_event(
        self,
        context: dg.AssetExecutionContext,
        *,
        as_of: str,
        inputs: dict[str, str],
        outputs: dict[str, str],
        config_hash: str | None = None,
        extra: dict | None = None,
        partition: str | None = None,
        shard: str | None = None,
        rollup_of: int | None = None,
    ) -> dict:
        """Append this materialization (of `partition`, in a run of several) to the signed log.

        With `shard`, to that shard's own chain (shards append in parallel). A roll-up of
        `rollup_of` shards appends to the main log and carries each shard chain's head, so that
        verify holds every shard chain to what the roll-up saw.
        The event's seq and line hash go into the materialization's metadata too: the Dagster
        instance witnesses the log's head, so verify notices a wiped or rolled-back log.
        """
        event = _event(context, as_of, inputs, outputs, config_hash, extra, partition or _own_partition(context))
        if shard is not None:
            event["shard"] = shard
        if rollup_of is not None:
            event["shards"] = self.shard_heads(rollup_of)
        log_path = self.paths.events_path if shard is None else self.shard_log_path(shard)
        return self._append(context, log_path, [event])[0]

    def record_partition_events(
        self,
        context: dg.AssetExecutionContext,
        *,
        as_of: str,
        inputs: Mapping[str, dict[str, str]],
        outputs: Mapping[str, dict[str, str]],
        extra: dict | None = None,
    ) -> None:
        """`record_event` for each partition of a run's batch (`outputs`' keys, in order, each with
        its own inputs), appended to the main log in one write and one fsync."""
        events = [
            _event(context, as_of, inputs[partition], files, None, extra, partition)
            for partition, files in outputs.items()
        ]
        if events:
            self._append(context, self.paths.events_path, events)

    def _append(self, context: dg.AssetExecutionContext, log_path: Path, events: list[dict]) -> list[dict]:
        records = eventlog.append_events(
            log_path, events, anchor.signing_key(self.paths.artifacts, self.paths.config_path("governance"))
        )
        for record in records:
            context.add_asset_metadata(
                witness_metadata(log_path, record["seq"], eventlog.line_hash(record)),
                partition_key=record["partition"],
            )
        return records


@dataclass(frozen=True)
class Metrics:
    """The project's Prometheus counters (`artifacts/metrics/c360.prom`)."""

    path: Path

    def count(self, name: str, value: int = 1, labels: dict[str, str] | None = None) -> dict[str, dg.IntMetadataValue]:
        """Add to a declared Prometheus counter; return `{"metric/<name>_total": new total}` for the asset's metadata.

        Every counter counts things, so its total shows as a whole number (Prometheus stores a float).
        """
        return {f"metric/{name}_total": dg.MetadataValue.int(int(metrics.increment(self.path, name, value, labels)))}


def _event(
    context: dg.AssetExecutionContext,
    as_of: str,
    inputs: dict[str, str],
    outputs: dict[str, str],
    config_hash: str | None,
    extra: dict | None,
    partition: str | None,
) -> dict:
    """A materialization's event for the signed log."""
    event = {
        "asset": context.assets_def.key.to_user_string(),
        "partition": partition,
        "run_id": context.run_id,
        "as_of": as_of,
        "config_hash": config_hash,
        "code_version": context.assets_def.code_versions_by_key.get(context.assets_def.key),
        "inputs": inputs,
        "outputs": outputs,
    }
    if extra:
        event["extra"] = extra
    return event


def _own_partition(context: dg.AssetExecutionContext) -> str | None:
    """The asset's partition in this run; None for an unpartitioned asset (in a run of a shard too)."""
    partitioned = context.has_partition_key and context.assets_def.partitions_def is not None
    return context.partition_key if partitioned else None


@contextlib.contextmanager
def _swept(lock, customer_dir: Path, shard: str | None):
    with lock:
        stages.sweep_staging(customer_dir, shard)
        yield
