"""Code versions derived from the domain code an asset runs, so Dagster marks stale what changed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType


def source_version(*modules: ModuleType) -> str:
    """The first 12 hex digits of the sha256 of the modules' source files (and nothing else)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())  # type: ignore[arg-type]
    return digest.hexdigest()[:12]
