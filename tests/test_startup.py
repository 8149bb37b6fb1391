"""The `c360` program's start-up: the collector settings `console.script` gives a short-lived process."""

from __future__ import annotations

import contextlib
import gc
import io
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from c360_dagster import console
from c360_dagster.runner import GC_THRESHOLD, _in_workers

REPO = Path(__file__).resolve().parents[1]


def test_the_program_is_script_its_collector_is_off_for_start_up_and_it_freezes_before_exit(monkeypatch):
    """`c360` runs console.script: no collection while start-up builds, and none of everything at exit."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["c360"] == "c360_dagster.console:script"

    threshold = gc.get_threshold()
    seen = {}

    def fake_main():
        seen["collector on during main"] = gc.isenabled()
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
        gc.enable()
        gc.set_threshold(*threshold)
    assert exited.value.code == 3
    assert seen == {"collector on during main": False, "threshold during main": GC_THRESHOLD, "frozen during main": 0}
    assert frozen_at_exit > 0


def test_the_first_run_freezes_what_start_up_built_and_turns_the_collector_on(ran_project):
    """Start-up ends where a run starts: without this the collector would stay off through the run."""
    gc.disable()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert console.main(["c360:health", "--quiet"]) == 0
        on_after_the_run, frozen = gc.isenabled(), gc.get_freeze_count()
    finally:
        gc.unfreeze()
        gc.enable()
    assert on_after_the_run
    assert frozen > 0


def test_a_process_that_keeps_its_collector_on_is_left_as_it_is(ran_project):
    """A test process or `dagster dev` runs jobs too: nothing of it is frozen."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert console.main(["c360:health", "--quiet"]) == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_worker_processes_start_with_the_collector_off_and_the_same_threshold():
    """The spawned processes that run shards and QBR batches import Dagster too."""
    assert _in_workers(_collector, [(1,), (2,)], workers=2) == [(False, GC_THRESHOLD), (False, GC_THRESHOLD)]
    assert gc.isenabled()  # this process keeps Python's defaults
    assert gc.get_threshold()[0] != GC_THRESHOLD


def _collector(_call: int) -> tuple[bool, int]:
    return gc.isenabled(), gc.get_threshold()[0]


def test_a_stage_command_imports_no_library_its_run_does_not_use(ran_project):
    """`c360:health` renders no template and no deck: Jinja2 and python-pptx stay unimported."""
    unused = ("jinja2", "pptx")
    code = (
        "import sys; from c360_dagster.console import main; "
        f"code = main(['c360:health', '--quiet']); print(code, sorted(set({unused!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 []"
