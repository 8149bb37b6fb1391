"""The project resource: where inputs, configs, contracts and artifacts live."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl

from c360_dagster.domain import anchor, eventlog, locking, metrics
from c360_dagster.domain.errors import C360Error
from c360_dagster.domain.io import atomic_writer, sha256_file, write_text_atomic
from c360_dagster.domain.view import (
    ROW_GROUP_ROWS,
    Customer360,
    read_view_table,
    view_as_of,
)
from c360_dagster.instance import witness_metadata


class C360Project(dg.ConfigurableResource):
    """Folders of one c360 project; relative paths resolve against the working directory."""

    fixtures_dir: str = "fixtures/customer"
    configs_dir: str = "configs/customer"
    contracts_dir: str = "contracts/schemas"
    artifacts_dir: str = "artifacts"

    @property
    def artifacts(self) -> Path:
        return Path(self.artifacts_dir)

    @property
    def customer_dir(self) -> Path:
        return self.artifacts / "customer"

    @property
    def frames_dir(self) -> Path:
        return self.customer_dir / "frames"

    @property
    def view_dir(self) -> Path:
        return self.frames_dir / "360"

    @property
    def lake_path(self) -> Path:
        return self.artifacts / "lake" / "c360.duckdb"

    @property
    def events_path(self) -> Path:
        return self.artifacts / "governance" / "events.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.artifacts / "metrics" / "c360.prom"

    def config_path(self, name: str) -> Path:
        return Path(self.configs_dir) / f"{name}.yaml"

    def frame_path(self, name: str) -> Path:
        return self.frames_dir / f"{name}.parquet"

    def write_frame(self, name: str, frame: pl.DataFrame) -> str:
        """Persist a stage's frame as Parquet with its content hash beside it; return the hash."""
        path = self.frame_path(name)
        with atomic_writer(path, "wb") as handle:
            frame.write_parquet(handle, statistics=True, row_group_size=ROW_GROUP_ROWS)
        digest = sha256_file(path)
        write_text_atomic(path.with_name(path.name + ".sha256"), digest + "\n")
        return digest

    def frame_hash(self, name: str) -> str:
        """A persisted frame's content hash, read from beside it (per-account runs never rehash)."""
        sidecar = self.frame_path(name).with_name(f"{name}.parquet.sha256")
        if sidecar.exists():
            return sidecar.read_text(encoding="utf-8").strip()
        return sha256_file(self.frame_path(name))  # written before sidecars existed

    def view_hash(self) -> str:
        """The 360 view's identity: the hash of its manifest, which names every table's hash."""
        return sha256_file(self.view_dir / "manifest.json")

    def _require_view(self) -> Path:
        if not (self.view_dir / "manifest.json").exists():
            raise C360Error(
                f"no Customer 360 view under {self.view_dir}; run `c360 c360:load --dir "
                f"{self.fixtures_dir}` first"
            )
        return self.view_dir

    def open_view(self, account_ids: list[str] | None = None) -> Customer360:
        return Customer360.open(self._require_view(), account_ids)

    def view_as_of(self) -> dt.date:
        return view_as_of(self._require_view())

    def view_table(self, name: str) -> pl.DataFrame:
        return read_view_table(self._require_view(), name)

    def read_frame(self, name: str, account_ids: list[str] | None = None) -> pl.DataFrame:
        """A stage's persisted frame, optionally only these accounts' rows."""
        path = self.frame_path(name)
        if not path.exists():
            raise C360Error(f"no {name} output under {path}; run `c360 c360:{name}` first")
        frame = pl.scan_parquet(path)
        if account_ids is not None:
            frame = frame.filter(pl.col("account_id").is_in(account_ids))
        return frame.collect()

    def writing(self):
        """Hold the project's write lock: one c360 process writes artifacts at a time."""
        return locking.project_lock(self.artifacts)

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
    ) -> dict:
        """Append this materialization (of `partition`, in a run of several) to the signed log.

        The event's seq and line hash go into the materialization's metadata too: the Dagster
        instance witnesses the log's head, so verify notices a wiped or rolled-back log.
        """
        asset = context.assets_def.key.to_user_string()
        event = {
            "asset": asset,
            "partition": partition or (context.partition_key if context.has_partition_key else None),
            "run_id": context.run_id,
            "as_of": as_of,
            "config_hash": config_hash,
            "code_version": context.assets_def.code_versions_by_key.get(context.assets_def.key),
            "inputs": inputs,
            "outputs": outputs,
        }
        if extra:
            event["extra"] = extra
        record = eventlog.append_event(self.events_path, event, anchor.signing_key(self.artifacts, self.config_path("governance")))
        context.add_asset_metadata(
            witness_metadata(self.events_path, record["seq"], eventlog.line_hash(record)),
            partition_key=event["partition"],
        )
        return record

    def count(self, name: str, value: float = 1, labels: dict[str, str] | None = None) -> dict[str, float]:
        """Add to a declared Prometheus counter; return `{"metric/<name>_total": new total}` for the asset's metadata."""
        return {f"metric/{name}_total": metrics.increment(self.metrics_path, name, value, labels)}
