"""Quality rules over the stage frames, reported as Dagster asset checks by the wiring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

SAMPLE_ROWS = 5

# Rule name → what it asserts (the asset check's description in the UI).
RULES = {
    "every_account_scored_once": "Each account in the 360 view has exactly one health row.",
    "score_within_0_100": "Scored accounts have an integer score from 0 to 100; the others (churned, not started, insufficient data) have none.",
    "points_sum_to_score": "Component points add up to the score within rounding (±1).",
    "signal_codes_known": "Every signal code is in the signal catalog.",
    "signal_once_per_account": "A signal code fires at most once per account.",
}
HEALTH_RULES = ("every_account_scored_once", "score_within_0_100", "points_sum_to_score")
SIGNAL_RULES = ("signal_codes_known", "signal_once_per_account")


@dataclass(frozen=True)
class Finding:
    """The outcome of one rule: whether it passed, how many rows broke it, and a few of them."""

    name: str
    passed: bool
    count: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    severity: str = "ERROR"  # or "WARN": reported, never blocking


def finding(name: str, offending: pl.DataFrame, description: str, severity: str = "ERROR") -> Finding:
    """A finding from the frame of offending rows (empty frame = passed)."""
    sample = [
        {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in row.items()}
        for row in offending.head(SAMPLE_ROWS).to_dicts()
    ]
    return Finding(name, offending.is_empty(), offending.height, sample, description, severity)


def rule_finding(name: str, offending: pl.DataFrame) -> Finding:
    """The finding of one of this module's RULES."""
    return finding(name, offending, RULES[name])


def health_findings(health: pl.DataFrame, account_ids: pl.Series, components: tuple[str, ...]) -> list[Finding]:
    """Every account scored exactly once; scores in 0–100; component points sum to the score."""
    # Each rule reads only its columns (lazily): filtering the whole frame copies its text columns.
    rows = health.lazy()
    counts = rows.group_by("account_id").len()
    scored = pl.LazyFrame({"account_id": account_ids}).join(counts, on="account_id", how="left")
    points = pl.sum_horizontal(pl.col(f"{c}_points").fill_null(0) for c in components)
    return [
        rule_finding(
            "every_account_scored_once",
            scored.filter(pl.col("len").is_null() | (pl.col("len") != 1)).collect(),
        ),
        rule_finding(
            "score_within_0_100",
            rows.filter(
                pl.when(pl.col("status") == "scored")
                .then(~pl.col("score").is_between(0, 100).fill_null(False))
                .otherwise(pl.col("score").is_not_null())
            )
            .select("account_id", "status", "score")
            .collect(),
        ),
        rule_finding(
            "points_sum_to_score",
            rows.with_columns(points_total=points)
            .filter((pl.col("status") == "scored") & ((pl.col("points_total") - pl.col("score")).abs() > 1.0))
            .select("account_id", "score", "points_total")
            .collect(),
        ),
    ]


def signal_findings(signals: pl.DataFrame, known_codes: set[str]) -> list[Finding]:
    """Every signal code is a known one and fires at most once per account."""
    return [
        rule_finding(
            "signal_codes_known",
            signals.filter(~pl.col("code").is_in(sorted(known_codes))).select("account_id", "code"),
        ),
        rule_finding(
            "signal_once_per_account",
            signals.group_by("account_id", "code").len().filter(pl.col("len") > 1).sort("account_id", "code"),
        ),
    ]
