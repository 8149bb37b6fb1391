"""Run a job of the project's definitions in-process on the project's persistent instance."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from c360_dagster.domain.errors import C360Error
from c360_dagster.instance import ensure_dagster_home

CPUS = len(os.sched_getaffinity(0))  # the default number of concurrent runs


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
    partition_range: tuple[str, str] | None = None,
    progress: bool = True,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Execute `job_name` in-process, for one partition or a (first, last) range of them.

    A user error raised by an asset propagates as itself.
    """
    _writable_dagster_home()
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
        if partition_range:
            # Dagster 1.13 reads every account key about ten times in a run of a partition range
            # (a second each at a million accounts); they are fixed for the run, so read them once.
            instance.get_dynamic_partitions = functools.cache(instance.get_dynamic_partitions)  # type: ignore[method-assign]
        return defs.resolve_job_def(job_name).execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=partition_key,
            tags={**(tags or {}), **(_range_tags(*partition_range) if partition_range else {})},
        )


def _writable_dagster_home() -> None:
    """The project's instance, ready; a DAGSTER_HOME this user cannot write is a clear error.

    Dagster would otherwise fail deep in SQLite ("unable to open database file").
    """
    home = ensure_dagster_home()
    if not os.access(home, os.W_OK):
        raise C360Error(
            f"DAGSTER_HOME {home} is not writable; make it writable for this user or set DAGSTER_HOME to a writable folder",
            code="READ_ONLY",
        )


def _range_tags(first: str, last: str) -> dict[str, str]:
    # The tags a backfill puts on a run of several partitions (Dagster has no public constant).
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def run_ranges(
    job_name: str,
    paths: ProjectPaths,
    ranges: Sequence[tuple[str, str]],
    *,
    workers: int = CPUS,
) -> dict[tuple[str, str], str]:
    """Run `job_name` once per (first, last) partition range, up to `workers` runs at a time.

    Each concurrent run has its own process, as under Dagster's run launcher. Returns the user
    error (`CODE: message`) of each range whose run it stopped, by range.
    """
    if workers <= 1 or len(ranges) <= 1:
        outcomes = [_run_range(job_name, paths, one) for one in ranges]
    else:
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked Dagster state
        with ProcessPoolExecutor(max_workers=min(workers, len(ranges)), mp_context=spawn) as pool:
            outcomes = list(pool.map(_run_range, itertools.repeat(job_name), itertools.repeat(paths), ranges))
    return {one: error for one, error in zip(ranges, outcomes, strict=True) if error is not None}


def _run_range(job_name: str, paths: ProjectPaths, partition_range: tuple[str, str]) -> str | None:
    try:
        run_job(job_name, paths, partition_range=partition_range, progress=False)
    except C360Error as exc:
        return exc.describe()
    return None


def is_known_account(account_id: str) -> bool:
    """Whether `account_id` is a registered `account` partition: one indexed lookup, where
    reading every key costs seconds at a million accounts."""
    ensure_dagster_home()
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return instance.has_dynamic_partition("account", account_id)


def register_accounts(account_ids: Iterable[str]) -> None:
    """Make the accounts a user asks for `account` partitions (Dagster runs no unknown partition)."""
    _writable_dagster_home()
    import dagster as dg

    from c360_dagster.defs import partitions

    with dg.DagsterInstance.get() as instance:
        partitions.register_accounts(instance, account_ids)


def account_batches(account_ids: Iterable[str]) -> list[tuple[str, str]]:
    """The (first, last) partition ranges a batched backfill of these accounts runs, after
    registering those that are not partitions yet: a backfill asks for its accounts."""
    _writable_dagster_home()
    import dagster as dg

    from c360_dagster.defs import partitions

    wanted = list(account_ids)
    with dg.DagsterInstance.get() as instance:
        partitions.register_accounts(instance, wanted)
        # The instance's order of the keys is the order a partition range follows.
        ordered = instance.get_dynamic_partitions(partitions.ACCOUNT_PARTITIONS_NAME)
    return partition_ranges(ordered, wanted, partitions.ACCOUNTS_PER_RUN)


def partition_ranges(ordered: Sequence[str], wanted: Iterable[str], size: int) -> list[tuple[str, str]]:
    """Runs of `wanted` keys adjacent in the partitions' `ordered` keys, at most `size` each."""
    chosen = set(wanted)
    ranges: list[tuple[str, str]] = []
    batch: list[str] = []
    for key in ordered:
        if key in chosen and len(batch) < size:
            batch.append(key)
            continue
        if batch:
            ranges.append((batch[0], batch[-1]))
        batch = [key] if key in chosen else []
    if batch:
        ranges.append((batch[0], batch[-1]))
    return ranges
