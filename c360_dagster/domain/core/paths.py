"""Where one c360 project keeps its inputs, configs, contracts and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    """The four folders of a project (relative paths resolve against the working directory)
    and the layout of the outputs under `artifacts_dir`. They configure the `project` resource."""

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
    def events_path(self) -> Path:
        return self.artifacts / "governance" / "events.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.artifacts / "metrics" / "c360.prom"

    def config_path(self, name: str) -> Path:
        return Path(self.configs_dir) / f"{name}.yaml"

    @property
    def shards(self) -> int:
        """N, the number of shards the book is split into (`scale.yaml`; default 1)."""
        # Imported here: the config module pulls in jsonschema, which the CLI's start-up does not need.
        from c360_dagster.domain.core.config import load_scale_config

        return load_scale_config(self.configs_dir)["shards"]
