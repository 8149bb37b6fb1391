"""Prometheus counters: exact exposition, accumulation, declared names and labels, concurrency, cost."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
from forked import ForkServer
from prometheus_client.parser import text_string_to_metric_families

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.governance import metrics


def test_counters_accumulate_and_render_sorted_with_help_and_type(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "c360.prom"
    metrics.increment(path, "c360_lake_rows_written", 12, {"table": "renewal_forecasts"})
    metrics.increment(path, "c360_accounts_loaded", 40)
    metrics.increment(path, "c360_lake_rows_written", 13, {"table": "crm_opps"})
    assert metrics.increment(path, "c360_accounts_loaded", 2) == 42
    metrics.increment(path, "c360_lake_rows_written", 13, {"table": "crm_opps"})
    # Expected text written by hand: counters by name, series by labels, samples named `_total`.
    assert path.read_text() == (
        "# HELP c360_accounts_loaded_total Accounts loaded into the Customer 360 view.\n"
        "# TYPE c360_accounts_loaded_total counter\n"
        "c360_accounts_loaded_total 42.0\n"
        "# HELP c360_lake_rows_written_total Rows written to a lake table.\n"
        "# TYPE c360_lake_rows_written_total counter\n"
        'c360_lake_rows_written_total{table="crm_opps"} 26.0\n'
        'c360_lake_rows_written_total{table="renewal_forecasts"} 12.0\n'
    )
    assert metrics.read_metrics(path) == {
        "c360_accounts_loaded_total": 42,
        'c360_lake_rows_written_total{table="crm_opps"}': 26,
        'c360_lake_rows_written_total{table="renewal_forecasts"}': 12,
    }
    # A Prometheus parser reads every sample back as a counter.
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert {name: f.type for name, f in families.items()} == {
        "c360_accounts_loaded": "counter",
        "c360_lake_rows_written": "counter",
    }


def test_same_increments_in_another_order_give_identical_bytes(tmp_path: Path) -> None:
    steps = [
        ("c360_accounts_scored", 3, None),
        ("c360_lake_rows_written", 5, {"table": "customer_signals"}),
        ("c360_qbr_packs_generated", 1, None),
    ]
    for name, order in (("one", steps), ("two", steps[::-1])):
        for metric, value, labels in order:
            metrics.increment(tmp_path / name / "c360.prom", metric, value, labels)
    assert (tmp_path / "one" / "c360.prom").read_bytes() == (tmp_path / "two" / "c360.prom").read_bytes()


def test_undeclared_names_labels_and_negative_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c360.prom"
    with pytest.raises(ValueError, match="cannot decrease"):
        metrics.increment(path, "c360_accounts_loaded", -1)
    with pytest.raises(ValueError, match="not a declared counter"):
        metrics.increment(path, "qbr_generated")
    with pytest.raises(ValueError, match=r"takes the labels \[\]"):  # no per-account series
        metrics.increment(path, "c360_qbr_packs_generated", labels={"account": "ACME-001"})
    with pytest.raises(ValueError, match=r"takes the labels \['table'\]"):
        metrics.increment(path, "c360_lake_rows_written", 3)
    assert not path.exists() and metrics.read_metrics(path) == {}


def test_a_file_that_is_not_an_exposition_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "c360.prom"
    path.write_text("c360_accounts_loaded_total forty-two\n")
    with pytest.raises(C360Error, match="is not a Prometheus text exposition") as caught:
        metrics.increment(path, "c360_accounts_loaded")
    assert caught.value.code == "METRICS_INVALID"
    assert path.read_text() == "c360_accounts_loaded_total forty-two\n"


@pytest.mark.untraced
def test_an_increment_costs_the_same_after_many_runs(tmp_path: Path) -> None:
    """The file holds a fixed set of series, so run 2,000 rewrites as few bytes as run 1 did."""
    path = tmp_path / "c360.prom"
    metrics.increment(path, "c360_qbr_packs_generated", 200)
    size_after_one = path.stat().st_size
    for _ in range(1999):
        metrics.increment(path, "c360_qbr_packs_generated", 200)
    assert metrics.read_metrics(path) == {"c360_qbr_packs_generated_total": 400_000}
    assert path.stat().st_size == size_after_one + len("400000.0") - len("200.0")
    started = time.perf_counter()
    metrics.increment(path, "c360_qbr_packs_generated", 200)
    assert time.perf_counter() - started < 0.5


def test_concurrent_increments_are_not_lost(forks: ForkServer, tmp_path: Path) -> None:
    path = tmp_path / "c360.prom"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from c360_dagster.domain.governance import metrics
        for _ in range(25):
            metrics.increment(Path({str(path)!r}), "c360_lake_rows_written", 2, {{"table": "renewal_forecasts"}})
        """
    )
    workers = [forks.start([sys.executable, "-c", script]) for _ in range(4)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0, 0]
    # 4 processes x 25 x 2
    assert metrics.read_metrics(path) == {'c360_lake_rows_written_total{table="renewal_forecasts"}': 200}
