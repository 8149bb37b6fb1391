"""Prometheus text-format counters: exact output, accumulation, labels, concurrency."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from c360_dagster.domain import metrics


def test_counters_accumulate_and_render_sorted_with_help_and_type(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "c360.prom"
    metrics.increment(path, "qbr_generated", labels={"account": "ZED-9"})
    metrics.increment(path, "c360_loaded", 40)
    metrics.increment(path, "qbr_generated", labels={"account": "ACME-001"})
    assert metrics.increment(path, "c360_loaded", 2) == 42
    metrics.increment(path, "qbr_generated", labels={"account": "ACME-001"})
    # Expected text written by hand: metrics by name, series by labels, integers without ".0".
    assert path.read_text() == (
        "# HELP c360_loaded Accounts loaded into the Customer 360 view.\n"
        "# TYPE c360_loaded counter\n"
        "c360_loaded 42\n"
        "# HELP qbr_generated QBR packs generated, per account.\n"
        "# TYPE qbr_generated counter\n"
        'qbr_generated{account="ACME-001"} 2\n'
        'qbr_generated{account="ZED-9"} 1\n'
    )
    assert metrics.read_metrics(path) == {
        "c360_loaded": 42,
        'qbr_generated{account="ACME-001"}': 2,
        'qbr_generated{account="ZED-9"}': 1,
    }


def test_same_increments_in_another_order_give_identical_bytes(tmp_path: Path) -> None:
    steps = [("health_to_lake", 3, None), ("signals_to_lake", 5, None), ("qbr_generated", 1, {"account": "B"})]
    for name, order in (("one", steps), ("two", steps[::-1])):
        for metric, value, labels in order:
            metrics.increment(tmp_path / name / "c360.prom", metric, value, labels)
    assert (tmp_path / "one" / "c360.prom").read_bytes() == (tmp_path / "two" / "c360.prom").read_bytes()


def test_label_values_and_help_are_escaped_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "c360.prom"
    odd = 'Acme "Intl"\\EU\nB'
    metrics.increment(path, "custom_total", 1.5, {"account": odd, "region": "EMEA"}, help="Line one\nback\\slash")
    text = path.read_text()
    assert 'custom_total{account="Acme \\"Intl\\"\\\\EU\\nB",region="EMEA"} 1.5\n' in text
    assert "# HELP custom_total Line one\\nback\\\\slash\n" in text
    metrics.increment(path, "custom_total", 1, {"region": "EMEA", "account": odd})
    assert metrics.read_metrics(path) == {'custom_total{account="Acme \\"Intl\\"\\\\EU\\nB",region="EMEA"}': 2.5}
    assert path.read_text().count("# HELP custom_total Line one\\nback\\\\slash\n") == 1  # help kept on rewrite


def test_bad_names_and_negative_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c360.prom"
    with pytest.raises(ValueError, match="cannot decrease"):
        metrics.increment(path, "c360_loaded", -1)
    with pytest.raises(ValueError, match="not a Prometheus metric name"):
        metrics.increment(path, "c360-loaded")
    with pytest.raises(ValueError, match="not a Prometheus label name"):
        metrics.increment(path, "qbr_generated", labels={"account id": "A"})
    assert not path.exists() and metrics.read_metrics(path) == {}


def test_concurrent_increments_are_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "c360.prom"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from c360_dagster.domain import metrics
        for _ in range(25):
            metrics.increment(Path({str(path)!r}), "renewals_to_lake", 2)
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(4)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0, 0]
    assert metrics.read_metrics(path) == {"renewals_to_lake": 200}  # 4 processes x 25 x 2
