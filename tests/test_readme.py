"""The README's quickstart and demo sequence stay true: each command prints what the README shows."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from c360_dagster.console import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_steps() -> list[tuple[str, str]]:
    """(command, expected stdout) for each `$ ...` line of the README's console blocks, in reading order."""
    steps: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.DOTALL):
        assert block.startswith("$ "), block
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, _, output = chunk.partition("\n")
            steps.append((command, output))
    return steps


def demo_steps() -> list[tuple[str, str]]:
    """The `c360` steps of the README's demo section."""
    demo = README.split("<!-- demo:start -->")[1].split("<!-- demo:end -->")[0]
    return [step for step in readme_steps() if step[0].startswith("c360 ") and f"$ {step[0]}\n" in demo]


def test_quickstart_names_install_run_and_test_commands():
    install = 'pip install -c constraints.txt -e ".[dev]"'
    assert install in README
    assert "c360 c360:run" in README
    assert "python -m pytest" in README
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert install in ci and "python -m pytest" in ci


def test_every_python_the_project_declares_is_one_ci_runs():
    """pyproject's classifiers and requires-python name exactly 3.11 (.ci/run) and the Pythons
    that .ci/other-pythons installs and tests on, the newest last; ruff and mypy check for the
    oldest, so nothing newer than 3.11 allows slips in."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    declared = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    other_pythons = (REPO / ".ci" / "other-pythons").read_text(encoding="utf-8")
    listed = re.search(r"^pythons=\(([0-9. ]+)\)$", other_pythons, flags=re.MULTILINE)
    assert listed is not None
    assert declared == ["3.11", *listed.group(1).split()]
    newest_minor = int(declared[-1].split(".")[1])
    assert project["requires-python"] == f">={declared[0]},<3.{newest_minor + 1}"
    assert "bash .ci/other-pythons" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + declared[0].replace(".", "")
    assert pyproject["tool"]["mypy"]["python_version"] == declared[0]


def test_demo_sequence_covers_every_stage():
    commands = [shlex.split(command)[1] for command, _ in demo_steps()]
    for stage in ("c360:load", "c360:health", "c360:signals", "c360:renewals", "c360:playbook", "c360:qbr"):
        assert stage in commands


@pytest.mark.untraced
def test_readme_in_reading_order_prints_what_it_shows(tmp_path, monkeypatch, capsys):
    """Quickstart then demo, as a newcomer types them in a fresh copy of the project."""
    for folder in ("fixtures", "configs", "contracts"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster_home"))
    steps = readme_steps()
    assert steps[0][0] == "c360 c360:run", "the quickstart's run comes first"
    for command, expected in steps:
        if not command.startswith("c360 "):  # a shell step (start over, make a candidate config)
            shell = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=False)
            assert (shell.returncode, shell.stdout, shell.stderr) == (0, expected, ""), command
            continue
        code = main(shlex.split(command)[1:])
        captured = capsys.readouterr()
        # stdout, plus the one-paragraph reason a failing command prints on stderr
        # (progress lines on stderr carry timings and are not part of the README).
        out = captured.out + "".join(line + "\n" for line in captured.err.splitlines() if line.startswith("c360:"))
        assert out == expected, f"{command} printed:\n{out}"
        assert code == (2 if "\nc360: " in "\n" + out else 0), command


def test_readme_names_the_spec_command_equivalent():
    assert "python -m cli.console c360:" in README
    assert "python -m c360_dagster.console c360:" in README


@pytest.mark.parametrize(
    "doc",
    [
        "architecture",
        "customer-360",
        "renewals",
        "qbr",
        "governance",
        "operations",
        "trust",
        "backtest",
        "performance",
        "inputs",
        "development",
    ],
)
def test_documents_the_readme_links_exist(doc):
    assert f"docs/{doc}.md" in README
    assert (REPO / "docs" / f"{doc}.md").exists()
