"""The `c360` program's start-up: the collector settings `console.script` gives a short-lived process."""

from __future__ import annotations

import gc
import tomllib
from pathlib import Path

import pytest

from c360_dagster import console
from c360_dagster.runner import GC_THRESHOLD, _in_workers

REPO = Path(__file__).resolve().parents[1]


def test_the_program_is_script_and_it_freezes_start_up_objects_before_exit(monkeypatch):
    """`c360` runs console.script: fewer young-generation passes, and no collection of everything at exit."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["c360"] == "c360_dagster.console:script"

    threshold = gc.get_threshold()
    seen = {}

    def fake_main():
        seen["threshold during main"] = gc.get_threshold()[0]
        seen["frozen during main"] = gc.get_freeze_count()
        return 3

    monkeypatch.setattr(console, "main", fake_main)
    try:
        with pytest.raises(SystemExit) as exited:
            console.script()
        frozen_at_exit = gc.get_freeze_count()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert exited.value.code == 3
    assert seen == {"threshold during main": GC_THRESHOLD, "frozen during main": 0}
    assert frozen_at_exit > 0


def test_worker_processes_start_with_the_same_collector_threshold():
    """The spawned processes that run shards and QBR batches import Dagster too."""
    assert _in_workers(_young_threshold, [(1,), (2,)], workers=2) == [GC_THRESHOLD, GC_THRESHOLD]
    assert gc.get_threshold()[0] != GC_THRESHOLD  # this process keeps Python's default


def _young_threshold(_call: int) -> int:
    return gc.get_threshold()[0]
