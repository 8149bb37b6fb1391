"""The executor of the project's jobs, chosen by the environment the definitions load in.

`C360_EXECUTOR` names it: `in_process` (the default; one process), `multiprocess` (a process per
step on this machine) or `celery` (each step a task for Celery workers, which may run on other
machines; broker and result backend at the URL in `C360_CELERY_BROKER`, e.g.
`redis://host:6379/0`). The `c360` commands run in-process whatever is set here (they call
`execute_in_process`); the choice applies to runs Dagster launches: the UI, schedules, sensors,
`dagster job execute`. docs/deployment.md shows the set-up.
"""

from __future__ import annotations

import os

import dagster as dg

from c360_dagster.domain.errors import C360Error

EXECUTOR_ENV = "C360_EXECUTOR"
BROKER_ENV = "C360_CELERY_BROKER"
EXECUTORS = ("in_process", "multiprocess", "celery")


def chosen_executor() -> dg.ExecutorDefinition:
    """The executor `C360_EXECUTOR` names (default `in_process`)."""
    name = os.environ.get(EXECUTOR_ENV, "").strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        return _celery_executor()
    raise C360Error(
        f"{EXECUTOR_ENV}={name!r} names no executor; use one of {', '.join(EXECUTORS)}", code="CONFIG_INVALID"
    )


def _celery_executor() -> dg.ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise C360Error(
            f'{EXECUTOR_ENV}=celery needs the `scale` extra: pip install -c constraints.txt -e ".[scale]"',
            code="EXTRA_MISSING",
        ) from None
    # Redis (or any Celery broker) carries the tasks and their results; the workers read the
    # same variable (docs/deployment.md), so launcher and workers cannot disagree on the broker.
    broker = {"env": BROKER_ENV}
    return celery_executor.configured({"broker": broker, "backend": broker}, name="celery")
