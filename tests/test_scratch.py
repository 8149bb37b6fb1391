"""The process's scratch DuckDB database: one per process, a connection per use."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from forked import ForkServer

from c360_dagster.domain.core import scratch


def test_connections_share_one_database_and_keep_what_they_register_to_themselves():
    with scratch.scratch() as first, scratch.scratch() as second:
        first.register("rows", pl.DataFrame({"x": [1, 2]}).to_arrow())
        assert first.sql("SELECT sum(x) FROM rows").fetchall() == [(3,)]
        with pytest.raises(duckdb.CatalogException):
            second.sql("SELECT x FROM rows").fetchall()
    assert scratch._process(os.getpid()).database is scratch._process(os.getpid()).database


def test_a_forked_child_queries_a_database_of_its_own():
    with scratch.scratch() as con:  # the parent's database is open
        assert con.sql("SELECT 42").fetchall() == [(42,)]
    parent = scratch._process(os.getpid()).database
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its own database answers
        try:
            with scratch.scratch() as con:
                answered = con.sql("SELECT 1").fetchall() == [(1,)]
            os._exit(0 if answered and scratch._process(os.getpid()).database is not parent else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


HOLDS_THE_FILE = """
import sys, duckdb
try:
    duckdb.connect(sys.argv[1], read_only=True).close()
    print("opened")
except duckdb.IOException as exc:
    print("lock" if "lock" in str(exc).lower() else exc)
"""


def _other_process_opens(forks: ForkServer, path) -> str:
    done = forks.run([sys.executable, "-c", HOLDS_THE_FILE, str(path)])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _attached_files() -> list[str]:
    with scratch.scratch() as con:
        return [path for (path,) in con.sql("SELECT path FROM duckdb_databases() WHERE path IS NOT NULL").fetchall()]


def test_an_attached_file_is_locked_for_the_block_and_checkpointed_and_released_after(forks, tmp_path):
    path = tmp_path / "file.duckdb"
    with scratch.attached(path, read_only=False) as con:
        con.execute("CREATE TABLE t AS SELECT 7 AS x")
        assert _other_process_opens(forks, path) == "lock"
    assert _attached_files() == []
    assert not path.with_name("file.duckdb.wal").exists()  # checkpointed into the file
    assert _other_process_opens(forks, path) == "opened"
    with scratch.attached(path, read_only=True) as con:
        assert con.sql("SELECT x FROM t").fetchall() == [(7,)]


def test_users_in_one_process_share_one_attachment_until_the_last_leaves(tmp_path):
    path = tmp_path / "file.duckdb"
    with scratch.attached(path, read_only=False) as writer:
        writer.execute("CREATE TABLE t AS SELECT 1 AS x")
        with scratch.attached(path, read_only=True) as reader:
            assert reader.sql("SELECT x FROM t").fetchall() == [(1,)]
        assert _attached_files() == [str(path)]  # the writer is still in
    assert _attached_files() == []
    refused = pytest.raises(duckdb.ConnectionException, match="read-only")
    with scratch.attached(path, read_only=True), refused, scratch.attached(path, read_only=False):
        pass
    assert _attached_files() == []


def test_the_lake_sees_only_its_own_tables_not_the_scratch_databases(tmp_path):
    from c360_dagster.domain.governance.lake import DuckDBLake

    lake = DuckDBLake(str(tmp_path), Path(__file__).resolve().parents[1] / "contracts" / "schemas")
    with scratch.attached(lake.path, read_only=False) as con:
        con.execute("CREATE TABLE other AS SELECT 1 AS x")  # the lake file exists, without crm_opps
    with scratch.scratch() as con:
        con.execute("CREATE TABLE crm_opps AS SELECT DATE '2026-09-30' AS as_of")
        try:
            assert lake.snapshots("crm_opps") == []
        finally:
            con.execute("DROP TABLE crm_opps")


@pytest.mark.untraced
def test_the_memory_a_write_to_an_attached_file_used_is_handed_back_after(tmp_path):
    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    rows = 800_000  # about 250 MB of text: 140 MB more stayed by DuckDB's default, 40 with the setting
    incoming = pl.select(
        id=pl.int_range(rows, dtype=pl.Int64),
        text=(pl.int_range(rows) % 99991).cast(pl.Utf8).str.zfill(8) + "x" * 300,
    ).to_arrow()
    before = rss_mb()
    with scratch.attached(tmp_path / "file.duckdb", read_only=False) as con:
        con.register("incoming", incoming)
        con.execute("CREATE TABLE t (id BIGINT, text VARCHAR USING COMPRESSION zstd)")
        con.execute("INSERT INTO t SELECT * FROM incoming")
        con.unregister("incoming")
    assert rss_mb() - before < 90
