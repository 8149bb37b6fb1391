"""Real `c360`, `dagster` and `python -c` processes, forked from one process that imported c360
and Dagster once.

A test that needs a command in a process of its own (SIGKILLed at a failpoint, run three at once,
a server to stop) starts it here. The fork server is a fresh Python that imports c360's console,
its asset graph and Dagster's storages; each command is a child forked from it that runs the
program's own entry point (its console script), with its own working folder, environment and
output files. The command, its run and its end are real; only the imports a fresh start repeats
(about 2.5 CPU-s a command) are paid once. One server serves every test process of a test run
(xdist's workers): the first that asks starts it, the others connect to it, and it ends when the
last has gone. test_startup starts fresh interpreters, where start-up is what is tested.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

# Serves the test processes that connect to its address (a Linux abstract socket): reads one JSON
# request a line, forks a child for each, and writes one JSON line back when it forked it (its pid)
# and one when it ended (its exit code, or the signal that killed it). It ends when the last test
# process has gone, deciding so under the lock that a test process holds to connect or start one.
SERVER = r"""
import atexit, fcntl, importlib.metadata, json, os, select, signal, socket, sys, tempfile
from c360_dagster import commands, console, definitions
from c360_dagster.domain.qbr import pack, powerpoint
from c360_dagster.instance import ensure_dagster_home

# What every command does before its run: import the asset graph, and Dagster's storages (opening
# a throwaway instance imports them). And what the QBR commands import at their run: Jinja2,
# python-pptx, lxml and Pillow (about 0.15 CPU-s a command).
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp()
ensure_dagster_home()
SCRIPTS = {entry.name: entry for entry in importlib.metadata.entry_points(group="console_scripts")}
address, lock_path = sys.argv[1:3]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind("\0" + address)
listener.listen(64)
wake_read, wake_write = os.pipe()
os.set_blocking(wake_write, False)
signal.set_wakeup_fd(wake_write)
signal.signal(signal.SIGCHLD, lambda *_: None)
clients = {}  # a test process's connection: what it sent that is not a whole line yet
running = {}  # pid: (the connection that asked for it, its request id)


def answer(client, message):
    if client in clients:
        try:
            client.sendall((json.dumps(message) + "\n").encode())
        except OSError:  # the test process is gone; its end is handled where its connection reads
            pass


def child(request):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    listener.close()
    for client in clients:
        client.close()
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


def kill(pid):
    # A command still running when its test process has gone (a server a failed test left) goes,
    # with its group.
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def accept():
    client, _ = listener.accept()
    clients[client] = b""


def no_one_left():
    # Under the lock no test process connects or starts a server: one that connected before it
    # is served; otherwise the address is given up while the lock is held.
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        listener.setblocking(False)
        try:
            accept()
        except BlockingIOError:
            listener.close()
            return True
        listener.setblocking(True)
        return False


listener.settimeout(600)  # the test process that started this server connects first
accept()
listener.settimeout(None)
while True:
    ready = select.select([listener, wake_read, *clients], [], [])[0]
    if wake_read in ready:
        os.read(wake_read, 4096)
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if not pid:
            break
        client, ident = running.pop(pid)
        answer(client, {"id": ident, "code": os.waitstatus_to_exitcode(status)})
    if listener in ready:
        accept()
    for client in [client for client in ready if client in clients]:
        data = client.recv(65536)
        if not data:
            del clients[client]
            client.close()
            for pid, (asked_by, _) in running.items():
                if asked_by is client:
                    kill(pid)
            continue
        clients[client] += data
        while b"\n" in clients[client]:
            line, clients[client] = clients[client].split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(request)
            running[pid] = (client, request["id"])
            answer(client, {"id": request["id"], "pid": pid})
    if not clients and no_one_left():
        break
for pid in running:
    kill(pid)
    os.waitpid(pid, 0)
"""


# Seconds the fork server gets to import c360 and Dagster and listen (a busy machine is slow).
FORK_SERVER_START_SECONDS = 120


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
    """A test process's connection to the fork server (SERVER): starts commands, hears how they
    ended. `shared`: the folder the test run's processes share (the server's lock, address and
    log); `folder`: this process's, for the output files of commands that name none."""

    def __init__(self, folder: Path, shared: Path) -> None:
        self.folder = folder
        self._log = shared / "forks.log"
        address = "c360-forks-" + hashlib.sha256(str(shared.resolve()).encode()).hexdigest()[:24]
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with (shared / "forks.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            try:
                self._socket.connect("\0" + address)
            except ConnectionRefusedError:
                self._start(address, shared)
        self._buffer = b""
        self._answers: dict[int, dict] = {}
        self._next = 0

    def _start(self, address: str, shared: Path) -> None:
        """Start the server and connect to it once it listens (its imports take a few seconds)."""
        with self._log.open("ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-c", SERVER, address, str(shared / "forks.lock")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
            )
        deadline = time.monotonic() + FORK_SERVER_START_SECONDS
        while True:
            try:
                self._socket.connect("\0" + address)
                return
            except ConnectionRefusedError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the fork server did not start:\n{self._log.read_text()[-3000:]}") from None
                time.sleep(0.05)

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
        self._socket.sendall((json.dumps(request) + "\n").encode())
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
        if not select.select([self._socket], [], [], timeout)[0]:
            return
        data = self._socket.recv(65536)
        assert data, f"the fork server ended:\n{self._log.read_text()[-3000:]}"
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            self._answers.setdefault(message["id"], {}).update(message)

    def close(self) -> None:
        """Gone from the server: the commands it still runs for this process are killed."""
        self._socket.close()


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")
