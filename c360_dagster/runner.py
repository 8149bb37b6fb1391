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

from c360_dagster.domain.core.errors import C360Error
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
    accounts: Sequence[str] | None = None,
    progress: bool = True,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Execute `job_name` in-process, for one partition or one run over a batch of `accounts`.

    The accounts of a batch need not be adjacent (every red account, say): see `_run_over`.
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
        batch_tags = _run_over(instance, accounts) if accounts else {}
        return defs.resolve_job_def(job_name).execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=partition_key,
            tags={**(tags or {}), **batch_tags},
        )


def _run_over(instance: Any, accounts: Sequence[str]) -> dict[str, str]:
    """Make the run on `instance` cover exactly `accounts`; return the run's tags that say so.

    Dagster 1.13 runs a range of partitions (first to last key, in the keys' order), never a set.
    So this run sees the `account` keys as the batch's own: its range from the batch's first to
    its last account holds these accounts and no other, however far apart they are among all the
    keys. Dagster plans, materializes and checks exactly these partitions, and no longer reads
    every account key about ten times per run (a second each at a million accounts). The accounts
    must be registered partitions, as `account_batches` gives them (Dagster checks the first and
    the last). The `c360/accounts` tag names them: the range tags alone read as every key between
    the two.
    """
    from c360_dagster.defs.partitions import ACCOUNT_PARTITIONS_NAME

    keys = list(accounts)
    every_key = instance.get_dynamic_partitions

    def batch_keys(partitions_def_name: str) -> Sequence[str]:
        return keys if partitions_def_name == ACCOUNT_PARTITIONS_NAME else every_key(partitions_def_name)

    instance.get_dynamic_partitions = batch_keys
    # Dagster asks whether the range's two ends exist twice per event of the run (one SQLite
    # connection each: a quarter of a batch's CPU); the answers cannot change during the run.
    instance.has_dynamic_partition = functools.cache(instance.has_dynamic_partition)
    return {
        # The tags a backfill puts on a run of several partitions (Dagster has no public constant).
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
        "c360/accounts": " ".join(keys),
    }


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


def run_batches(
    job_name: str,
    paths: ProjectPaths,
    batches: Sequence[Sequence[str]],
    *,
    workers: int = CPUS,
) -> dict[tuple[str, ...], str]:
    """Run `job_name` once per batch of accounts, up to `workers` runs at a time.

    Each concurrent run has its own process, as under Dagster's run launcher. Returns the user
    error (`CODE: message`) of each batch whose run it stopped, by batch.
    """
    runs = [tuple(batch) for batch in batches]
    if workers <= 1 or len(runs) <= 1:
        outcomes = [_run_batch(job_name, paths, batch) for batch in runs]
    else:
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked Dagster state
        with ProcessPoolExecutor(max_workers=min(workers, len(runs)), mp_context=spawn) as pool:
            outcomes = list(pool.map(_run_batch, itertools.repeat(job_name), itertools.repeat(paths), runs))
    return {batch: error for batch, error in zip(runs, outcomes, strict=True) if error is not None}


def _run_batch(job_name: str, paths: ProjectPaths, batch: tuple[str, ...]) -> str | None:
    try:
        run_job(job_name, paths, accounts=batch, progress=False)
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


def account_batches(account_ids: Iterable[str]) -> list[list[str]]:
    """The batches a backfill of these accounts runs, after registering those that are not
    partitions yet (a backfill asks for its accounts): at most ACCOUNTS_PER_RUN accounts each,
    in the partitions' order, adjacent or not."""
    _writable_dagster_home()
    import dagster as dg

    from c360_dagster.defs import partitions

    wanted = list(account_ids)
    with dg.DagsterInstance.get() as instance:
        partitions.register_accounts(instance, wanted)
        ordered = instance.get_dynamic_partitions(partitions.ACCOUNT_PARTITIONS_NAME)
    return batches_of(ordered, wanted, partitions.ACCOUNTS_PER_RUN)


def batches_of(ordered: Sequence[str], wanted: Iterable[str], size: int) -> list[list[str]]:
    """The `wanted` keys found in `ordered`, in that order, cut into batches of at most `size`."""
    chosen = set(wanted)
    keys = [key for key in ordered if key in chosen]
    return [keys[start : start + size] for start in range(0, len(keys), size)]
