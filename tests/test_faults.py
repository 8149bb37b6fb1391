"""Fault injection: a c360 process SIGKILLed at each write boundary leaves nothing a reader or
`c360:verify` can be fooled by, and the next run repairs everything byte for byte.

Each case copies a project on which the previous command already ran, runs the next command
with `C360_FAILPOINT=<name>` (the process kills itself there with a real SIGKILL), then checks:
`c360 c360:verify` passes; every stage reads back verified as its old or its new generation;
the same command run again gives artifacts byte-identical to a clean run; nothing temporary is
left. The commands run in processes forked from the fork server (tests/forked.py), which imported
c360, its asset graph and Dagster's storages once: a case costs its runs, not a Python and Dagster
start-up each.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import FIXTURES_DIR, SMALL_INPUTS, write_inputs
from forked import Ended, ForkServer

from c360_dagster.domain.core import stages
from c360_dagster.domain.governance.lake import open_lake

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["configs", "contracts", "pyproject.toml", "workspace.yaml"]

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
    """Runs c360 commands in processes forked from the pre-imported fork server (tests/forked.py)."""

    def __init__(self, forks: ForkServer, config_home: Path) -> None:
        self.forks = forks
        # One signing key (outside the projects, as in real use) for every project of the module.
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
        for name in ("C360_FAILPOINT", "C360_SIGNING_KEY", "C360_SIGNING_KEY_FILE"):
            self.env.pop(name, None)

    def run(self, project: Path, argv: list[str], failpoint: str | None = None) -> Ended:
        env = {**self.env, "DAGSTER_HOME": str(project / ".dagster_home"), "C360_FAILPOINT": failpoint or ""}
        log = project / "run.log"
        ended = self.forks.run(["c360", *argv, "--quiet"], cwd=project, env=env, stdout=log)
        log.unlink()
        return ended

    def ok(self, project: Path, argv: list[str]) -> str:
        ended = self.run(project, argv)
        assert ended.returncode == 0, ended.stdout
        return ended.stdout


@pytest.fixture(scope="module")
def chain(forks, tmp_path_factory):
    """The runner and the projects after each command of OLD then NEW (index i: NEW[:i] done)."""
    runner = Runner(forks, tmp_path_factory.mktemp("config-home"))
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
    return runner, projects


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
    assert killed.returncode == -signal.SIGKILL, f"{failpoint} was never reached:\n{killed.stdout}"

    verdict = runner.run(project, ["c360:verify"])
    if failpoint in PUBLISHED_UNSIGNED:
        assert verdict.returncode == 1 and "killed between publishing it and signing it" in verdict.stdout, verdict
    else:
        assert (verdict.returncode, verdict.stdout[:4]) == (0, "OK: "), verdict.stdout
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
    assert runner.run(project, NEW[0], failpoint).returncode == -signal.SIGKILL

    if failpoint == "switch:360":
        # Killed after the new split went live but before the shard's view did: health refuses
        # the old view of another split, writing nothing, and the load run again completes it.
        logs = sorted((project / "artifacts" / "governance").rglob("*.jsonl"))
        before = _artifacts(project), [log.read_bytes() for log in logs]
        refused = runner.run(project, ["c360:health"])
        assert refused.returncode == 2 and "c360: SHARD_STALE: shard 0's 360 output" in refused.stdout
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
