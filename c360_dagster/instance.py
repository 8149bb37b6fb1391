"""The project's persistent Dagster instance, shared by the `c360` shim and `dagster dev`."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".dagster_home"

# Local storage only, and telemetry off: the project runs offline. One SQLite event log for all
# runs and no stdout capture (assets log structured events, not prints) keep a run cheap: the
# per-account assets start one run per account.
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
event_log_storage:
  module: dagster._core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir:
      env: DAGSTER_HOME
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def ensure_dagster_home(project_root: Path | None = None) -> Path:
    """Point DAGSTER_HOME at the project's instance folder (unless set) and create it."""
    home = Path(os.environ.get("DAGSTER_HOME") or (project_root or Path.cwd()) / DEFAULT_HOME)
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
