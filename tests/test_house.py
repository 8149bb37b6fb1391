"""The package's rooms keep their walls (docs/architecture.md): the domain imports no Dagster, and
no two modules import each other round a circle, at the top of a module or inside a function."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "c360_dagster"


def modules(package_dir: Path) -> dict[str, Path]:
    """Each module of the package by its dotted name."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module an import statement anywhere in the file names (`from a import b`: `a.b` when
    that is a module, else `a`), inside functions and under `if TYPE_CHECKING:` too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            )
    return names


def import_circle(package_dir: Path) -> list[str] | None:
    """One circle of the package's modules importing each other, or None."""
    known = modules(package_dir)
    graph = {
        # Importing a package's module imports the package first: that edge closes no circle; nor
        # does a module importing itself (console.py does, run as `__main__`).
        name: [
            other
            for other in imported(path, known)
            if other in known and other != name and not name.startswith(other + ".")
        ]
        for name, path in known.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as circle:
        return circle.args[1]
    return None


@pytest.mark.untraced
def test_no_module_imports_itself_round_a_circle():
    assert import_circle(PACKAGE_DIR) is None


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path):
    # The kind issue 18 broke: console imported commands in a function, commands imported console.
    package = tmp_path / "c360_dagster"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "console.py").write_text("def main():\n    from c360_dagster import commands\n")
    (package / "commands.py").write_text("from c360_dagster.console import main\n")
    assert set(import_circle(package) or []) == {"c360_dagster.console", "c360_dagster.commands"}


@pytest.mark.untraced
def test_the_domain_imports_no_dagster():
    known = modules(PACKAGE_DIR)
    domain = {name: path for name, path in known.items() if name.startswith("c360_dagster.domain.")}
    assert len(domain) > 30
    dagster = {
        name: sorted(other for other in imported(path, known) if other.split(".")[0].startswith("dagster"))
        for name, path in domain.items()
    }
    assert {name: found for name, found in dagster.items() if found} == {}
