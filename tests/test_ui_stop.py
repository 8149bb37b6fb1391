"""`c360 c360:ui` stops on Ctrl-C within seconds, leaving no `dagster dev` process behind."""

from __future__ import annotations

import contextlib
import signal
import time

import psutil
from ui_support import REPO, SERVER_START_SECONDS, answers, dagster_env, free_port

STOP_WITHIN_S = 10.0


def test_ctrl_c_stops_the_ui_and_every_process_it_started(forks, tmp_path):
    env = dagster_env(tmp_path / "dagster_home")
    port = free_port()
    stderr = tmp_path / "stderr.txt"
    c360 = forks.start(
        ["c360", "c360:ui", "--port", str(port)], cwd=REPO, env=env, stdout=tmp_path / "out", stderr=stderr
    )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not answers(f"http://127.0.0.1:{port}/server_info"):
            assert c360.poll() is None and time.monotonic() < deadline, "the UI did not come up:\n" + stderr.read_text()
            time.sleep(0.5)
        started = psutil.Process(c360.pid).children(recursive=True)
        assert started, "dagster dev runs as a child of c360"
        c360.send_signal(signal.SIGINT)  # what a terminal sends on Ctrl-C
        stopping = time.monotonic()
        c360.wait(timeout=STOP_WITHIN_S * 3)
        assert time.monotonic() - stopping < STOP_WITHIN_S
        assert c360.returncode == 0
        _, alive = psutil.wait_procs(started, timeout=1)
        assert [process for process in alive if _running(process)] == []
        assert not answers(f"http://127.0.0.1:{port}/server_info")
        # Not Dagster's advice to run `dg dev` instead: c360 starts `dagster dev` itself.
        assert "dg dev" not in stderr.read_text(encoding="utf-8")
    finally:
        if c360.poll() is None:
            # Whatever failed above, leave no server behind: `dagster dev` outlives a killed parent.
            leftovers = psutil.Process(c360.pid).children(recursive=True)
            c360.kill()
            for process in leftovers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()


def _running(process: psutil.Process) -> bool:
    """Still running: a zombie has exited and only waits for a parent (in a container, often a PID 1
    that reaps nobody) to collect its exit status."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
