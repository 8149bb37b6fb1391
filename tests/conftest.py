"""Shared test fixtures: the bundled customer fixtures and a tiny valid input folder to break."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib.abc
import importlib.machinery
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import coverage
import pytest
from forked import ForkServer

if TYPE_CHECKING:  # imported where used: xdist's controller, which runs no test, never needs c360
    from c360_dagster.domain.governance.lake import Lake

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "customer"

# Two accounts, every entity, every optional field both set and empty. Row numbers in tests
# count from 1 after the header.
SMALL_INPUTS = {
    "accounts.csv": """account_id,name,segment,industry,region,csm_owner,created_on
ACME-001,Acme Corp,enterprise,Manufacturing,NA,Dana,2022-01-15
BETA-002,Beta LLC,smb,,EMEA,,2023-03-01
""",
    "contacts.csv": """contact_id,account_id,name,email,role,started_on,ended_on
C-1,ACME-001,Ann Lee,ann@acme.test,champion,2022-02-01,
C-2,BETA-002,Bob Ray,,admin,2023-03-05,2024-01-31
""",
    "subs.csv": """subscription_id,account_id,product,plan,seats,arr,currency,start_date,renewal_date,status,auto_renew,discount_pct
S-1,ACME-001,Core,enterprise,100,120000.50,USD,2024-01-01,2025-01-01,active,true,10
S-2,BETA-002,Core,starter,5,3000,EUR,2024-03-01,2025-03-01,active,FALSE,
""",
    "usage.csv": """account_id,window_start,window_end,active_users,events,features_used,release_features_used
BETA-002,2024-06-03,2024-06-09,4,50,3,0
ACME-001,2024-06-10,2024-06-16,82,1300,12,4
ACME-001,2024-06-03,2024-06-09,80,1200,12,3
""",
    "cases.csv": """case_id,account_id,opened_on,closed_on,severity,sla_breached,category
CS-2,BETA-002,2024-06-01,,4,0,
CS-1,ACME-001,2024-05-01,2024-05-03,2,1,billing
""",
    "nps.csv": '''response_id,account_id,contact_id,responded_on,score,comment
N-1,ACME-001,C-1,2024-05-20,9,"Great, says ""thanks"""
N-2,BETA-002,,2024-05-21,6,
''',
    "invoices.csv": """invoice_id,account_id,subscription_id,issued_on,due_on,paid_on,amount,credit_amount,currency
I-1,ACME-001,S-1,2024-01-01,2024-01-31,2024-01-20,120000.50,,USD
I-2,BETA-002,S-2,2024-03-01,2024-03-31,,3000,99.999,EUR
""",
    "crm_opps.csv": """opp_id,account_id,name,type,stage,amount,currency,close_date
O-1,ACME-001,Acme renewal 2025,renewal,open,120000,USD,2024-12-15
""",
}


def write_inputs(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write `{file name: text or bytes}` into `folder` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def pretty_hash(path: Path) -> str:
    """The sha256 of the JSON document at `path` printed as `json.dumps(sort_keys=True, indent=2)`
    printed it before round 8 put each account on one line (its content, in the old layout)."""
    pretty = json.dumps(json.loads(path.read_bytes()), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return "sha256:" + hashlib.sha256(pretty.encode("utf-8")).hexdigest()


def replace_in(path: Path, old: str, new: str) -> None:
    """Break one input file by replacing text that must be there."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture
def fixtures_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled fixtures that a test may break."""
    return Path(shutil.copytree(FIXTURES_DIR, tmp_path / "customer"))


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    """A tiny valid input folder (all CSV) that a test may break."""
    return write_inputs(tmp_path / "inputs", SMALL_INPUTS)


REPO_ROOT = Path(__file__).resolve().parents[1]

# The files that take 5 s or more, slowest first (their tests' summed wall time, the mean of three
# whole runs of round 14). xdist hands out whole files in collection order (pyproject: --dist
# loadfile --no-loadscope-reorder), so these start first and the files left for the end are short:
# no worker runs a long one alone while the others are done.
SLOWEST_FIRST = (
    "test_faults.py",
    "test_scale_out.py",
    "test_bench.py",
    "test_shards.py",
    "test_ui_browser.py",
    "test_startup.py",
    "test_qbr_render.py",
    "test_account_partitions.py",
    "test_hostile.py",
    "test_console_summaries.py",
    "test_readme.py",
    "test_cli.py",
    "test_lake.py",
    "test_instance.py",
    "test_qbr.py",
    "test_config_preflight.py",
    "test_account_batches.py",
    "test_ledger_shards.py",
    "test_trust_cli.py",
    "test_c360_load.py",
    "test_asset_checks.py",
    "test_anchor.py",
    "test_split.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` starts one worker more than the cores this process may use: about a quarter of
    the suite's test time is waiting (on servers, browsers and child processes), which the extra
    worker fills (docs/performance.md, "The test suite's wall time", round 10).
    PYTEST_XDIST_AUTO_NUM_WORKERS still sets the number (xdist's own hook reads it)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


# Where the suite's temporary folders go when the user names none: a RAM disk. Every stage the chain
# writes is fsynced and Dagster commits each event to SQLite; on a disk that waiting was about 40%
# of a chain run's wall time (docs/performance.md, "The test suite's wall time").
RAM_DISK = Path("/dev/shm")
RAM_DISK_FREE = 2 << 30  # a whole run keeps about 300 MB there; a container's default 64 MB /dev/shm is too small


def pytest_configure(config: pytest.Config) -> None:
    """TMPDIR on the RAM disk unless TMPDIR or --basetemp is set, or the machine has none. Set in
    the controller before it makes its base folder; xdist's workers and every process a test starts
    inherit it. Not when the RAM disk has less than 2 GiB free."""
    if "TMPDIR" in os.environ or config.option.basetemp or not os.access(RAM_DISK, os.W_OK):
        return
    if shutil.disk_usage(RAM_DISK).free < RAM_DISK_FREE:
        return
    os.environ["TMPDIR"] = str(RAM_DISK)
    tempfile.tempdir = None  # tempfile.gettempdir() reads TMPDIR again


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    # `untraced` tests run no line other tests do not: coverage skips them (pytest-cov's `no_cover`).
    # Marked only while coverage runs: under --no-cov pytest-cov 7.1's `no_cover` fails the test.
    if getattr(config.pluginmanager.getplugin("_cov"), "cov_controller", None) is not None:
        for item in items:
            if item.get_closest_marker("untraced"):
                item.add_marker(pytest.mark.no_cover)


def _coverage(config: pytest.Config) -> Any:
    """pytest-cov's controller of this process's coverage while it traces, else None."""
    controller = getattr(config.pluginmanager.getplugin("_cov"), "cov_controller", None)
    tracing = controller is not None and controller.cov is not None
    return controller if tracing and coverage.Coverage.current() is controller.cov else None


@contextlib.contextmanager
def untraced(config: pytest.Config) -> Iterator[None]:
    """Coverage paused while a fixture builds what tests share: the `untraced` marker's rule for a
    fixture. Only for builds that run no line the traced tests leave uncovered (chosen from a run
    with `--cov-context=test`, docs/performance.md, round 14)."""
    controller = _coverage(config)
    if controller is None:
        yield
        return
    controller.pause()
    try:
        yield
    finally:
        controller.resume()


class _OwnModulesTraced(importlib.abc.MetaPathFinder):
    """While the collection runs untraced, each c360 module imported runs its body traced: what a
    module defines as it is imported is covered as before."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.depth = 0  # a module's body imports others: the outermost resumes and pauses

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] != "c360_dagster":
            return None
        for finder in sys.meta_path:
            found = None if finder is self else getattr(finder, "find_spec", None)
            spec = found(name, path, target) if found else None
            if spec is not None and spec.loader is not None:
                spec.loader = _TracedLoader(spec.loader, self)
                return spec
        return None


class _TracedLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, finder: _OwnModulesTraced) -> None:
        self.loader, self.finder = loader, finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module as its own loader made it
        finder = self.finder
        if finder.depth == 0:
            finder.controller.resume()
        finder.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            finder.depth -= 1
            if finder.depth == 0:
                finder.controller.pause()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Any:
    """Collected untraced, but c360's own modules (`_OwnModulesTraced`): under coverage on Python
    3.11 every line pytest runs to import and rewrite the test modules costs about twice its CPU,
    about 2.5 CPU-s a test process (docs/performance.md, round 14)."""
    controller = _coverage(session.config)
    if controller is None:
        return (yield)
    hook = _OwnModulesTraced(controller)
    sys.meta_path.insert(0, hook)
    try:
        with untraced(session.config):
            return (yield)
    finally:
        sys.meta_path.remove(hook)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """xdist's controller runs no test: its coverage, started before this file was imported, would
    only trace the controller's handling of the workers' reports.

    In a worker, pytest-cov started two: one as it does in the controller (the worker's arguments
    ask for workers too), then the worker's own, on top. Pausing the worker's resumed the first,
    whose lines nobody saves: coverage never stopped tracing, in `untraced` tests or anywhere. The
    first is stopped here, so a pause is one."""
    controller = _coverage(session.config)
    if controller is None:
        return
    if session.config.pluginmanager.hasplugin("dsession"):
        controller.pause()
    elif hasattr(session.config, "workerinput"):
        controller.pause()
        while (stale := coverage.Coverage.current()) is not None:
            stale.stop()
        controller.resume()


# A test process collects garbage as c360's own processes do (runner.collector_off_for_start_up):
# what its start-up and the collection built is frozen, never scanned again, and the youngest
# generation is collected every this many allocations, not Python's 700; a threshold other than
# c360's, so test_startup tells the two apart. About 4% of a worker's CPU (docs/development.md).
TEST_GC_THRESHOLD = 20_000


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()
    gc.set_threshold(TEST_GC_THRESHOLD)


@pytest.fixture(autouse=True, scope="session")
def dagster_home_outside_the_working_tree(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A Dagster instance of this test process's own: never the working tree's `.dagster_home`,
    never shared between parallel workers. Tests that need a fresh one set their own."""
    os.environ["DAGSTER_HOME"] = str(tmp_path_factory.mktemp("dagster_home"))


class Project:
    """A scratch c360 project: its own artifacts folder and Dagster instance."""

    def __init__(self, root: Path) -> None:
        self.artifacts = root / "artifacts"
        self.customer = self.artifacts / "customer"
        self.configs = str(REPO_ROOT / "configs" / "customer")
        self.args = ["--artifacts", str(self.artifacts), "--configs", self.configs]

    @property
    def lake(self) -> Lake:
        """The project's lake, as its scale.yaml (if any) configures it."""
        from c360_dagster.domain.governance.lake import open_lake

        return open_lake(self.configs, self.artifacts, REPO_ROOT / "contracts" / "schemas")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """Run `c360` commands from the repo root against a temporary instance and artifacts folder."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return Project(tmp_path)


class RanProject(Project):
    """A project folder as a user has it (inputs, configs, contracts) after `c360 c360:run` on the
    bundled fixtures. Its paths are relative to the folder, so a copy of it is the same project
    (its instance's records name the signed log as `artifacts/...`, as `c360:verify` looks it up)."""

    def __init__(self, root: Path, out: str) -> None:
        super().__init__(root)
        self.root = root
        self.configs = str(root / "configs" / "customer")
        self.args = ["--artifacts", "artifacts", "--configs", "configs/customer"]
        self.out = out  # what the run printed (with --quiet)


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test run's temporary folder that all its processes share: xdist's workers' common parent."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`<this run's temporary folder>/<name>`, made by `build` once for the whole run: the first
    xdist worker that asks builds it under a lock, the others wait and share it (tests copy it or
    only read it). A session fixture built per worker cost each worker its chain run."""
    shared = shared_folder(tmp_path_factory)
    folder, built = shared / name, shared / f"{name}.built"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            built.touch()
    return folder


@pytest.fixture(scope="session")
def ran_fixtures(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, private_signing_key: None
) -> RanProject:
    """The whole chain run once per test run on the bundled fixtures; tests only read it.

    A test that changes the project takes its own copy (`ran_project`) instead of running the chain.
    Untraced: `test_qbr_render`'s decks come from the same command on the same fixtures.
    """
    with untraced(pytestconfig):
        folder = built_once(tmp_path_factory, "ran_fixtures", _run_the_fixtures)
    return RanProject(folder / "project", (folder / "out.txt").read_text(encoding="utf-8"))


def _run_the_fixtures(folder: Path) -> None:
    from c360_dagster.console import main

    root = folder / "project"
    for name in ("fixtures", "configs", "contracts"):
        shutil.copytree(REPO_ROOT / name, root / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("DAGSTER_HOME", str(root / ".dagster_home"))
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["c360:run", "--quiet"]) == 0
    (folder / "out.txt").write_text(stdout.getvalue(), encoding="utf-8")


@pytest.fixture
def ran_project(ran_fixtures: RanProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RanProject:
    """A private copy of `ran_fixtures` (artifacts and Dagster instance), the working folder and
    DAGSTER_HOME pointing at it: what a test that changes a run project starts from."""
    root = Path(shutil.copytree(ran_fixtures.root, tmp_path / "project", symlinks=True))
    monkeypatch.chdir(root)
    monkeypatch.setenv("DAGSTER_HOME", str(root / ".dagster_home"))
    return RanProject(root, ran_fixtures.out)


@pytest.fixture(scope="session")
def materialized_fixtures(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, private_signing_key: None
) -> Path:
    """The chain's assets (`CHAIN_ASSETS`, shard 0) materialized once per test run on a copy of
    the bundled fixtures: a folder of `inputs/`, `artifacts/` and the instance's `dagster_home/`.
    The project's paths were relative to the folder, so nothing in it names the folder and a copy
    of it is the same project (`chained`). Untraced: the chain's tests run every line of it."""
    with untraced(pytestconfig):
        return built_once(tmp_path_factory, "materialized_fixtures", _materialize_the_fixtures) / "project"


def _materialize_the_fixtures(folder: Path) -> None:
    import dagster as dg

    from c360_dagster.defs.customer import CHAIN_ASSETS
    from c360_dagster.defs.resources import C360Project

    root = folder / "project"
    shutil.copytree(FIXTURES_DIR, root / "inputs")
    (root / CHAINED_HOME).mkdir()
    relative = C360Project(
        fixtures_dir="inputs",
        configs_dir=str(REPO_ROOT / "configs" / "customer"),
        contracts_dir=str(REPO_ROOT / "contracts" / "schemas"),
        artifacts_dir="artifacts",
    )
    with pytest.MonkeyPatch.context() as patch, project_instance_for_test(str(root / CHAINED_HOME)) as instance:
        patch.chdir(root)
        dg.materialize(CHAIN_ASSETS, instance=instance, resources={"project": relative}, partition_key="0")


CHAINED_HOME = "dagster_home"


def project_instance_for_test(temp_dir: str | None = None) -> contextlib.AbstractContextManager[Any]:
    """`dg.instance_for_test` on the storages a c360 project's instance has (`instance.DAGSTER_YAML`:
    one pooled SQLite event log), not Dagster's default of a SQLite file per run, which stores an
    event in about four times the CPU."""
    import dagster as dg
    import yaml

    from c360_dagster.instance import DAGSTER_YAML

    return dg.instance_for_test(overrides=yaml.safe_load(DAGSTER_YAML), temp_dir=temp_dir)


@pytest.fixture
def chained(materialized_fixtures: Path, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """`(instance, project)` as right after `dg.materialize(CHAIN_ASSETS, ..., partition_key="0")`
    on a fresh `project_instance_for_test()` with the bundled fixtures as inputs: a private copy of
    `materialized_fixtures` in `tmp_path` (`inputs/`, `artifacts/`), for tests that start from a
    materialized chain rather than test its run."""

    from c360_dagster.defs.resources import C360Project

    shutil.copytree(materialized_fixtures, tmp_path, symlinks=True, dirs_exist_ok=True)
    project = C360Project(
        fixtures_dir=str(tmp_path / "inputs"),
        configs_dir=str(REPO_ROOT / "configs" / "customer"),
        contracts_dir=str(REPO_ROOT / "contracts" / "schemas"),
        artifacts_dir=str(tmp_path / "artifacts"),
    )
    with project_instance_for_test(str(tmp_path / CHAINED_HOME)) as instance:
        yield instance, project


@pytest.fixture(autouse=True, scope="session")
def private_signing_key(tmp_path_factory) -> Iterator[None]:
    """Tests sign with one key of this test run, in a temporary config folder shared by the xdist
    workers (they share the projects it signed, `built_once`), never the user's ~/.config/c360.

    Session-wide, so it is in place before module-scoped fixtures start their subprocesses.
    """
    from c360_dagster.domain.governance import eventlog

    def make_key(config_home: Path) -> None:
        eventlog.load_or_create_signing_key(config_home / "c360" / "signing.key")

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("C360_SIGNING_KEY_FILE", raising=False)
        patch.delenv("C360_SIGNING_KEY", raising=False)
        patch.setenv("XDG_CONFIG_HOME", str(built_once(tmp_path_factory, "config-home", make_key)))
        yield


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """Real c360 and Dagster processes, forked from one process of the test run that imported them
    (tests/forked.py)."""
    server = ForkServer(tmp_path_factory.mktemp("forks"), shared_folder(tmp_path_factory))
    yield server
    server.close()
