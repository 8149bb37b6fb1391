"""The executor of the project's jobs, chosen by the environment the definitions load in.

`C360_EXECUTOR` names it: `in_process` (the default; one process), `multiprocess` (a process per
step on this machine), `celery` (each step a task for Celery workers, which may run on other
machines; broker and result backend at the URL in `C360_CELERY_BROKER`, e.g.
`redis://host:6379/0`) or `k8s` (each step a Kubernetes Job; needs `dagster-k8s` and its run
launcher). The `c360` commands run in-process whatever is set here (they call
`execute_in_process`; `c360:bench --shards` picks the multiprocess executor itself, see
`runner.run_chain`); the choice applies to runs Dagster launches: the UI, schedules, sensors,
`dagster job execute`. docs/deployment.md shows the set-up.
"""

from __future__ import annotations

import os

import dagster as dg

from c360_dagster.domain.core.errors import C360Error

EXECUTOR_ENV = "C360_EXECUTOR"
BROKER_ENV = "C360_CELERY_BROKER"
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")


def chosen_executor() -> dg.ExecutorDefinition:
    """The executor `C360_EXECUTOR` names (default `in_process`)."""
    name = os.environ.get(EXECUTOR_ENV, "").strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        return _celery_executor()
    if name == "k8s":
        return _k8s_executor()
    raise C360Error(
        f"{EXECUTOR_ENV}={name!r} names no executor; use one of {', '.join(EXECUTORS)}", code="CONFIG_INVALID"
    )


def _celery_executor() -> dg.ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise _missing("celery", 'the `scale` extra: pip install -c constraints.txt -e ".[scale]"') from None
    # Redis (or any Celery broker) carries the tasks and their results; the workers read the
    # same variable (docs/deployment.md), so launcher and workers cannot disagree on the broker.
    broker = {"env": BROKER_ENV}
    return celery_executor.configured({"broker": broker, "backend": broker}, name="celery")


def _k8s_executor() -> dg.ExecutorDefinition:
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        # Only the cluster's image needs it (and the Kubernetes client it brings): not an extra.
        raise _missing("k8s", "dagster-k8s in the image: pip install dagster-k8s==0.29.27") from None
    return k8s_job_executor


def _missing(name: str, what: str) -> C360Error:
    return C360Error(f"{EXECUTOR_ENV}={name} needs {what}", code="EXTRA_MISSING")
