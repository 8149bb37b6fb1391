"""Trust in the score over time: an account's trend across lake snapshots, and the impact of a
candidate health config before anyone adopts it. Documented in docs/trust.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from c360_dagster.domain.core.words import tier_words
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.health import COMPONENTS, HealthConfig, score_health, shown_tier_reason

UP, DOWN, SAME = "Up", "Down", "Same"


def _direction(score: int | None, previous: int | None) -> str | None:
    """Up/Down/Same between two scores; None when either snapshot has no score."""
    if score is None or previous is None:
        return None
    return UP if score > previous else DOWN if score < previous else SAME


def score_trend(history_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per snapshot (oldest first): as_of, score, tier (with health's `tier_reason` when it explains
    an amber tier), status, direction vs the previous one, components that moved.

    `history_rows` come from `lake.score_history`; the first snapshot, and any with no score on
    either side (churned, not started, insufficient data: `status` says which), have no direction (None).
    A component moved when its points changed; `before`/`after` are its points (null when not available).
    """
    trend: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for row in sorted(history_rows, key=lambda r: r["as_of"]):
        moved = []
        if previous is not None:
            for component in COMPONENTS:
                before = previous["components"].get(component, {}).get("points")
                after = row["components"].get(component, {}).get("points")
                if before != after:
                    moved.append({"component": component, "before": before, "after": after})
        as_of = row["as_of"]
        trend.append(
            {
                "as_of": as_of.isoformat() if isinstance(as_of, dt.date) else as_of,
                "score": row["score"],
                "tier": row["tier"],
                "tier_reason": shown_tier_reason(row),
                "status": row["status"],
                "direction": _direction(row["score"], previous["score"] if previous else None),
                "moved": moved,
                "config_hash": row.get("config_hash"),
            }
        )
        previous = row
    return trend


def render_trend(account_id: str, trend: Sequence[Mapping[str, Any]]) -> list[str]:
    """The trend as text lines: one per snapshot, then the components that moved."""
    lines = [f"Score history of {account_id} ({len(trend)} snapshot{'s' if len(trend) != 1 else ''}):"]
    tiers = [tier_words(point["tier"], point.get("tier_reason")) for point in trend]
    width = max((len(tier) for point, tier in zip(trend, tiers, strict=True) if point["score"] is not None), default=5)
    for index, point in enumerate(trend):
        direction = point["direction"] or ("first snapshot" if index == 0 else "no comparison")
        if point["score"] is None:
            lines.append(f"  {point['as_of']}  no score: {point['status'].replace('_', ' ')}  {direction}")
        else:
            lines.append(f"  {point['as_of']}  {point['score']:>3}/100  {tiers[index]:<{width}}  {direction}")
        lines += [
            f"      {moved['component']}: {_points(moved['before'])} -> {_points(moved['after'])} points"
            for moved in point["moved"]
        ]
    return lines


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def compare_configs(view: Customer360, candidate: HealthConfig, baseline: HealthConfig) -> pl.DataFrame:
    """Accounts whose tier changes from `baseline` to `candidate`, sorted by account_id.

    Columns: account_id, segment, score_before, tier_before, tier_reason_before, score_after,
    tier_after, tier_reason_after, and `<component>_points_before`/`_after` for each component.
    An account without a score has its status (e.g. insufficient_data) in place of the tier and a
    null score.
    """

    def scored(config: HealthConfig, suffix: str) -> pl.DataFrame:
        frame = score_health(view, config).with_columns(tier=pl.coalesce("tier", "status"))
        columns = ["score", "tier", "tier_reason", *(f"{c}_points" for c in COMPONENTS)]
        return frame.select("account_id", "segment", *(pl.col(c).alias(f"{c}_{suffix}") for c in columns))

    before, after = scored(baseline, "before"), scored(candidate, "after")
    points = [f"{c}_points_{when}" for c in COMPONENTS for when in ("before", "after")]
    return (
        before.join(after.drop("segment"), on="account_id", how="inner")
        .filter(pl.col("tier_before") != pl.col("tier_after"))
        .select(
            "account_id",
            "segment",
            *(f"{c}_{when}" for when in ("before", "after") for c in ("score", "tier", "tier_reason")),
            *points,
        )
        .sort("account_id")
    )
