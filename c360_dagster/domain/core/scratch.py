"""One in-memory DuckDB database per process for scratch queries (reading a CSV file, hashing ids).

Starting a DuckDB database costs about 20 CPU-ms, whether in memory or on disk; a connection to one
that is open costs next to nothing. A chain run started five or six of them (the loader's files, the
shard and signal ids), which was about a twentieth of a run on the fixtures.
"""

from __future__ import annotations

import functools
import os

import duckdb


def scratch() -> duckdb.DuckDBPyConnection:
    """A new connection to this process's scratch database (close it, e.g. `with scratch() as con`).
    What a connection registers or sets is its own; several threads may each hold one."""
    return _database(os.getpid()).cursor()


@functools.cache
def _database(pid: int) -> duckdb.DuckDBPyConnection:
    # By process: a forked child starts its own (its parent's database threads did not fork with it).
    return duckdb.connect()
