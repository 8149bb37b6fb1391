"""A Dagster logger that prints one line per finished stage, for the `c360` shim."""

from __future__ import annotations

import logging
import sys
import time

import dagster as dg


class _StageLines(logging.Handler):
    """Writes `✓ stage  0.42s` (or `✗`) to stderr as each step of a run ends."""

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None or event.step_key is None:
            return
        kind = event.event_type_value
        # Timings are for the person watching; they never reach an output file.
        now = time.perf_counter()
        if kind == "STEP_START":
            self._started[event.step_key] = now
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            took = now - self._started.pop(event.step_key, now)
            mark = "✓" if kind == "STEP_SUCCESS" else "✗"
            print(f"  {mark} {event.step_key:<32} {took:6.2f}s", file=sys.stderr, flush=True)


@dg.logger(
    config_schema={"enabled": dg.Field(bool, default_value=False)},
    description="Per-stage progress lines on stderr (enabled by the c360 shim).",
)
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger("c360.progress")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    # Disabled, it still needs a handler: a logger with none falls back to logging.lastResort,
    # which prints every failed step's Dagster stack trace under --quiet and --json.
    logger.handlers = [_StageLines() if init_context.logger_config["enabled"] else logging.NullHandler()]
    return logger
