"""The `c360` program's start-up: the collector settings `console.script` gives a short-lived
process, and the parts of Dagster it leaves unimported (`deferred_imports`)."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from c360_dagster import console, deferred_imports
from c360_dagster.defs.accounts import QBR_MODULES
from c360_dagster.runner import GC_THRESHOLD, _in_workers

REPO = Path(__file__).resolve().parents[1]


def test_the_program_is_script_its_collector_is_off_for_start_up_and_it_ends_with_mains_code(monkeypatch):
    """`c360` runs console.script: no collection while start-up builds, and main()'s code ends it."""
    # script() installs the deferred imports in this process: undone after the test.
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    for name in deferred_imports.NOT_IMPORTED:
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["c360"] == "c360_dagster.console:script"

    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    seen = {}

    def fake_main():
        seen["collector on during main"] = gc.isenabled()
        seen["threshold during main"] = gc.get_threshold()[0]
        seen["frozen during main"] = gc.get_freeze_count()
        return 3

    def ended(code):  # the real end_program would end this test process (tests below run it)
        raise SystemExit(code)

    monkeypatch.setattr(console, "main", fake_main)
    monkeypatch.setattr(console, "end_program", ended)
    try:
        with pytest.raises(SystemExit) as exited:
            console.script()
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
    assert exited.value.code == 3
    # Nothing frozen before main: that is the first run's. (The test process froze its own start-up,
    # and a frozen object that is freed leaves the count: it may only go down.)
    assert seen.pop("frozen during main") <= frozen
    assert seen == {"collector on during main": False, "threshold during main": GC_THRESHOLD}


# A process that ends with `console.end_program`: stdout block-buffered (as in a pipe), so
# output not flushed before the process ends would be lost.
def _ending(*python_args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, *python_args], capture_output=True, text=True, env=env, check=False)


def test_the_program_ends_with_its_whole_output_its_code_and_the_exit_handlers_run(tmp_path):
    """`end_program` ends the process without Python's teardown, but as Python's exit would for
    what it shows: everything printed to stdout and stderr is there, the exit status is the code,
    and the `atexit` handlers ran (a temporary folder still open is removed)."""
    code = (
        "import atexit, sys, tempfile\n"
        "from c360_dagster.console import end_program\n"
        "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
        "kept = tempfile.TemporaryDirectory()\n"
        f"open({str(tmp_path / 'name')!r}, 'w').write(kept.name)\n"
        "print('line\\n' * 1000, end='')\n"
        "print('to stderr', file=sys.stderr)\n"
        "end_program(1)\n"
        "print('never printed')\n"
    )
    done = _ending("-c", code)
    assert done.returncode == 1
    assert done.stdout == "line\n" * 1000
    assert done.stderr == "to stderr\nexit handler ran\n"
    assert not Path((tmp_path / "name").read_text()).exists()


def test_the_program_waits_for_a_running_thread_and_reports_an_unflushable_stdout_as_python_does():
    """A thread that is not a daemon still runs to its end, as at Python's exit; a closed pipe on
    stdout is reported and gives status 120, as Python's exit does."""
    thread = (
        "import threading, time\n"
        "from c360_dagster.console import end_program\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()\n"
        "end_program(0)\n"
    )
    done = _ending("-c", thread)
    assert (done.returncode, done.stdout) == (0, "thread done\n")

    closed = (
        "import sys\n"
        "from c360_dagster.console import end_program\n"
        "sys.stdin.readline()\n"  # stdout's reader is gone by now
        "print('lost')\n"
        "end_program(0)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    child = subprocess.Popen(
        [sys.executable, "-c", closed], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    child.stdout.close()
    _, err = child.communicate(b"go\n")
    assert child.returncode == 120
    assert b"BrokenPipeError" in err


def test_the_first_run_freezes_what_start_up_built_and_turns_the_collector_on(ran_project):
    """Start-up ends where a run starts: without this the collector would stay off through the run."""
    before = gc.get_freeze_count()  # the test process's own start-up (tests/conftest.py)
    gc.disable()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert console.main(["c360:health", "--quiet"]) == 0
        on_after_the_run, frozen = gc.isenabled(), gc.get_freeze_count()
    finally:
        gc.enable()
    assert on_after_the_run
    assert frozen > before


@pytest.mark.untraced
def test_a_process_that_keeps_its_collector_on_is_left_as_it_is(ran_project):
    """A test process or `dagster dev` runs jobs too: the run freezes nothing of it."""
    before = gc.get_freeze_count()
    with contextlib.redirect_stdout(io.StringIO()):
        assert console.main(["c360:health", "--quiet"]) == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() <= before  # frozen objects freed leave the count; none joined it


def test_worker_processes_start_with_the_collector_off_the_same_threshold_and_the_deferred_imports():
    """The spawned processes that run shards and QBR batches import Dagster too."""
    started = (False, GC_THRESHOLD, True)
    assert _in_workers(_start_up, [(1,), (2,)], workers=2) == [started, started]
    assert gc.isenabled()  # this process keeps its own settings (tests/conftest.py)
    assert gc.get_threshold()[0] != GC_THRESHOLD


def _start_up(_call: int) -> tuple[bool, int, bool]:
    deferring = deferred_imports._DEFERRING in sys.meta_path
    return gc.isenabled(), gc.get_threshold()[0], deferring


def test_worker_processes_run_in_the_callers_environment_and_folder_of_the_moment(tmp_path, monkeypatch):
    """The worker server is started once per process, with the environment and folder of then; each
    call carries the caller's current ones (a test or a library user changes them between calls)."""
    monkeypatch.setenv("C360_WORKER_CHECK", "first")
    assert _in_workers(_surroundings, [(1,), (2,)], workers=2) == [("first", os.getcwd())] * 2
    monkeypatch.setenv("C360_WORKER_CHECK", "second")
    monkeypatch.chdir(tmp_path)
    assert _in_workers(_surroundings, [(1,), (2,)], workers=2) == [("second", str(tmp_path))] * 2


def _surroundings(_call: int) -> tuple[str | None, str]:
    return os.environ.get("C360_WORKER_CHECK"), os.getcwd()


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
# `c360:health` renders no template and no deck (the asset graph names the QBR pack's modules for
# its code version only).
UNUSED_BY_HEALTH = ("jinja2", "pptx", *QBR_MODULES, "c360_dagster.domain.qbr.models")


@pytest.fixture(scope="module")
def health_as_the_program_runs_it(ran_fixtures, forks, tmp_path_factory) -> dict[str, object]:
    """`c360 c360:health --quiet` on a copy of the run project, in a fresh Python as the program
    starts (`console.script`), which reports at its exit what it imported; and the same command in
    a process that had imported everything (forked: tests/forked.py), for its output."""
    project = Path(shutil.copytree(ran_fixtures.root, tmp_path_factory.mktemp("startup") / "p", symlinks=True))
    env = {**os.environ, "DAGSTER_HOME": str(project / ".dagster_home")}
    code = (
        "import atexit, json, sys\n"
        "def seen():\n"
        "    imported = lambda names: sorted(m for m in names if sys.modules.get(m))\n"
        f"    found = {{'never': imported({NEVER_IMPORTED!r}), 'unused': imported({UNUSED_BY_HEALTH!r}),\n"
        "             'daemon_types': 'dagster._daemon.types' in sys.modules}\n"
        "    print(json.dumps(found), file=sys.stderr)\n"
        "atexit.register(seen)\n"
        "sys.argv = ['c360', 'c360:health', '--quiet']\n"
        "from c360_dagster.console import script\n"
        "script()\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    forked = forks.run(["c360", "c360:health", "--quiet"], cwd=project, env=env)
    assert forked.returncode == 0, forked.stderr
    return {"out": fresh.stdout, "imported": json.loads(fresh.stderr.splitlines()[-1]), "expected_out": forked.stdout}


def test_a_stage_command_imports_no_library_its_run_does_not_use(health_as_the_program_runs_it):
    """`c360:health` leaves Jinja2, python-pptx and the QBR pack's own modules unimported."""
    assert health_as_the_program_runs_it["imported"]["unused"] == []


@pytest.mark.untraced
def test_the_program_runs_a_stage_without_dagsters_daemons_pygments_alembic_or_numpy(health_as_the_program_runs_it):
    """`c360 c360:health` as the program runs it: its run stores in Dagster's run storage, which
    imports `dagster._daemon.types` only, opens the instance's stamped databases without Alembic,
    writes its lake table with PyArrow without NumPy, and its output is the same."""
    found = health_as_the_program_runs_it
    assert found["imported"]["never"] == [] and found["imported"]["daemon_types"]
    assert found["out"] == found["expected_out"] and found["out"].startswith("Health of 12 accounts")


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


def test_what_the_program_wrote_is_all_there_after_it_ends(ran_project, capsys):
    """A real `c360` process, ended by `end_program`: its whole report reaches the pipe, and what
    its run wrote is complete: the stage's document is the same bytes, the instance holds the
    run's success (SQLite's last commits) and `c360:verify` finds the signed log and the
    instance's witness of its head in agreement. A verdict of `ok: false` exits with status 1."""
    health = ran_project.customer / "health.json"
    before = health.read_bytes()
    done = _ending("-m", "c360_dagster.console", "c360:health", "--json", *ran_project.args)
    assert (done.returncode, done.stderr) == (0, "")
    run_id = json.loads(done.stdout)["run_id"]
    assert health.read_bytes() == before
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    assert console.main(["c360:verify", *ran_project.args]) == 0
    verified = capsys.readouterr().out

    log = ran_project.artifacts / "governance" / "events.jsonl"
    log.write_bytes(log.read_bytes()[:-2] + b"\n")  # the last line's signature no longer matches
    assert console.main(["c360:verify", *ran_project.args]) == 1
    expected = capsys.readouterr().out
    done = _ending("-m", "c360_dagster.console", "c360:verify", *ran_project.args)
    assert (done.returncode, done.stdout) == (1, expected)
    assert verified != expected
