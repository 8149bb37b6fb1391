"""Helpers for the UI and scale-out tests: a throwaway Dagster instance, the `c360` CLI, servers on free ports."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from forked import Fork, ForkServer

from c360_dagster.instance import DAGSTER_YAML

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Headless and offline: no first-run UI, no background fetches that would hang without a network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_SECONDS = 90


def require_browser() -> None:
    """Fail (never skip) when the browser or Playwright is missing: CI is meant to have both."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Debian's Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium` "
            "(.ci/run installs it) to run the Dagster UI browser test"
        )
    if importlib.util.find_spec("playwright") is None:
        pytest.fail('the Python package `playwright` is missing: pip install -e ".[dev]"')


def dagster_env(home: Path) -> dict[str, str]:
    """This process's environment with DAGSTER_HOME at `home`, made with telemetry disabled."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    return {**os.environ, "DAGSTER_HOME": str(home)}


def run_c360(forks: ForkServer, env: Mapping[str, str], *args: str) -> dict[str, Any]:
    """Run the `c360` program from the repo root (forked: tests/forked.py); return its `--json` report."""
    done = forks.run(["c360", *args, "--json", "--quiet"], cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, f"c360 {' '.join(args)} failed:\n{done.stderr}"
    return json.loads(done.stdout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_group(process: subprocess.Popen | Fork) -> None:
    """SIGTERM the whole group, then SIGKILL whatever of it is still there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def graphql(base_url: str, query: str) -> dict[str, Any]:
    """POST a query to the webserver's GraphQL endpoint; return its `data`, failing on errors."""
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query}).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]
