"""The project lock, and what two processes at once or a crash mid-write leave behind."""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from forked import Ended, Fork, ForkServer

from c360_dagster.domain.core import locking
from c360_dagster.domain.core.io import atomic_writer, write_text_atomic
from c360_dagster.domain.governance import eventlog, lake, metrics
from c360_dagster.domain.governance.lake import DuckDBLake

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "schemas"
AS_OF = dt.date(2026, 9, 30)

# One "materialization" as the Dagster assets do it: under the project lock, write an
# artifact, the lake snapshot, the signed event and the metric. argv: artifacts dir, tag,
# lock timeout, seconds to hold the lock. Waits for a `go` file so both processes start at once.
MATERIALIZE = textwrap.dedent(
    f"""
    import datetime as dt, sys, time
    from pathlib import Path
    import polars as pl
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from c360_dagster.domain.core import locking
    from c360_dagster.domain.governance import eventlog, metrics
    from c360_dagster.domain.core.errors import C360Error
    from c360_dagster.domain.governance.lake import DuckDBLake
    from c360_dagster.domain.core.io import write_text_atomic

    artifacts, tag, timeout, hold = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    rows = pl.DataFrame({{"account_id": [f"{{tag}}{{i}}" for i in range(50)], "code": ["SIG_RENEWAL_SOON"] * 50,
                         "kind": ["risk"] * 50, "evidence": ["{{}}"] * 50, "signal_id": ["0" * 16] * 50,
                         "status": ["new"] * 50, "since": [dt.date(2026, 9, 30)] * 50,
                         "snoozed_until": pl.Series([None] * 50, dtype=pl.Date)}})
    (artifacts / f"ready-{{tag}}").touch()
    while not (artifacts / "go").exists():
        time.sleep(0.01)
    try:
        with locking.project_lock(artifacts, timeout_s=timeout):
            digest = write_text_atomic(artifacts / "customer" / "summary.md", (tag + "\\n") * 10000)
            written = DuckDBLake(str(artifacts / "lake"), Path({str(CONTRACTS)!r})).write_snapshot(
                "customer_signals", rows, dt.date(2026, 9, 30))
            time.sleep(hold)
            eventlog.append_event(artifacts / "governance" / "events.jsonl", {{"asset": "lake/customer_signals",
                "partition": None, "run_id": tag, "as_of": "2026-09-30", "config_hash": None, "code_version": "1",
                "inputs": {{}}, "outputs": {{"summary.md": digest}}}}, Ed25519PrivateKey.from_private_bytes(bytes(32)))
            metrics.increment(artifacts / "metrics" / "c360.prom", "c360_lake_rows_written", written, {{"table": "customer_signals"}})
    except C360Error as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    """
)


def run_two_at_once(forks: ForkServer, artifacts: Path, timeout: float, hold: float) -> list[Ended]:
    artifacts.mkdir(parents=True, exist_ok=True)
    workers = [
        forks.start([sys.executable, "-c", MATERIALIZE, str(artifacts), tag, str(timeout), str(hold)])
        for tag in ("P", "Q")
    ]
    deadline = time.monotonic() + 60
    while not all((artifacts / f"ready-{tag}").exists() for tag in ("P", "Q")) and time.monotonic() < deadline:
        time.sleep(0.01)
    (artifacts / "go").touch()
    return [w.communicate(timeout=60) for w in workers]


def assert_intact(artifacts: Path, winners: list[str]) -> None:
    """The lake holds one snapshot of one writer, the log verifies, the artifact is whole."""
    snapshot = DuckDBLake(str(artifacts / "lake"), CONTRACTS).read_snapshot("customer_signals")
    assert snapshot.height == 50 and snapshot["account_id"].str.slice(0, 1).n_unique() == 1
    assert snapshot["account_id"][0][0] in winners
    log = artifacts / "governance" / "events.jsonl"
    assert eventlog.verify_log(log, log.with_name("events.pub")) == eventlog.VerifyResult(True, len(winners))
    summary = (artifacts / "customer" / "summary.md").read_text()
    assert summary in {(tag + "\n") * 10000 for tag in winners}
    assert metrics.read_metrics(artifacts / "metrics" / "c360.prom") == {
        'c360_lake_rows_written_total{table="customer_signals"}': 50 * len(winners)
    }


def test_two_processes_at_once_both_finish_one_after_the_other(forks: ForkServer, tmp_path: Path) -> None:
    results = run_two_at_once(forks, tmp_path / "artifacts", timeout=30, hold=0.5)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert_intact(tmp_path / "artifacts", winners=["P", "Q"])


def test_two_processes_at_once_one_fails_with_a_clear_message(forks: ForkServer, tmp_path: Path) -> None:
    results = run_two_at_once(forks, tmp_path / "artifacts", timeout=0.2, hold=2.0)
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 2)
    assert "another c360 process is writing to" in loser.stderr and "try again" in loser.stderr
    winner = "P" if results[0].returncode == 0 else "Q"
    assert_intact(tmp_path / "artifacts", winners=[winner])


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from c360_dagster.domain.core import locking
    artifacts, shard = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
    with locking.project_lock(artifacts, timeout_s=5, shard=shard):
        (artifacts / "held").touch()
        while not (artifacts / "stop").exists():
            time.sleep(0.01)
        (artifacts / "released").touch()
    """
)


def start_holder(forks: ForkServer, artifacts: Path, *shard: str) -> Fork:
    artifacts.mkdir(parents=True, exist_ok=True)
    holder = forks.start([sys.executable, "-c", HOLDER, str(artifacts), *shard])
    deadline = time.monotonic() + 60
    while not (artifacts / "held").exists():
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.01)
    return holder


def test_waiting_process_gets_the_lock_when_the_holder_releases_it(forks: ForkServer, tmp_path: Path) -> None:
    holder = start_holder(forks, tmp_path)
    (tmp_path / "stop").touch()
    with locking.project_lock(tmp_path, timeout_s=30):
        assert (tmp_path / "released").exists()  # we got in only after the holder let go
    assert holder.wait(timeout=30) == 0


def test_timeout_names_the_project_and_the_holder(forks: ForkServer, tmp_path: Path) -> None:
    holder = start_holder(forks, tmp_path)
    try:
        with pytest.raises(locking.LockTimeout) as caught, locking.project_lock(tmp_path, timeout_s=0.2):
            pass
        assert str(caught.value).startswith(f"another c360 process is writing to {tmp_path} (pid {holder.pid})")
        assert "try again" in str(caught.value) and caught.value.code == "LOCKED"
    finally:
        (tmp_path / "stop").touch()
        holder.wait(timeout=30)


def test_a_shard_lock_holds_off_only_that_shards_writers(forks: ForkServer, tmp_path: Path) -> None:
    holder = start_holder(forks, tmp_path, "3")
    try:
        with locking.project_lock(tmp_path, timeout_s=0.2, shard="1"), locking.project_lock(tmp_path, timeout_s=0.2):
            pass  # shard 1 and the unsharded writers go ahead while shard 3 writes
        with pytest.raises(locking.LockTimeout) as caught, locking.project_lock(tmp_path, timeout_s=0.2, shard="3"):
            pass
        assert str(caught.value).startswith(f"another c360 process is writing shard 3 of {tmp_path} (pid {holder.pid})")
    finally:
        (tmp_path / "stop").touch()
        holder.wait(timeout=30)


def test_a_shard_key_that_is_not_a_number_cannot_name_a_lock(tmp_path: Path) -> None:
    for bad in ("../x", "", "01", "-1", "a", 3):
        with pytest.raises(ValueError, match="is not a shard key"):
            locking.project_lock(tmp_path, shard=bad)  # type: ignore[arg-type]  # a wrong type on purpose


def test_lock_of_a_killed_process_is_released(forks: ForkServer, tmp_path: Path) -> None:
    holder = start_holder(forks, tmp_path)
    holder.kill()
    holder.wait(timeout=30)
    with locking.project_lock(tmp_path, timeout_s=5):
        assert (tmp_path / ".c360.lock").exists()


def test_lock_is_reentrant_within_a_thread(tmp_path: Path) -> None:
    with locking.project_lock(tmp_path, timeout_s=0.2):
        with locking.project_lock(tmp_path, timeout_s=0.2):
            pass
        with locking.project_lock(tmp_path, timeout_s=0.2):
            pass


def test_crash_mid_write_leaves_lake_log_and_artifacts_intact(tmp_path: Path, monkeypatch) -> None:
    db = DuckDBLake(str(tmp_path / "lake"), CONTRACTS)
    log = tmp_path / "governance" / "events.jsonl"
    summary = tmp_path / "customer" / "summary.md"
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    first = pl.DataFrame(
        {
            "account_id": ["A1"],
            "code": ["SIG_X"],
            "kind": ["risk"],
            "evidence": ["{}"],
            "signal_id": ["0" * 16],
            "status": ["new"],
            "since": [AS_OF],
            "snoozed_until": pl.Series([None], dtype=pl.Date),
        }
    )
    with locking.project_lock(tmp_path):
        write_text_atomic(summary, "first run\n")
        db.write_snapshot("customer_signals", first, AS_OF)
        eventlog.append_event(
            log,
            {
                "asset": "lake/customer_signals",
                "partition": None,
                "run_id": "r1",
                "as_of": AS_OF.isoformat(),
                "config_hash": None,
                "code_version": "1",
                "inputs": {},
                "outputs": {},
            },
            key,
        )
    log_before = log.read_bytes()

    # A crash while writing the artifact: the half-written temp file never replaces it.
    with pytest.raises(RuntimeError), locking.project_lock(tmp_path), atomic_writer(summary) as handle:
        handle.write("second run, half writ")
        raise RuntimeError("killed")
    # A crash inside the lake writer, after its DELETE: the transaction rolls back.
    monkeypatch.setattr(lake, "_insert", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError), locking.project_lock(tmp_path):
        db.write_snapshot("customer_signals", first.with_columns(pl.lit("B2").alias("account_id")), AS_OF)

    assert summary.read_text() == "first run\n"
    assert sorted(p.name for p in summary.parent.iterdir()) == ["summary.md"]  # no temp files left
    assert db.read_snapshot("customer_signals")["account_id"].to_list() == ["A1"]
    assert log.read_bytes() == log_before
    assert eventlog.verify_log(log, log.with_name("events.pub")).ok
    with locking.project_lock(tmp_path, timeout_s=0.2):  # the crash released the lock
        pass
