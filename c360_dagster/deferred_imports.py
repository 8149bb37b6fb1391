"""What Dagster imports that a `c360` process never uses, left unimported (docs/performance.md,
"Start-up, round 6"). Installed by the `c360` program and its worker processes only
(`runner.short_lived_start_up`); `dagster dev`, its daemon and the tests import as Dagster does.

- `dagster._daemon`'s `__init__` imports every daemon (backfills, sensors, schedules, freshness
  with structlog and rich: about 300 modules, 0.3 CPU-s), while Dagster's run storage only
  needs `dagster._daemon.types`. The package is made without running its `__init__`, so its
  submodules import as usual; the first name asked of the package itself runs the `__init__`
  then, so `from dagster._daemon import X` still works.
- Mako, imported by Alembic for Dagster's migrations, highlights its template errors with
  Pygments when Pygments imports, and falls back to plain text when it does not. A command
  renders no Mako template.
- Alembic itself (with Mako: 68 modules, about 0.1 CPU-s): Dagster's SQL storage module imports
  five of its names at module level, and calls them only to create, stamp or migrate a database,
  which the project's storages skip once the database is stamped (instance_storage.py). That
  module gets stand-ins for those names; the first use of one imports Alembic then.
- NumPy (86 modules, about 0.1 CPU-s): PyArrow imports it when it can, and works without it
  (its NumPy conversions then raise). c360 hands PyArrow Arrow data only (from Polars and
  DuckDB), so PyArrow is imported with NumPy hidden, unless NumPy is imported already
  (`c360:bench`, the generator).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from typing import Any

DEFERRED_INIT = ("dagster._daemon",)
NOT_IMPORTED = ("mako.ext.pygmentplugin",)
# While the module on the left loads, the modules on the right stand in for their own: each name
# imported from them is imported at first use (`_DeferredNames`)...
DEFERRED_NAMES = {
    "dagster._core.storage.sql": (
        "alembic.command",
        "alembic.config",
        "alembic.runtime.environment",
        "alembic.runtime.migration",
        "alembic.script",
    ),
}
# ...or they are hidden (`import` raises ImportError).
HIDDEN = {"pyarrow": ("numpy",)}


class _DeferredPackage(types.ModuleType):
    """A package whose `__init__` has not run: its first missing name runs it."""

    def __getattr__(self, name: str) -> object:
        _DEFERRING.run_init(self)
        return object.__getattribute__(self, name)  # raises AttributeError if the `__init__` does not define it


class _DeferredInit(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the packages of `names` as the path finder does, and loads them without running their `__init__`."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)
        self.inits: dict[str, importlib.abc.Loader] = {}
        self.lock = threading.RLock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec
        self.inits[fullname] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module, with the package's `__path__`

    def exec_module(self, module: types.ModuleType) -> None:
        module.__class__ = _DeferredPackage

    def run_init(self, module: types.ModuleType) -> None:
        with self.lock:
            init = self.inits.pop(module.__name__, None)
            if init is None:  # run already, or running in this thread: a missing name is missing
                return
            module.__class__ = types.ModuleType
            module.__spec__.loader = module.__loader__ = init  # type: ignore[union-attr]  # a package's spec is set
            init.exec_module(module)


class _DeferredName:
    """A name of a module not imported yet, as `from module import name` binds it: its first use
    (a call, an attribute) imports the module."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def _target(self) -> Any:
        return getattr(importlib.import_module(self._module), self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._target(), attribute)

    def __repr__(self) -> str:
        return f"<{self._module}.{self._name}, imported at first use>"


class _DeferredNames(types.ModuleType):
    """Stands in for module `name` while another module imports names from it."""

    def __getattr__(self, name: str) -> _DeferredName:
        if name.startswith("__"):  # the import system's own questions (`__path__`, `__spec__`)
            raise AttributeError(name)
        return _DeferredName(self.__name__, name)


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads the modules named in `deferred` and `hidden` as their own loaders do, with stand-ins
    for the modules named beside them while they load; afterwards those import as usual."""

    def __init__(self, deferred: Mapping[str, Sequence[str]], hidden: Mapping[str, Sequence[str]]) -> None:
        self.deferred, self.hidden = deferred, hidden
        self.loaders: dict[str, importlib.abc.Loader] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.deferred and fullname not in self.hidden:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        self.loaders[fullname] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self.loaders[spec.name].create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        loader = self.loaders.pop(module.__name__)
        module.__spec__.loader = module.__loader__ = loader  # type: ignore[union-attr]  # a module being loaded has a spec
        stand_ins: dict[str, types.ModuleType | None] = {
            **{name: _DeferredNames(name) for name in self.deferred.get(module.__name__, ())},
            **dict.fromkeys(self.hidden.get(module.__name__, ())),
        }
        standing = {name: stand_in for name, stand_in in stand_ins.items() if name not in sys.modules}
        sys.modules.update(standing)  # type: ignore[arg-type]  # None: `import name` raises ImportError
        try:
            loader.exec_module(module)
        finally:
            for name, stand_in in standing.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


_DEFERRING = _DeferredInit(DEFERRED_INIT)
_STANDING_IN = _StandIns(DEFERRED_NAMES, HIDDEN)


def install() -> None:
    """Defer and leave out the modules above in this process, from now on (once per process)."""
    for finder in (_STANDING_IN, _DEFERRING):
        if finder not in sys.meta_path:
            sys.meta_path.insert(0, finder)
    for name in NOT_IMPORTED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: `import name` raises ImportError
