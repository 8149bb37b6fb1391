"""The README's quickstart and demo sequence stay true: each command prints what the README shows."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from c360_dagster.console import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def demo_steps() -> list[tuple[str, str]]:
    """(command, expected stdout) for each `$ c360 ...` in the README's demo section."""
    demo = README.split("<!-- demo:start -->")[1].split("<!-- demo:end -->")[0]
    steps = []
    for block in re.findall(r"```console\n(.*?)```", demo, flags=re.DOTALL):
        command, _, output = block.partition("\n")
        assert command.startswith("$ c360 "), command
        steps.append((command[2:], output))
    return steps


def test_quickstart_names_install_run_and_test_commands():
    assert 'pip install -e ".[dev]"' in README
    assert "c360 c360:run" in README
    assert "python -m pytest" in README
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]"' in ci and "python -m pytest" in ci


def test_demo_sequence_covers_every_stage():
    commands = [shlex.split(command)[1] for command, _ in demo_steps()]
    for stage in ("c360:load", "c360:health", "c360:signals", "c360:renewals", "c360:playbook", "c360:qbr"):
        assert stage in commands


def test_demo_sequence_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    for folder in ("fixtures", "configs", "contracts"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster_home"))
    for command, expected in demo_steps():
        argv = shlex.split(command)[1:]
        code = main(argv)
        captured = capsys.readouterr()
        # stdout, plus the one-paragraph reason a failing command prints on stderr
        # (progress lines on stderr carry timings and are not part of the README).
        out = captured.out + "".join(line + "\n" for line in captured.err.splitlines() if line.startswith("c360:"))
        assert out == expected, f"{command} printed:\n{out}"
        assert code == (2 if "\nc360: " in "\n" + out else 0), command


@pytest.mark.parametrize(
    "doc", ["architecture", "customer-360", "renewals", "qbr", "governance", "operations", "trust", "backtest", "performance"]
)
def test_documents_the_readme_links_exist(doc):
    assert f"docs/{doc}.md" in README
    assert (REPO / "docs" / f"{doc}.md").exists()
