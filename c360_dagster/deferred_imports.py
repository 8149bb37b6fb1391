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
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec

DEFERRED_INIT = ("dagster._daemon",)
NOT_IMPORTED = ("mako.ext.pygmentplugin",)


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


_DEFERRING = _DeferredInit(DEFERRED_INIT)


def install() -> None:
    """Defer and leave out the modules above in this process, from now on (once per process)."""
    if _DEFERRING not in sys.meta_path:
        sys.meta_path.insert(0, _DEFERRING)
    for name in NOT_IMPORTED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: `import name` raises ImportError
