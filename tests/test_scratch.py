"""The process's scratch DuckDB database: one per process, a connection per use."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pytest

from c360_dagster.domain.core import scratch


def test_connections_share_one_database_and_keep_what_they_register_to_themselves():
    with scratch.scratch() as first, scratch.scratch() as second:
        first.register("rows", pl.DataFrame({"x": [1, 2]}).to_arrow())
        assert first.sql("SELECT sum(x) FROM rows").fetchall() == [(3,)]
        with pytest.raises(duckdb.CatalogException):
            second.sql("SELECT x FROM rows").fetchall()
    assert scratch._database(os.getpid()) is scratch._database(os.getpid())


def test_a_forked_child_queries_a_database_of_its_own():
    with scratch.scratch() as con:  # the parent's database is open
        assert con.sql("SELECT 42").fetchall() == [(42,)]
    parent = scratch._database(os.getpid())
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its own database answers
        try:
            with scratch.scratch() as con:
                answered = con.sql("SELECT 1").fetchall() == [(1,)]
            os._exit(0 if answered and scratch._database(os.getpid()) is not parent else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
