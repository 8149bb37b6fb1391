"""Run a job of the project's definitions in-process on the project's persistent instance."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from c360_dagster import deferred_imports
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.paths import ProjectPaths
from c360_dagster.instance import ensure_dagster_home

CPUS = len(os.sched_getaffinity(0))  # the default number of concurrent runs
# Once runs start, a young-generation collection every 10k allocations, not Python's 700
# (docs/performance.md, "Start-up").
GC_THRESHOLD = 10_000
# Starting the worker processes (their server's Python, Dagster, definitions and instance: about
# 3 CPU-s) costs about as much as this many QBR packs: a backfill gives no worker fewer accounts.
WORKER_MIN_ACCOUNTS = 20
EVENT_BATCH_SIZE = 1_000  # more than a batch of accounts' planned events (two assets, two checks)


def collector_off_for_start_up() -> None:
    """The collector of a short-lived c360 process (the `c360` program, a worker that runs shards
    or batches), off until its first run starts (`_collector_on_for_runs`).

    Start-up builds about 250k objects that live until the process ends (Dagster's modules, the
    asset graph, the instance) and almost no garbage; with the collector on, its passes over them
    cost about 0.3 CPU-s per command (docs/performance.md, "Start-up").
    """
    gc.set_threshold(GC_THRESHOLD)
    gc.disable()


def short_lived_start_up() -> None:
    """The start-up of a short-lived c360 process (the `c360` program, a worker that runs shards
    or batches): the collector off until its first run, and the parts of Dagster it never uses
    left unimported (`deferred_imports`)."""
    collector_off_for_start_up()
    deferred_imports.install()


def _collector_on_for_runs() -> None:
    """Start-up is over: what it built is frozen, never scanned again, and the collector runs
    again. A process that did not turn it off (a test, `dagster dev`) is left as it is."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def run_job(
    job_name: str,
    paths: ProjectPaths,
    *,
    ops: Mapping[str, Mapping[str, Any]] | None = None,
    partition_key: str | None = None,
    accounts: Sequence[str] | None = None,
    progress: bool = True,
    tags: Mapping[str, str] | None = None,
    asset_selection: Sequence[str] | None = None,
) -> Any:
    """Execute `job_name` in-process, for one partition or one run over a batch of `accounts`,
    and only the assets of `asset_selection` (user strings, e.g. `report/health_report`) if given.

    The accounts of a batch need not be adjacent (every red account, say): see `_run_over`.
    A user error raised by an asset propagates as itself.
    """
    _writable_dagster_home()
    import dagster as dg

    from c360_dagster.definitions import definitions_for

    defs = definitions_for(paths.shards)

    with dg.DagsterInstance.get() as instance:
        batch_tags = _run_over(instance, accounts) if accounts else {}
        _collector_on_for_runs()
        return defs.resolve_job_def(job_name).execute_in_process(
            run_config=_run_config(paths, ops, progress),
            instance=instance,
            partition_key=partition_key,
            tags={**(tags or {}), **batch_tags},
            asset_selection=[dg.AssetKey.from_user_string(key) for key in asset_selection] if asset_selection else None,
        )


def _run_config(paths: ProjectPaths, ops: Mapping[str, Mapping[str, Any]] | None, progress: bool) -> dict[str, Any]:
    return {
        "resources": {"project": {"config": paths.__dict__}},
        "ops": {name: {"config": dict(config)} for name, config in (ops or {}).items()},
        "loggers": {
            "console": {"config": {"log_level": "CRITICAL"}},
            "progress": {"config": {"enabled": progress}},
        },
    }


@dataclass(frozen=True)
class ChainRun:
    """What a chain job's run(s) made: the last run's id, every check, each asset's metadata."""

    run_id: str
    checks: list[dict[str, Any]]
    metadata: dict[str, dict[str, Any]]


def run_chain(
    job_name: str,
    paths: ProjectPaths,
    *,
    ops: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    workers: int = CPUS,
    executor: str = "in_process",
) -> ChainRun:
    """Run a chain job: with one shard, one run of it (shard "0"); with N, three layers: the
    assets before the shards (the split), every shard's assets (N runs, up to `workers` at a
    time, each in its own process), then the roll-ups. A shard's user error stops the chain
    before the roll-ups, as itself. Every config the job reads is loaded before anything runs,
    and with N shards the overrides and snoozes are checked on the whole book before any shard
    runs. `executor` runs the shard runs' steps: `in_process` (in the run's process) or
    `multiprocess` (Dagster's multiprocess executor: each step in a process of its own, see
    `_multiprocess_run`); the split and the roll-ups run in this process either way."""
    from c360_dagster import reports

    count = paths.shards
    _check_configs(job_name, paths, ops or {})
    before, sharded, after = _chain_layers(job_name, count)
    if SPLIT not in before:  # the job reads the shards' views as they are: all from the live split?
        _refuse_a_torn_load(paths, count)
    if count == 1:
        result = run_job(job_name, paths, ops=ops, partition_key="0", progress=progress)
        return ChainRun(result.run_id, reports.check_rows(result), reports.materialized(result))
    if workers > 1:
        _worker_server()  # it imports while the split runs
    if SPLIT not in before:  # the split checks them itself, before it writes
        _check_config_entries(paths, count)
    runs = []
    if before:
        runs.append(_layer_run(job_name, paths, ops, before, None, progress))
    shard_runs = _in_workers(
        _shard_run,
        [(job_name, paths, _layer_ops(ops, sharded), sharded, str(k), executor) for k in range(count)],
        workers,
    )
    for outcome in shard_runs:
        if isinstance(outcome, UserError):
            raise C360Error(outcome.message, code=outcome.code)
    runs += shard_runs
    runs.append(_layer_run(job_name, paths, ops, after, None, progress))
    checks = reports.merge_check_rows([check for run in runs for check in run.checks])
    return ChainRun(runs[-1].run_id, checks, {key: value for run in runs for key, value in run.metadata.items()})


SPLIT = "customer_inputs"


def _check_configs(job_name: str, paths: ProjectPaths, ops: Mapping[str, Mapping[str, Any]]) -> None:
    """Every config file the job's assets read, loaded once before any of them runs."""
    from c360_dagster.definitions import definitions_for
    from c360_dagster.defs.customer import check_configs
    from c360_dagster.defs.resources import C360Project

    graph = definitions_for(paths.shards).resolve_job_def(job_name).asset_layer.asset_graph
    assets = sorted(key.to_user_string() for key in graph.executable_asset_keys)
    check_configs(C360Project(**paths.__dict__), assets, dict(ops))


def _refuse_a_torn_load(paths: ProjectPaths, count: int) -> None:
    """A load killed between the split and the shards' views leaves views of another split: a job
    that starts after the split stops (SHARD_STALE) before anything runs, so nothing is scored
    from a book the inputs no longer are."""
    from c360_dagster.defs.customer import refuse_views_of_another_split
    from c360_dagster.defs.resources import C360Project

    refuse_views_of_another_split(C360Project(**paths.__dict__), count)


def _check_config_entries(paths: ProjectPaths, count: int) -> None:
    """The overrides and snoozes checked against the whole book before any shard runs: a bad
    entry that only one shard's accounts trip stops the command with nothing written."""
    from c360_dagster.defs.customer import book_account_ids, check_config_entries
    from c360_dagster.defs.resources import C360Project

    project = C360Project(**paths.__dict__)
    check_config_entries(project, lambda: book_account_ids(project, count))


def _chain_layers(job_name: str, shards: int) -> tuple[list[str], list[str], list[str]]:
    """The job's assets before the shard assets, the shard assets, and the roll-ups after them."""
    from c360_dagster.definitions import definitions_for

    graph = definitions_for(shards).resolve_job_def(job_name).asset_layer.asset_graph
    keys = sorted(graph.executable_asset_keys | graph.observable_asset_keys, key=lambda key: key.to_user_string())
    sharded = [key for key in keys if graph.get(key).partitions_def is not None]
    upstream: set[Any] = set()
    frontier = list(sharded)
    while frontier:  # every ancestor of a shard asset
        parents = graph.get(frontier.pop()).parent_keys - upstream
        upstream |= parents
        frontier += parents
    before = [key for key in keys if key not in sharded and key in upstream]
    after = [key for key in keys if key not in sharded and key not in upstream]
    before_names, shard_names, after_names = (
        [key.to_user_string() for key in layer] for layer in (before, sharded, after)
    )
    return before_names, shard_names, after_names


def _layer_ops(ops: Mapping[str, Mapping[str, Any]] | None, keys: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The run config of the ops of these assets only (a run refuses config of ops it does not run)."""
    import dagster as dg

    names = {dg.AssetKey.from_user_string(key).to_python_identifier() for key in keys}
    return {name: config for name, config in (ops or {}).items() if name in names}


@dataclass(frozen=True)
class UserError:
    """A user error raised in a worker process, passed back whole (its code included)."""

    code: str
    message: str


def _layer_run(job_name, paths, ops, keys, partition_key, progress) -> ChainRun:
    from c360_dagster import reports

    result = run_job(
        job_name,
        paths,
        ops=_layer_ops(ops, keys),
        partition_key=partition_key,
        progress=progress,
        asset_selection=keys,
    )
    return ChainRun(result.run_id, reports.check_rows(result), reports.materialized(result))


def _shard_run(job_name, paths, ops, keys, shard, executor) -> ChainRun | UserError:
    """One shard's run, in a worker process: what it made, or its user error."""
    try:
        if executor == "multiprocess":
            return _multiprocess_run(job_name, paths, ops, keys, shard)
        return _layer_run(job_name, paths, ops, keys, shard, False)
    except C360Error as exc:
        return UserError(exc.code, str(exc))


# One step at a time: a shard's steps then run in the order the in-process executor runs them,
# so the shard's signed log (one hash chain, appended by several steps) has the same order. The
# shard runs side by side (`workers`) use the cores. A forkserver that has imported the asset
# graph starts each step's process in milliseconds; `spawn` would pay Python, Dagster and the
# definitions (about 3 CPU-s) per step; with the instance's storage preloaded too, a step's process
# opens the instance in a tenth of a second, not 3 s (SQLAlchemy, Alembic).
MULTIPROCESS_CONFIG = {
    "max_concurrent": 1,
    "start_method": {"forkserver": {"preload_modules": ["c360_dagster.definitions", "c360_dagster.instance_storage"]}},
}


def multiprocess_job(job_name: str, shards: int) -> Any:
    """`job_name` of the graph with `shards` shards on Dagster's multiprocess executor; each step's
    process calls this to rebuild it (`dg.build_reconstructable_job`)."""
    import dagster as dg

    from c360_dagster.definitions import definitions_for

    return definitions_for(shards).resolve_job_def(job_name).with_executor_def(dg.multiprocess_executor)


def _multiprocess_run(job_name, paths, ops, keys, shard) -> ChainRun:
    """One shard's run with `dg.execute_job` on the multiprocess executor (which needs a job it can
    rebuild in another process, and the persistent instance the step processes report to). A
    step's user error reaches this process as Dagster's record of it (class name and message), so
    it is raised again as a `C360Error` of that class's code."""
    from c360_dagster import reports

    _writable_dagster_home()
    import dagster as dg

    job = dg.build_reconstructable_job(
        __name__, multiprocess_job.__name__, reconstructable_kwargs={"job_name": job_name, "shards": paths.shards}
    )
    run_config = {**_run_config(paths, ops, False), "execution": {"config": MULTIPROCESS_CONFIG}}
    with dg.DagsterInstance.get() as project_instance:
        # The step processes open the instance from this one's settings; Dagster logs their start
        # to the console at the instance's Python log level (DEBUG unless set): as quiet as the runs.
        quiet = project_instance.get_ref()._replace(
            settings={**project_instance.get_ref().settings, "python_logs": {"python_log_level": "CRITICAL"}}
        )
    with (
        dg.DagsterInstance.from_ref(quiet) as instance,
        dg.execute_job(
            job,
            instance,
            run_config=run_config,
            tags={"dagster/partition": shard},
            asset_selection=[dg.AssetKey.from_user_string(key) for key in keys],
        ) as result,
    ):
        if not result.success:
            raise _step_user_error(result)
        return ChainRun(result.run_id, reports.check_rows(result), reports.materialized(result))


def _step_user_error(result: Any) -> Exception:
    """The failed step's user error, as a `C360Error` of its class's code (Dagster keeps the class's
    name and the message, not the object, so a code given where it was raised reads as the class's);
    any other error, which is a bug, as a `RuntimeError` with its traceback."""
    failure = next(event for event in result.all_events if event.is_step_failure)
    codes = {cls.__name__: cls.code for cls in _subclasses(C360Error)}
    error = failure.step_failure_data.error
    while error is not None:  # Dagster's wrapper, what the asset raised, what that was raised from
        if error.cls_name in codes:
            return C360Error(error.message.split(": ", 1)[-1].rstrip("\n"), code=codes[error.cls_name])
        error = error.cause
    return RuntimeError(f"step {failure.step_key} failed: {failure.step_failure_data.error.to_string()}")


def _subclasses(cls: type[C360Error]) -> list[type[C360Error]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))]


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
    # Dagster then hands the batch's planned materializations, and each asset's materializations,
    # to the event log as one batch, which the project's storage writes in one transaction
    # (instance_storage.py; Dagster's own would store them one by one).
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
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
    outcomes = _in_workers(_run_batch, [(job_name, paths, batch) for batch in runs], workers)
    return {batch: error for batch, error in zip(runs, outcomes, strict=True) if error is not None}


# Worker processes (shard runs, QBR batches) are forked from one server process per c360 process,
# which has imported the asset graph and the instance's storages as a short-lived process does
# (`deferred_imports`): a worker starts in milliseconds, where a spawned one paid Python, Dagster
# and the definitions (about 2.5 CPU-s) each time. The server is a fresh interpreter, as a spawned
# worker is (no forked Dagster state, no threads); the rest of the start-up (the collector) is each
# worker's, so it holds even when Dagster's multiprocess executor started this process's server.
WORKER_PRELOAD = ["c360_dagster.worker_server", "c360_dagster.definitions", "c360_dagster.instance_storage"]


def _in_workers(function, calls: Sequence[tuple], workers: int) -> list:
    """`function(*args)` for each of `calls`, in order; up to `workers` at a time in processes of their own."""
    if workers <= 1 or len(calls) <= 1:
        return [function(*args) for args in calls]
    forkserver = _worker_server()
    # The server's environment and working folder are this process's when it started; each call
    # brings the ones it has now (a test, or a library user, may have changed them since).
    here = [(dict(os.environ), os.getcwd(), function, args) for args in calls]
    with ProcessPoolExecutor(
        max_workers=min(workers, len(calls)), mp_context=forkserver, initializer=short_lived_start_up
    ) as pool:
        return list(pool.map(_call_here, here))


def _worker_server() -> Any:
    """The multiprocessing context of this process's worker server, which is started now if it is
    not running: its imports go on beside whatever this process does until it asks for workers."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(WORKER_PRELOAD)
    multiprocessing.forkserver.ensure_running()
    return forkserver


def _call_here(call: tuple[dict[str, str], str, Any, tuple]) -> Any:
    """In a worker: `function(*args)` in the calling process's environment and working folder."""
    environment, folder, function, args = call
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(folder)
    return function(*args)


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


def account_batches(account_ids: Iterable[str], workers: int = CPUS) -> list[list[str]]:
    """The batches a backfill of these accounts runs, `workers` at a time, after registering those
    that are not partitions yet (a backfill asks for its accounts): see `batches_of`."""
    _writable_dagster_home()
    import dagster as dg

    from c360_dagster.defs import partitions

    wanted = list(account_ids)
    with dg.DagsterInstance.get() as instance:
        partitions.register_accounts(instance, wanted)
        ordered = instance.get_dynamic_partitions(partitions.ACCOUNT_PARTITIONS_NAME)
    return batches_of(ordered, wanted, partitions.ACCOUNTS_PER_RUN, workers)


def batches_of(
    ordered: Sequence[str], wanted: Iterable[str], size: int, workers: int, least: int = WORKER_MIN_ACCOUNTS
) -> list[list[str]]:
    """The `wanted` keys found in `ordered`, in that order, cut into batches of even sizes, at
    most `size` each, adjacent or not, for up to `workers` runs at a time.

    Every worker that gets at least `least` accounts takes part (a worker process's start-up
    costs the CPU of about that many packs; below, one batch runs in the calling process), and
    each takes the same number of batches, as few as `size` allows (each run costs Dagster's
    set-up): runs that go side by side then end together. On 2 workers, 150 accounts are two
    runs of 75, not one of 150 with a core idle; 450 are four of 112-113, not three of 150.
    """
    chosen = set(wanted)
    keys = [key for key in ordered if key in chosen]
    workers = max(1, min(workers, len(keys) // least))
    count = workers * -(-len(keys) // (size * workers))
    return [keys[index * len(keys) // count : (index + 1) * len(keys) // count] for index in range(count)]
