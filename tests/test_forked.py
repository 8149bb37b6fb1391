"""The fork server is one for the whole test run (tests/forked.py): every test process that connects
gets its commands forked from the same server, and a test process that goes takes the commands it
still runs with it, not anyone else's."""

from __future__ import annotations

import sys

import psutil
from conftest import shared_folder
from forked import ForkServer

PARENT = "import os; print(os.getppid())"
SLEEP = "import time; time.sleep(120)"


def test_a_second_test_process_shares_the_server_and_its_commands_end_with_it(forks, tmp_path, tmp_path_factory):
    other = ForkServer(tmp_path, shared_folder(tmp_path_factory))  # as another xdist worker connects
    try:
        parents = {client.run([sys.executable, "-c", PARENT]).stdout.strip() for client in (forks, other)}
        assert len(parents) == 1, parents
        server = psutil.Process(int(parents.pop()))
        mine, theirs = forks.start([sys.executable, "-c", SLEEP]), other.start([sys.executable, "-c", SLEEP])
        theirs_process = psutil.Process(theirs.pid)
    finally:
        other.close()
    # The server kills what the process that went still ran, and serves on for the others.
    _, alive = psutil.wait_procs([theirs_process], timeout=30)
    assert alive == []
    assert mine.poll() is None and server.is_running()
    mine.kill()
    assert mine.wait(timeout=30) == -9
    assert forks.run([sys.executable, "-c", PARENT]).stdout.strip() == str(server.pid)
