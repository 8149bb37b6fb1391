"""Score history and trend from lake rows, and the impact of a candidate health config."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from c360_dagster.domain.governance.lake import DuckDBLake
from c360_dagster.domain.governance.lake_tables import health_rows
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.timetravel import view_as_of
from c360_dagster.domain.scoring import history
from c360_dagster.domain.scoring.health import (
    health_config_from_dict,
    load_health_config,
    score_health,
)
from c360_dagster.domain.scoring.overrides import apply_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "customer" / "health.yaml"
CONTRACTS = REPO / "contracts" / "schemas"


def snapshot(
    as_of: str, score: int | None, tier: str | None, points: dict[str, float | None], status: str = "scored"
) -> dict:
    """A row as `Lake.score_history` returns it."""
    return {
        "as_of": dt.date.fromisoformat(as_of),
        "score": score,
        "tier": tier,
        "status": status,
        "config_hash": "sha256:" + "a" * 64,
        "components": {c: {"points": p} for c, p in points.items()},
    }


def test_trend_says_up_down_same_and_which_components_moved() -> None:
    base = {"adoption": 20.0, "value": 10.0, "support": 15.0, "commercial": 15.0, "sentiment": 5.0}
    rows = [
        snapshot("2026-09-27", 60, "amber", {**base, "adoption": 15.0, "sentiment": None}),
        snapshot("2026-08-30", 65, "amber", base),  # given out of order: the trend sorts by as_of
        snapshot("2026-10-25", 72, "green", {**base, "adoption": 27.0, "sentiment": None}),
        snapshot("2026-11-22", 72, "green", {**base, "adoption": 27.0, "sentiment": None}),
    ]
    trend = history.score_trend(rows)
    assert [(p["as_of"], p["score"], p["tier"], p["direction"]) for p in trend] == [
        ("2026-08-30", 65, "amber", None),
        ("2026-09-27", 60, "amber", "Down"),
        ("2026-10-25", 72, "green", "Up"),
        ("2026-11-22", 72, "green", "Same"),
    ]
    assert trend[0]["moved"] == []
    # adoption 20 -> 15; sentiment became unavailable (5 -> null); the rest did not move.
    assert trend[1]["moved"] == [
        {"component": "adoption", "before": 20.0, "after": 15.0},
        {"component": "sentiment", "before": 5.0, "after": None},
    ]
    assert trend[2]["moved"] == [{"component": "adoption", "before": 15.0, "after": 27.0}]
    assert trend[3]["moved"] == []
    lines = history.render_trend("ACME-001", trend)
    assert lines[0] == "Score history of ACME-001 (4 snapshots):"
    assert lines[1].split() == ["2026-08-30", "65/100", "amber", "first", "snapshot"]
    assert "sentiment: 5 -> n/a points" in "\n".join(lines)


def test_a_snapshot_without_a_score_says_why_and_breaks_the_comparison() -> None:
    points = {"adoption": None, "value": None, "support": None, "commercial": None, "sentiment": None}
    rows = [
        snapshot("2026-08-30", None, None, points, "insufficient_data"),
        snapshot("2026-09-27", 70, "green", {**points, "adoption": 70.0}),
        snapshot("2026-10-25", None, None, points, "churned"),
    ]
    trend = history.score_trend(rows)
    assert [(p["score"], p["status"], p["direction"]) for p in trend] == [
        (None, "insufficient_data", None),
        (70, "scored", None),
        (None, "churned", None),
    ]
    lines = history.render_trend("A", trend)
    assert lines[1].split() == ["2026-08-30", "no", "score:", "insufficient", "data", "first", "snapshot"]
    assert lines[2].split() == ["2026-09-27", "70/100", "green", "no", "comparison"]
    assert lines[4].split() == ["2026-10-25", "no", "score:", "churned", "no", "comparison"]


def test_trend_over_two_real_lake_snapshots(tmp_path: Path) -> None:
    """ACME-001 on 2026-08-30 and on 2026-09-27 (the fixtures' as_of), stored and read back."""
    db = DuckDBLake(str(tmp_path / "lake"), CONTRACTS)
    view = read_customer_360(REPO / "fixtures" / "customer")
    config = load_health_config(CONFIG)
    for as_of in (dt.date(2026, 8, 30), view.as_of):
        scored = score_health(view_as_of(view, as_of), config)
        frame = apply_overrides(scored, (), as_of, config.red_below, config.green_from).frame
        db.write_snapshot("account_health", health_rows(frame), as_of)
    trend = history.score_trend(db.score_history("ACME-001"))
    assert [p["as_of"] for p in trend] == ["2026-08-30", "2026-09-27"]
    # 2026-09-27 is the worked example of docs/customer-360.md: 68 amber.
    assert (trend[1]["score"], trend[1]["tier"]) == (68, "amber")
    # A month earlier the slide and the champion's exit had not happened: the score was higher.
    assert trend[0]["score"] > 68 and trend[1]["direction"] == "Down"
    # The usage slide started after 2026-08-30: adoption is among the components that moved.
    moved = {m["component"]: m for m in trend[1]["moved"]}
    assert moved["adoption"]["after"] == 16.5  # 55 x 30 / 100
    assert moved["adoption"]["before"] > 16.5


def test_a_snapshot_held_at_amber_says_too_little_was_measured(tmp_path: Path) -> None:
    """SOYLENT-006 in the fixtures scores 84 but is amber: adoption and value are not measured."""
    db = DuckDBLake(str(tmp_path / "lake"), CONTRACTS)
    view = read_customer_360(REPO / "fixtures" / "customer")
    config = load_health_config(CONFIG)
    frame = apply_overrides(score_health(view, config), (), view.as_of, config.red_below, config.green_from).frame
    db.write_snapshot("account_health", health_rows(frame), view.as_of)
    trend = history.score_trend(db.score_history("SOYLENT-006"))
    assert trend[0]["tier_reason"].startswith("amber, not green: adoption and value (45% of the scorecard's weight)")
    lines = history.render_trend("SOYLENT-006", trend)
    assert lines[1] == "  2026-09-27   84/100  amber (too little measured)  first snapshot"
    # An override to another tier makes the computed amber's reason moot.
    overridden = {**snapshot("2026-09-27", 84, "red", {}), "tier_reason": trend[0]["tier_reason"]}
    assert history.score_trend([overridden])[0]["tier_reason"] is None
    assert history.render_trend("A", history.score_trend([overridden]))[1].split()[2] == "red"


def test_compare_configs_lists_tier_changes_with_points() -> None:
    view = read_customer_360(REPO / "fixtures" / "customer")
    baseline = load_health_config(CONFIG)
    data = yaml.safe_load(CONFIG.read_text())
    data["weights"]["sentiment"] = 0
    candidate = health_config_from_dict(data)
    changes = history.compare_configs(view, candidate, baseline)
    acme = changes.filter(account_id="ACME-001").row(0, named=True)
    # By hand (docs/customer-360.md): without sentiment, (55x30 + 73.25x15 + 89x20 + 83x20) / 85 = 72.81 -> 73, green.
    assert (acme["score_before"], acme["tier_before"], acme["score_after"], acme["tier_after"]) == (
        68,
        "amber",
        73,
        "green",
    )
    assert (acme["sentiment_points_before"], acme["sentiment_points_after"]) == (6.0, 0.0)
    assert acme["adoption_points_before"] == 16.5 and acme["adoption_points_after"] == pytest.approx(19.41, abs=0.005)
    assert changes["account_id"].to_list() == sorted(changes["account_id"].to_list())
    assert (changes["tier_before"] != changes["tier_after"]).all()
    assert history.compare_configs(view, baseline, baseline).is_empty()


def test_compare_says_why_a_tier_was_held_at_amber_and_a_status_in_words() -> None:
    from c360_dagster.commands import _render_compare

    view = read_customer_360(REPO / "fixtures" / "customer")
    baseline = load_health_config(CONFIG)
    data = yaml.safe_load(CONFIG.read_text())
    data["min_available_components"] = 5  # SOYLENT-006 has data for 3 components: not scored
    changes = history.compare_configs(view, health_config_from_dict(data), baseline)
    lines = _render_compare(
        {
            "baseline": "b.yaml",
            "candidate": "c.yaml",
            "as_of": "2026-09-27",
            "accounts": 12,
            "changes": changes.to_dicts(),
        }
    )
    soylent = next(line for line in lines if "SOYLENT-006" in line)
    assert soylent.split("  (")[0] == "  SOYLENT-006      amber (too little measured) 84 -> not enough data yet"
