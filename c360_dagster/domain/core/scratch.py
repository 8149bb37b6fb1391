"""One in-memory DuckDB database per process: for scratch queries (reading a CSV file, hashing
ids) and, attached to it one operation at a time, for DuckDB files (the lake).

Starting a DuckDB database costs about 15–20 CPU-ms, whether in memory or on disk; a connection to
one that is open costs next to nothing, and attaching a file to it about 2 CPU-ms. A chain run on the
fixtures opened the lake about twenty times, and a run's own scratch work five or six.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb


def scratch() -> duckdb.DuckDBPyConnection:
    """A new connection to this process's scratch database (close it, e.g. `with scratch() as con`).
    What a connection registers or sets is its own; several threads may each hold one."""
    return _this_process().database.cursor()


@contextlib.contextmanager
def attached(path: Path, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose current database is the DuckDB file at `path`, attached for the block.

    As with a database of its own, the file is locked while attached (another process asking for
    it gets DuckDB's lock error) and checkpointed and released when detached: when the last user
    in this process leaves. Users in one process share one attachment, so one that writes cannot
    join one that only reads (DuckDB refused that too: one file, two configurations).
    """
    process = _this_process()
    key = str(Path(path).resolve())
    with process.lock:
        held = process.files.get(key)
        if held is None:
            held = _Attachment(f"file_{next(process.numbers)}", read_only)
            literal = "'" + key.replace("'", "''") + "'"
            with scratch() as con:
                con.execute(f"ATTACH {literal} AS {held.alias}{' (READ_ONLY)' if read_only else ''}")
            process.files[key] = held
        elif held.read_only and not read_only:
            raise duckdb.ConnectionException(f"{key} is open read-only in this process; it cannot be written now")
        held.users += 1
    try:
        with scratch() as con:
            con.execute(f"USE {held.alias}")
            yield con
    finally:
        with process.lock:
            held.users -= 1
            if not held.users:
                del process.files[key]
                # DETACH checkpoints; if that fails (a full disk) the file is detached all the same
                # and what was committed is in its write-ahead log, replayed by the next open: the
                # same as closing a database of its own, which says nothing.
                with scratch() as con, contextlib.suppress(duckdb.Error):
                    con.execute(f"DETACH {held.alias}")


@dataclass
class _Attachment:
    alias: str
    read_only: bool
    users: int = 0


@dataclass
class _Process:
    """This process's database, and the files attached to it (by resolved path)."""

    database: duckdb.DuckDBPyConnection
    lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, _Attachment] = field(default_factory=dict)
    numbers: Iterator[int] = field(default_factory=itertools.count)


def _this_process() -> _Process:
    return _process(os.getpid())


@functools.cache
def _process(pid: int) -> _Process:
    # By process: a forked child starts its own (its parent's database threads did not fork with it).
    # The database outlives what it reads and writes, so it hands freed memory back at once: by
    # default DuckDB's allocator keeps up to 512 MiB a release, and a 1M-account chain process kept
    # about 600 MB more after its lake writes (docs/performance.md, round 12).
    return _Process(duckdb.connect(config={"allocator_bulk_deallocation_flush_threshold": "0B"}))
