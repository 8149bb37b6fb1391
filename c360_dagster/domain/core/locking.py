"""Inter-process locks (fcntl.flock): one c360 writer per project (or per shard), no interleaved appends.

A lock is held by an open file description, so it is released by the kernel when its
process dies: a crash never leaves a stale lock behind. Locks are reentrant within a thread,
so a writer holding the project lock may call helpers that take it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from c360_dagster.domain.core.errors import C360Error

PROJECT_LOCK_NAME = ".c360.lock"
SHARD_LOCKS_DIR = ".c360-shards"
PROJECT_LOCK_TIMEOUT_S = 120.0
POLL_S = 0.05

_held = threading.local()  # path -> depth, per thread


class LockTimeout(C360Error):
    """Another process held a lock for longer than the caller would wait."""

    code = "LOCKED"


@contextlib.contextmanager
def file_lock(lock_path: Path, timeout_s: float, busy_message: str) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`, waiting up to `timeout_s`; else LockTimeout."""
    key = str(Path(lock_path).resolve())
    depths: dict[str, int] = _held.__dict__.setdefault("depths", {})
    if depths.get(key):
        depths[key] += 1
        try:
            yield
        finally:
            depths[key] -= 1
        return
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, lock_path, timeout_s, busy_message)
        # The holder's pid, for the message a waiting process shows.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        depths[key] = 1
        try:
            yield
        finally:
            depths[key] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def project_lock(artifacts_dir: Path, timeout_s: float = PROJECT_LOCK_TIMEOUT_S, shard: str | None = None):
    """A write lock: the project's (`artifacts/.c360.lock`, one unsharded writer at a time), or with
    `shard` that shard's own (`artifacts/.c360-shards/<shard>.lock`), so shards write in parallel."""
    if shard is None:
        return file_lock(
            Path(artifacts_dir) / PROJECT_LOCK_NAME,
            timeout_s,
            f"another c360 process is writing to {artifacts_dir}",
        )
    return file_lock(
        Path(artifacts_dir) / SHARD_LOCKS_DIR / f"{checked_shard(shard)}.lock",
        timeout_s,
        f"another c360 process is writing shard {shard} of {artifacts_dir}",
    )


def is_shard_key(name: object) -> bool:
    """Whether `name` is a shard key: "0".."N-1", decimal without leading zeros."""
    return isinstance(name, str) and re.fullmatch(r"0|[1-9][0-9]{0,3}", name) is not None


def checked_shard(shard: str) -> str:
    """A shard key ("0".."N-1"): it names folders, so nothing else may pass (a caller's bug)."""
    if not is_shard_key(shard):
        raise ValueError(f"{shard!r} is not a shard key (a decimal number as text, e.g. '0')")
    return shard


def _acquire(fd: int, lock_path: Path, timeout_s: float, busy_message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                by = f" (pid {holder})" if holder.isdigit() else ""
                raise LockTimeout(
                    f"{busy_message}{by}; waited {timeout_s:g}s for {lock_path}; try again when it finishes"
                ) from None
            time.sleep(POLL_S)
