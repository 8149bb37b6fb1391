"""The `c360` shim end to end on the bundled fixtures, on a temporary Dagster instance."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from c360_dagster.console import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "customer"


def c360(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.untraced
def test_load_prints_summary_and_writes_360(project, capsys):
    code, out, _ = c360(capsys, "c360:load", "--dir", str(FIXTURES), *project.args)
    assert code == 0
    assert "Customer 360 loaded" in out
    assert "ACME" not in out or "accounts" in out
    document = json.loads((project.customer / "360.json").read_text())
    assert document["counts"]["accounts"] >= 10
    assert (project.customer / "frames" / "360" / "manifest.json").exists()


@pytest.mark.untraced
def test_load_json_output_is_json(project, capsys):
    code, out, _ = c360(capsys, "c360:load", "--dir", str(FIXTURES), "--json", *project.args)
    assert code == 0
    report = json.loads(out)
    assert report["view"]["counts"]["accounts"] >= 10
    assert report["view"]["as_of"] == json.loads((project.customer / "360.json").read_text())["as_of"]


@pytest.mark.untraced
def test_explicit_as_of_is_used(project, capsys):
    code, out, _ = c360(capsys, "c360:load", "--dir", str(FIXTURES), "--as-of", "2026-01-15", "--json", *project.args)
    assert code == 0
    assert json.loads(out)["view"]["as_of"] == "2026-01-15"


def test_bad_as_of_is_a_usage_error(project, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["c360:load", "--dir", str(FIXTURES), "--as-of", "2026-13-01", *project.args])
    assert exit_info.value.code == 2
    assert "expected a date YYYY-MM-DD" in capsys.readouterr().err


@pytest.mark.untraced
def test_bad_input_fails_cleanly_and_leaves_earlier_output(project, capsys, tmp_path):
    assert c360(capsys, "c360:load", "--dir", str(FIXTURES), *project.args)[0] == 0
    before = (project.customer / "360.json").read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURES, broken)
    accounts = (broken / "accounts.csv").read_text().splitlines()
    accounts[1] = accounts[1].replace(accounts[1].split(",")[0], "../x", 1)
    (broken / "accounts.csv").write_text("\n".join(accounts) + "\n")
    code, _, err = c360(capsys, "c360:load", "--dir", str(broken), *project.args)
    assert code == 2
    assert "accounts.csv" in err and "row 1" in err and "account_id" in err
    assert "Traceback" not in err
    assert (project.customer / "360.json").read_bytes() == before


def test_commands_before_load_explain_what_to_run(project, capsys):
    code, _, err = c360(capsys, "c360:health", *project.args)
    assert code == 2
    assert "c360:load" in err


def test_runs_as_a_module_too(project):
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "c360_dagster.console", "c360:summary", *project.args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert "nothing loaded yet" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_unknown_account_suggests_close_matches(ran_project, capsys):
    project = ran_project
    for command in ("c360:playbook", "c360:qbr"):
        assert main([command, "--account", "ACME-01", *project.args]) == 2
        assert "unknown account id 'ACME-01'; did you mean ACME-001?" in capsys.readouterr().err
    assert main(["c360:health", "--account", "acme-001", "--quiet", *project.args]) == 2
    assert "did you mean ACME-001?" in capsys.readouterr().err


def test_health_before_any_load_says_to_load_first_and_starts_no_run(project, capsys):
    assert main(["c360:health", "--quiet", *project.args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("c360: STAGE_MISSING: ") and err.endswith(
        "run `c360 c360:load --dir fixtures/customer` first\n"
    )
    assert not Path(os.environ["DAGSTER_HOME"]).exists()  # no instance, so no run


def test_health_of_one_account_is_read_from_the_live_stage_without_a_run(project, capsys):
    import dagster as dg

    assert main(["c360:load", "--dir", "fixtures/customer", "--quiet", *project.args]) == 0
    capsys.readouterr()
    assert main(["c360:health", "--account", "ACME-001", *project.args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("c360: STAGE_MISSING: ") and err.endswith(
        "nothing scored yet; run `c360 c360:health` first\n"
    )
    assert main(["c360:health", "--quiet", *project.args]) == 0
    runs = dg.DagsterInstance.get().get_runs_count()
    log = project.artifacts / "governance" / "events.jsonl"
    logged = log.read_bytes()
    capsys.readouterr()
    assert main(["c360:health", "--account", "ACME-001", *project.args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Health score 68/100: amber (scored, lifecycle active, default scorecard).\n")
    # Read, not rescored: no run on the instance, no event in the log.
    assert (dg.DagsterInstance.get().get_runs_count(), log.read_bytes()) == (runs, logged)
    assert main(["c360:health", "--account", "ACME-001", "--config", "x.yaml", *project.args]) == 2
    assert capsys.readouterr().err.startswith("c360: USAGE_INVALID: --account explains the score already made")


@pytest.mark.parametrize(
    ("command", "module", "extra"), [("c360:ui", "dagster_webserver", "ui"), ("c360:bench", "psutil", "bench")]
)
def test_a_command_whose_extra_is_not_installed_says_which_to_install(
    project, capsys, monkeypatch, command, module, extra
):
    # The runtime install leaves the UI and the benchmark's tools out (pyproject.toml's extras).
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))
    code, out, err = c360(capsys, command, "--accounts", "10") if extra == "bench" else c360(capsys, command)
    assert code == 2 and out == ""
    assert (
        err
        == f'c360: EXTRA_MISSING: {command} needs the `{extra}` extra: pip install -c constraints.txt -e ".[{extra}]"\n'
    )
