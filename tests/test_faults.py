"""Fault injection: a c360 process SIGKILLed at each write boundary leaves nothing a reader or
`c360:verify` can be fooled by, and the next run repairs everything byte for byte.

Each case copies a project on which the previous command already ran, runs the next command
with `C360_FAILPOINT=<name>` (the process kills itself there with a real SIGKILL), then checks:
`c360 c360:verify` passes; every stage reads back verified as its old or its new generation;
the same command run again gives artifacts byte-identical to a clean run; nothing temporary is
left. The commands run in processes forked from one process that imported c360, its asset graph
and Dagster's storages once, so a case costs its runs, not a Python and Dagster start-up each.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES_DIR, SMALL_INPUTS, write_inputs

from c360_dagster.domain.core import stages
from c360_dagster.domain.governance.lake import open_lake

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["configs", "contracts", "pyproject.toml", "workspace.yaml"]

# Reads one JSON request per line, forks, runs the c360 console in the child, answers how it ended.
FORK_SERVER = r"""
import json, os, sys, tempfile
from c360_dagster import commands, console, definitions
from c360_dagster.instance import ensure_dagster_home
# What every command does before its run, done once here for every forked command: import the
# asset graph, and Dagster's storages (opening a throwaway instance imports them). About 2.5
# CPU-seconds a command; the command, its run and its SIGKILL stay real.
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp()
ensure_dagster_home()
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            code = console.main(request["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    print(json.dumps({"signal": killed, "code": os.waitstatus_to_exitcode(status)}), flush=True)
"""

# The chain, one command per step; each step's project is the previous one's plus that command.
OLD = [
    ["c360:load", "--dir", "fixtures/customer"],
    ["c360:health"],
    ["c360:signals"],
    ["c360:renewals"],
    ["c360:playbook", "--account", "ACME-001"],
    ["c360:qbr", "--account", "ACME-001"],
]
NEW = [["c360:load", "--dir", "new"], *OLD[1:]]  # the same chain on other inputs: every output changes

# (failpoint, index into NEW of the command that hits it).
CASES = [
    ("write:360.json", 0),
    ("write:usage.parquet", 0),
    ("write:manifest.json", 0),
    ("write:stage.json", 0),
    ("switch:360", 0),
    ("switched:360", 0),
    ("event:customer_360", 0),
    ("write:events.head", 0),
    ("lake:crm_opps", 0),
    ("write:c360.prom", 0),
    ("write:health.json", 1),
    ("switch:health", 1),
    ("lake:account_health", 1),
    ("write:signals.parquet", 2),
    ("write:summary.md", 3),
    ("switch:renewals", 3),
    ("write:ACME-001.md", 4),
    ("switch:playbooks/ACME-001", 4),
    ("write:index.md", 5),
    ("write:qbr_ACME-001.pptx", 5),
    ("switched:qbr_ACME-001", 5),
]

# Killed after its outputs went live and before its event was signed: `verify` cannot tell those
# outputs from a forgery (docs/governance.md), so it says so, and the rerun makes them signed.
PUBLISHED_UNSIGNED = {"switched:qbr_ACME-001"}


class Runner:
    """Runs c360 commands in processes forked from one pre-imported c360 process."""

    def __init__(self, config_home: Path) -> None:
        # One signing key (outside the projects, as in real use) for every project of the module.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(config_home)}
        for name in ("C360_FAILPOINT", "C360_SIGNING_KEY", "C360_SIGNING_KEY_FILE"):
            env.pop(name, None)
        self.server = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def run(self, project: Path, argv: list[str], failpoint: str | None = None) -> dict:
        env = {"DAGSTER_HOME": str(project / ".dagster_home"), "C360_FAILPOINT": failpoint or ""}
        log = project / "run.log"
        request = {"cwd": str(project), "env": env, "argv": [*argv, "--quiet"], "log": str(log)}
        assert self.server.stdin and self.server.stdout
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        ended = json.loads(self.server.stdout.readline())
        ended["output"] = log.read_text(encoding="utf-8", errors="replace")
        log.unlink()
        return ended

    def ok(self, project: Path, argv: list[str]) -> str:
        ended = self.run(project, argv)
        assert ended["code"] == 0, ended["output"]
        return ended["output"]

    def close(self) -> None:
        assert self.server.stdin
        self.server.stdin.close()
        self.server.wait(timeout=60)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The runner and the projects after each command of OLD then NEW (index i: NEW[:i] done)."""
    runner = Runner(tmp_path_factory.mktemp("config-home"))
    first = tmp_path_factory.mktemp("faults") / "p0"
    first.mkdir()
    for name in PROJECT_FILES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, first / name)
    shutil.copytree(FIXTURES_DIR, first / "fixtures" / "customer")
    write_inputs(first / "new", SMALL_INPUTS)
    for argv in OLD:
        runner.ok(first, argv)
    projects = [first]
    for index, argv in enumerate(NEW, start=1):
        project = first.with_name(f"p{index}")
        shutil.copytree(projects[-1], project, symlinks=True)
        runner.ok(project, argv)
        projects.append(project)
    yield runner, projects
    runner.close()


def _stage_hashes(project: Path) -> dict[str, str]:
    """Each stage's live generation, every file read back and verified."""
    customer = project / "artifacts" / "customer"
    found = {}
    # The roll-ups' stages, then each shard's own (`shards/<k>/<stage>`).
    for root in [customer, *sorted((customer / stages.SHARD_ROOTS).glob("*"))]:
        prefix = "" if root == customer else f"{root.relative_to(customer).as_posix()}/"
        for manifest in sorted((root / stages.STAGES).glob("**/live/stage.json")):
            stage = str(manifest.parent.parent.relative_to(root / stages.STAGES))
            stored = stages.open_stage(root, stage)
            for path in stored.files:
                stored.read_bytes(path)
            found[prefix + stage] = stored.manifest_hash
    return found


def _artifacts(project: Path) -> dict[str, object]:
    """Every file and link under artifacts/customer (bytes or link target), and the lake's rows."""
    customer = project / "artifacts" / "customer"
    found: dict[str, object] = {}
    for folder, dirs, files in os.walk(customer):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(customer))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_file():
                found[key] = path.read_bytes()
    db = open_lake(project / "configs" / "customer", project / "artifacts", project / "contracts" / "schemas")
    for table in ("crm_opps", "account_health", "customer_signals", "renewal_forecasts"):
        for as_of in db.snapshots(table):
            found[f"lake:{table}@{as_of}"] = db.read_snapshot(table, as_of).to_dicts()
    return found


# The chain's projects never change (each case works on a copy): read each of them once.
_chain_stage_hashes = functools.cache(_stage_hashes)
_chain_artifacts = functools.cache(_artifacts)


def _temporary_files(project: Path) -> list[str]:
    artifacts = project / "artifacts"
    found = [str(p) for p in artifacts.rglob("*.tmp")]
    found += [str(p) for p in (artifacts / "customer" / stages.STAGES / stages.STAGING).iterdir()]
    for stage_dir in (artifacts / "customer" / stages.STAGES).glob("**/live"):
        found += [str(p) for p in stage_dir.parent.iterdir() if p.name not in (stages.LIVE, os.readlink(stage_dir))]
    return found


@pytest.mark.parametrize(("failpoint", "step"), CASES, ids=[name for name, _ in CASES])
@pytest.mark.untraced
def test_a_kill_at_each_write_boundary_leaves_old_or_new_and_the_next_run_repairs_it(chain, tmp_path, failpoint, step):
    runner, projects = chain
    before, clean = projects[step], projects[step + 1]
    project = tmp_path / "p"
    shutil.copytree(before, project, symlinks=True)

    killed = runner.run(project, NEW[step], failpoint)
    assert killed["signal"] == signal.SIGKILL, f"{failpoint} was never reached:\n{killed['output']}"

    verdict = runner.run(project, ["c360:verify"])
    if failpoint in PUBLISHED_UNSIGNED:
        assert verdict["code"] == 1 and "killed between publishing it and signing it" in verdict["output"], verdict
    else:
        assert (verdict["code"], verdict["output"][:4]) == (0, "OK: "), verdict["output"]
    old, new = _chain_stage_hashes(before), _chain_stage_hashes(clean)
    for stage, digest in _stage_hashes(project).items():
        assert digest in (old.get(stage), new.get(stage)), f"{stage} is neither its old nor its new generation"

    runner.ok(project, NEW[step])
    assert _artifacts(project) == _chain_artifacts(clean)
    assert _temporary_files(project) == []
    assert runner.ok(project, ["c360:verify"]).startswith("OK: ")


@pytest.mark.parametrize(
    ("failpoint", "scored"),
    [("write:usage.parquet", "old"), ("switch:360", "new"), ("switched:360", "new")],
)
def test_health_after_a_killed_load_scores_one_whole_view_and_signs_it(chain, tmp_path, failpoint, scored):
    """The issue's reproduction: a load killed mid-switch must not give health a mixed view."""
    runner, projects = chain
    project = tmp_path / "p"
    shutil.copytree(projects[0], project, symlinks=True)
    assert runner.run(project, NEW[0], failpoint)["signal"] == signal.SIGKILL

    if failpoint == "switch:360":
        # Killed after the new split went live but before the shard's view did: health refuses
        # the old view of another split, writing nothing, and the load run again completes it.
        logs = sorted((project / "artifacts" / "governance").rglob("*.jsonl"))
        before = _artifacts(project), [log.read_bytes() for log in logs]
        refused = runner.run(project, ["c360:health"])
        assert refused["code"] == 2 and "c360: SHARD_STALE: shard 0's 360 output" in refused["output"]
        assert (_artifacts(project), [log.read_bytes() for log in logs]) == before
        runner.ok(project, NEW[0])
    runner.ok(project, ["c360:health"])
    accounts = json.loads((project / "artifacts" / "customer" / "health.json").read_text())["accounts"]
    view = {"old": projects[0], "new": projects[1]}[scored]
    expected = json.loads((view / "artifacts" / "customer" / "360.json").read_text())["records"]["accounts"]
    assert sorted(accounts) == sorted(record["account_id"] for record in expected)
    # Shard 0's own chain: health's event, then lake/account_health_table's.
    events = (project / "artifacts" / "governance" / "shards" / "0" / "events.jsonl").read_text().splitlines()
    signed = json.loads(events[-2])
    assert signed["asset"] == "account_health"
    assert signed["inputs"]["customer_360"] == _chain_stage_hashes(view)["shards/0/360"]
