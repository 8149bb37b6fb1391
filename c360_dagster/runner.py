"""Run a job of the project's definitions in-process on the project's persistent instance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from c360_dagster.instance import ensure_dagster_home


@dataclass(frozen=True)
class ProjectPaths:
    """The folders a CLI run uses; they configure the `project` resource."""

    fixtures_dir: str = "fixtures/customer"
    configs_dir: str = "configs/customer"
    contracts_dir: str = "contracts/schemas"
    artifacts_dir: str = "artifacts"


def run_job(
    job_name: str,
    paths: ProjectPaths,
    *,
    ops: Mapping[str, Mapping[str, Any]] | None = None,
    partition_key: str | None = None,
    progress: bool = True,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Execute `job_name` in-process; a user error raised by an asset propagates as itself."""
    ensure_dagster_home()
    import dagster as dg

    from c360_dagster.definitions import defs

    run_config = {
        "resources": {"project": {"config": paths.__dict__}},
        "ops": {name: {"config": dict(config)} for name, config in (ops or {}).items()},
        "loggers": {
            "console": {"config": {"log_level": "CRITICAL"}},
            "progress": {"config": {"enabled": progress}},
        },
    }
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(job_name).execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=partition_key,
            tags=dict(tags or {}),
        )


def known_accounts() -> list[str]:
    """Account ids registered as `account` partitions on the project's instance."""
    ensure_dagster_home()
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return sorted(instance.get_dynamic_partitions("account"))
