"""Code versions derived from the code an asset runs, so Dagster marks stale what changed."""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path
from types import ModuleType

PACKAGE = "c360_dagster"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The module that renders the Jinja templates: where it runs, the templates shape the bytes too.
TEMPLATE_RENDERER = f"{PACKAGE}.domain.core.text"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
# An import statement, at any indent: `import a.b, c` or `from a.b import c` (parenthesized
# names may span lines). Only these are parsed: parsing whole modules cost every command about
# half a second at start.
IMPORT_STATEMENT = re.compile(r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import[ \t]+(?:\([^)]*\)|.*)|import[ \t]+.*)", re.M)


def source_version(*modules: ModuleType | str) -> str:
    """The first 12 hex digits of the sha256 of `source_files(*modules)`, each as its path in the
    package, a NUL byte and its bytes: a change to any code that can change the asset's bytes.
    A module may be given by name, so that an asset whose code most commands never run (the QBR
    pack's) does not import it into every command."""
    digest = hashlib.sha256()
    for path in source_files(*modules):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode("utf-8") + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def source_files(*modules: ModuleType | str) -> list[Path]:
    """The modules' source files, those of every c360_dagster module they import (at any depth,
    in any function), by module name, then the templates when one of them renders templates."""
    names = sorted(
        set().union(*(_closure(module if isinstance(module, str) else module.__name__) for module in modules))
    )
    files = [_source_file(name) for name in names]
    if TEMPLATE_RENDERER in names:
        files += sorted(TEMPLATES_DIR.glob("*.j2"))
    return files


@functools.cache
def _closure(name: str) -> frozenset[str]:
    seen = {name}
    pending = [name]
    while pending:
        for imported in _imports(pending.pop()):
            if imported not in seen:
                seen.add(imported)
                pending.append(imported)
    return frozenset(seen)


@functools.cache
def _imports(name: str) -> frozenset[str]:
    """The c360_dagster modules that module `name` imports anywhere in its source."""
    found: set[str] = set()
    for statement in IMPORT_STATEMENT.findall(_source_file(name).read_text(encoding="utf-8")):
        try:
            nodes = ast.parse(statement.strip()).body
        except SyntaxError:  # text in a string that only looks like an import
            continue
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_ours(node.module):
                # `from package import module` names a module; `from module import thing` does not.
                found.update(
                    f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}") else node.module
                    for alias in node.names
                )
    return frozenset(module for module in found if _is_ours(module) and _is_module(module))


def _is_ours(module: str) -> bool:
    # Asked before `_is_module`, which knows only the package's own modules.
    return module.split(".")[0] == PACKAGE


def _is_module(name: str) -> bool:
    return _module_file(name) is not None


def _source_file(name: str) -> Path:
    found = _module_file(name)
    if found is None:
        raise ValueError(f"no source file for module {name}")
    return found


def _module_file(name: str) -> Path | None:
    """The source file of c360_dagster module `name`, found in the package's folder: asking the
    import system (`importlib.util.find_spec`) imports the parents of the name, so `from m import f`
    would import module m into every command, if only to learn that `m.f` is not a module."""
    path = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None
