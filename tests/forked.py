"""Real `c360`, `dagster` and `python -c` processes, forked from one process that imported c360
and Dagster once.

A test that needs a command in a process of its own (SIGKILLed at a failpoint, run three at once,
a server to stop) starts it here. The fork server is a fresh Python, started once per test process
(conftest's `forks`), that imports c360's console, its asset graph and Dagster's storages; each
command is a child forked from it that runs the program's own entry point (its console script),
with its own working folder, environment and output files. The command, its run and its end are
real; only the imports a fresh start repeats (about 2.5 CPU-s a command) are paid once.
test_startup starts fresh interpreters, where start-up is what is tested.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

# Reads one JSON request a line on stdin, forks a child for each, and writes one JSON line when it
# forked it (its pid) and one when it ended (its exit code, or the signal that killed it).
SERVER = r"""
import atexit, importlib.metadata, json, os, select, signal, sys, tempfile
from c360_dagster import commands, console, definitions
from c360_dagster.domain.qbr import pack, powerpoint
from c360_dagster.instance import ensure_dagster_home

# What every command does before its run: import the asset graph, and Dagster's storages (opening
# a throwaway instance imports them). And what the QBR commands import at their run: Jinja2,
# python-pptx, lxml and Pillow (about 0.15 CPU-s a command).
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp()
ensure_dagster_home()
SCRIPTS = {entry.name: entry for entry in importlib.metadata.entry_points(group="console_scripts")}
wake_read, wake_write = os.pipe()
os.set_blocking(wake_write, False)
signal.set_wakeup_fd(wake_write)
signal.signal(signal.SIGCHLD, lambda *_: None)


def answer(message):
    os.write(1, (json.dumps(message) + "\n").encode())


def child(request):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if request["session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
    sys.argv = list(request["argv"])
    # The definitions choose the executor from the environment as they are imported
    # (defs/executors.py): import them again, with the command's (2 ms; the modules they use stay).
    del sys.modules["c360_dagster.definitions"]
    code = 1
    try:
        if sys.argv[1:2] == ["-c"]:  # `python -c CODE ARGS...`, as Python runs it
            sys.argv = ["-c", *sys.argv[3:]]
            exec(compile(request["argv"][2], "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        else:
            code = SCRIPTS[sys.argv[0]].load()()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        # What Python's exit does, without tearing the interpreter down (as c360's `end_program`).
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


running = {}
pending = b""
while True:
    ready = select.select([0, wake_read], [], [])[0]
    if wake_read in ready:
        os.read(wake_read, 4096)
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if not pid:
            break
        answer({"id": running.pop(pid), "code": os.waitstatus_to_exitcode(status)})
    if 0 in ready:
        data = os.read(0, 65536)
        if not data:
            break
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(request)
            running[pid] = request["id"]
            answer({"id": request["id"], "pid": pid})
# The tests are done: a command still running (a server a failed test left) goes, with its group.
for pid in running:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
"""


class Ended(NamedTuple):
    """How a forked command ended: its exit code (-N when signal N killed it, as `subprocess`
    reports it), and what it wrote to stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


class Fork:
    """A command running in a forked process; waits like `subprocess.Popen` (`_stop_group` and the
    like take either)."""

    def __init__(self, server: ForkServer, ident: int, pid: int, stdout: Path, stderr: Path) -> None:
        self._server, self._id, self.pid = server, ident, pid
        self._stdout, self._stderr = stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.ended(self._id, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.ended(self._id, timeout=timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(str(self._id), timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> Ended:
        """Wait for the end; what the command wrote."""
        code = self.wait(timeout)
        return Ended(code, _text(self._stdout), _text(self._stderr))


class ForkServer:
    """The client of one fork server (SERVER): starts commands, hears how they ended."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._buffer = b""
        self._answers: dict[int, dict] = {}
        self._next = 0

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        stdout: Path | None = None,
        stderr: Path | None = None,
        session: bool = False,
    ) -> Fork:
        """Run `argv` in a forked process: a console script and its arguments, or `python -c CODE
        ...` (any Python as argv[0]). In `cwd` with `env` (this process's when None); its stdout and
        stderr go to these files (new files in the server's folder when None; the same file for
        both when only `stdout` is given); `session`: in a session and process group of its own,
        as `start_new_session`."""
        self._next += 1
        ident = self._next
        if stdout is None:
            stdout, stderr = self.folder / f"{ident}.out", stderr or self.folder / f"{ident}.err"
        stderr = stderr or stdout
        request = {
            "id": ident,
            "argv": list(argv),
            "cwd": str(cwd or Path.cwd()),
            "env": dict(os.environ if env is None else env),
            "stdout": str(stdout),
            "stderr": str(stderr),
            "session": session,
        }
        assert self._server.stdin is not None
        self._server.stdin.write((json.dumps(request) + "\n").encode())
        self._server.stdin.flush()
        while "pid" not in self._answers.get(ident, {}):
            self._read(None)
        return Fork(self, ident, self._answers[ident]["pid"], Path(stdout), Path(stderr))

    def run(self, argv: Sequence[str], *, timeout: float = 600, **options) -> Ended:
        """`start`, then wait for the end: like `subprocess.run(..., capture_output=True, text=True)`."""
        return self.start(argv, **options).communicate(timeout)

    def ended(self, ident: int, timeout: float | None) -> int | None:
        """Command `ident`'s exit code once it ended; None if it has not within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while "code" not in self._answers[ident]:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._read(left)
        return self._answers[ident]["code"]

    def _read(self, timeout: float | None) -> None:
        assert self._server.stdout is not None
        fd = self._server.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return
        data = os.read(fd, 65536)
        assert data, f"the fork server ended (exit code {self._server.wait()})"
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            self._answers.setdefault(message["id"], {}).update(message)

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.wait(timeout=60)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")
