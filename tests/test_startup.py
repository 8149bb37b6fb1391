"""The `c360` program's start-up: the collector settings `console.script` gives a short-lived
process, and the parts of Dagster it leaves unimported (`deferred_imports`)."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from c360_dagster import console, deferred_imports
from c360_dagster.defs.accounts import QBR_MODULES
from c360_dagster.runner import GC_THRESHOLD, _in_workers

REPO = Path(__file__).resolve().parents[1]


def test_the_program_is_script_its_collector_is_off_for_start_up_and_it_freezes_before_exit(monkeypatch):
    """`c360` runs console.script: no collection while start-up builds, and none of everything at exit."""
    # script() installs the deferred imports in this process: undone after the test.
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    for name in deferred_imports.NOT_IMPORTED:
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))
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


def test_worker_processes_start_with_the_collector_off_the_same_threshold_and_the_deferred_imports():
    """The spawned processes that run shards and QBR batches import Dagster too."""
    started = (False, GC_THRESHOLD, True)
    assert _in_workers(_start_up, [(1,), (2,)], workers=2) == [started, started]
    assert gc.isenabled()  # this process keeps Python's defaults
    assert gc.get_threshold()[0] != GC_THRESHOLD


def _start_up(_call: int) -> tuple[bool, int, bool]:
    deferring = deferred_imports._DEFERRING in sys.meta_path
    return gc.isenabled(), gc.get_threshold()[0], deferring


def test_a_stage_command_imports_no_library_its_run_does_not_use(ran_project):
    """`c360:health` renders no template and no deck: Jinja2, python-pptx and the QBR pack's own
    modules stay unimported (the asset graph names them for the pack's code version only)."""
    unused = ("jinja2", "pptx", *QBR_MODULES, "c360_dagster.domain.qbr.models")
    code = (
        "import sys; from c360_dagster.console import main; "
        f"code = main(['c360:health', '--quiet']); print(code, sorted(set({unused!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 []"


# Modules only `dagster._daemon`'s __init__ (its daemons, their structlog and rich) and Mako's
# Pygments plugin import: 141 modules of a `c360:health` run (docs/performance.md, "Start-up, round 6");
# Alembic and Mako, for Dagster's migrations, and NumPy, for PyArrow ("Start-up, round 7").
NEVER_IMPORTED = (
    "dagster._daemon.controller",
    "dagster._daemon.backfill",
    "structlog",
    "rich",
    "pygments",
    "alembic",
    "mako",
    "numpy",
)


def test_the_program_runs_a_stage_without_dagsters_daemons_pygments_alembic_or_numpy(ran_project):
    """`c360 c360:health` as the program runs it: its run stores in Dagster's run storage, which
    imports `dagster._daemon.types` only, opens the instance's stamped databases without Alembic,
    writes its lake table with PyArrow without NumPy, and its output is the same."""
    expected = io.StringIO()
    with contextlib.redirect_stdout(expected):
        assert console.main(["c360:health", "--quiet"]) == 0
    code = (
        "import atexit, json, sys\n"
        "def seen():\n"
        f"    imported = sorted(m for m in {NEVER_IMPORTED!r} if sys.modules.get(m))\n"
        "    print(json.dumps([imported, 'dagster._daemon.types' in sys.modules]), file=sys.stderr)\n"
        "atexit.register(seen)\n"
        "sys.argv = ['c360', 'c360:health', '--quiet']\n"
        "from c360_dagster.console import script\n"
        "script()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == expected.getvalue()
    assert json.loads(done.stderr.splitlines()[-1]) == [[], True]


def test_a_deferred_package_runs_its_init_when_a_name_of_it_is_asked():
    """`from dagster._daemon import X` (Dagster's daemon, `dagster dev`) still finds X; Mako still
    formats its errors, without Pygments."""
    code = (
        "import sys\n"
        "from c360_dagster import deferred_imports\n"
        "deferred_imports.install()\n"
        "import dagster._daemon.types\n"
        "before = 'dagster._daemon.controller' in sys.modules\n"
        "import mako.exceptions\n"
        "pygments = 'pygments' in sys.modules\n"
        "from dagster._daemon import DagsterDaemonController\n"
        "from dagster._daemon.controller import DagsterDaemonController as controller\n"
        "print(before, DagsterDaemonController is controller, mako.exceptions.pygments_html_formatter, pygments)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True", "None", "False"]


def test_alembic_is_imported_when_a_database_is_created_and_pyarrow_without_numpy_works():
    """The stand-ins of Alembic's names import it at first use: a fresh database is created and
    stamped as Dagster does. PyArrow without NumPy builds and hands over Arrow data; imported after
    NumPy it has NumPy as usual (`c360:bench`)."""
    code = (
        "import sys, tempfile, sqlite3\n"
        "from c360_dagster import deferred_imports\n"
        "deferred_imports.install()\n"
        "from dagster._core.storage.runs import SqliteRunStorage\n"
        "before = 'alembic' in sys.modules\n"
        "folder = tempfile.mkdtemp()\n"
        "SqliteRunStorage.from_local(folder)\n"
        "stamped = sqlite3.connect(folder + '/runs.db').execute('select count(*) from alembic_version').fetchone()[0]\n"
        "import pyarrow as pa, polars as pl\n"
        "table = pl.from_arrow(pa.table({'a': pa.array([1, 2])}))\n"
        "print(before, 'alembic' in sys.modules, stamped, 'numpy' in sys.modules, table['a'].to_list())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True", "1", "False", "[1,", "2]"]

    with_numpy = (
        "import numpy\n"
        "from c360_dagster import deferred_imports\n"
        "deferred_imports.install()\n"
        "import pyarrow as pa\n"
        "print(pa.array(numpy.arange(3)).to_pylist())\n"
    )
    done = subprocess.run([sys.executable, "-c", with_numpy], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[0,", "1,", "2]"]
