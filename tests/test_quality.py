"""The quality rules behind the health and signal asset checks fail on crafted bad frames."""

from __future__ import annotations

import polars as pl

from c360_dagster.domain.scoring.quality import RULES, health_findings, signal_findings

COMPONENTS = ("adoption", "support")


def _health(rows: list[tuple[str, int, str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["account_id", "score", "status", "adoption_points", "support_points"], orient="row"
    )


def test_health_rules_pass_on_a_sound_frame():
    health = _health([("A", 70, "scored", 40.0, 30.0), ("B", 55, "scored", 25.2, 29.6)])
    findings = health_findings(health, pl.Series(["A", "B"]), COMPONENTS)
    assert [f.passed for f in findings] == [True, True, True]
    assert [f.description for f in findings] == [RULES[f.name] for f in findings]


def test_health_rules_name_the_offending_rows():
    health = _health(
        [
            ("A", 70, "scored", 40.0, 30.0),
            ("A", 70, "scored", 40.0, 30.0),  # scored twice
            ("B", 120, "scored", 60.0, 60.0),  # out of range
            ("C", 50, "scored", 20.0, 20.0),  # points add up to 40, not 50
            ("D", None, "insufficient_data", 0.0, 0.0),  # no score, no sum check: too little data
            ("F", 40, "churned", 0.0, 0.0),  # a churned account with a score
        ]
    )
    scored_once, in_range, points = health_findings(health, pl.Series(["A", "B", "C", "D", "E", "F"]), COMPONENTS)
    assert not scored_once.passed and scored_once.count == 2  # A twice, E never
    assert sorted(row["account_id"] for row in scored_once.sample) == ["A", "E"]
    assert not in_range.passed and in_range.sample == [
        {"account_id": "B", "status": "scored", "score": 120},
        {"account_id": "F", "status": "churned", "score": 40},
    ]
    assert not points.passed and points.sample == [{"account_id": "C", "score": 50, "points_total": 40.0}]


def test_signal_rules_catch_unknown_and_repeated_codes():
    signals = pl.DataFrame(
        {"account_id": ["A", "A", "B"], "code": ["SIG_USAGE_SLIDE_4W", "SIG_USAGE_SLIDE_4W", "SIG_MADE_UP"]}
    )
    known, once = signal_findings(signals, {"SIG_USAGE_SLIDE_4W"})
    assert not known.passed and known.sample == [{"account_id": "B", "code": "SIG_MADE_UP"}]
    assert not once.passed and once.sample == [{"account_id": "A", "code": "SIG_USAGE_SLIDE_4W", "len": 2}]
