"""Backtest: health tiers and renewal buckets at past dates against what happened at renewal.

At each snapshot date the view is cut with `view_as_of` (nothing dated later is seen), then
scored, signalled and forecast with today's configs; every renewal that happened within the
horizon after the snapshot is matched with its account's tier and its bucket on that date.
What is measured and how outcomes are derived is documented in docs/backtest.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import write_text_atomic
from c360_dagster.domain.core.text import render_template
from c360_dagster.domain.ingest.timetravel import anniversary, view_as_of
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.renewals.forecast import BUCKETS, RenewalsConfig, forecast_renewals
from c360_dagster.domain.scoring.account_state import CHURNED, DOWNSOLD, RENEWED, succession
from c360_dagster.domain.scoring.health import INSUFFICIENT_DATA, TIERS, HealthConfig, score_health
from c360_dagster.domain.scoring.signals import SignalsConfig, detect_signals

MAX_HORIZON_DAYS = 365  # at most one renewal per subscription falls inside a horizon
MD_TEMPLATE = "backtest.md.j2"
SVG_TEMPLATE = "backtest_chart.svg.j2"
MD_FILE, SVG_FILE = "backtest.md", "backtest.svg"
OUTCOME_COLUMNS = {
    "subscription_id": pl.Utf8,
    "account_id": pl.Utf8,
    "renewal_date": pl.Date,
    "outcome": pl.Utf8,
    "arr": pl.Float64,  # up for renewal
    "currency": pl.Utf8,
    "arr_after": pl.Float64,  # what it renewed at (the successor's share); 0 on churn
}
# Rows of the tier table: the tiers, then renewals of accounts that had no score on the snapshot.
TIER_ROWS = (*TIERS, INSUFFICIENT_DATA)
RATE_DECIMALS = 4


@dataclass(frozen=True)
class BacktestResult:
    """Pooled backtest measures over every snapshot, plus the rows they were computed from."""

    data_as_of: dt.date
    start: dt.date
    end: dt.date
    step_days: int
    horizon_days: int
    grace_days: int  # the succession rule's renewal grace (health.yaml lifecycle.renewal_grace_days)
    as_of_dates: tuple[dt.date, ...]
    config_hashes: Mapping[str, str]  # health, signals, renewals
    observations: pl.DataFrame  # as_of, OUTCOME_COLUMNS, tier, status, bucket, probability: every snapshot's
    counted: pl.DataFrame  # the same, each renewal once: from the earliest snapshot that saw it (the measures)
    snapshots: (
        pl.DataFrame
    )  # per as_of: accounts, tier counts, unscored, risk signals, renewals, churned, downsold, not_yet_observed
    tiers: pl.DataFrame  # tier (TIER_ROWS), renewals, churned, renewed, downsold, churn_rate
    calibration: pl.DataFrame  # bucket, probability, renewals, renewed, observed_rate, gap_points
    retention: (
        pl.DataFrame
    )  # per quarter and currency: renewals, ARR up, churned, downsold, expanded, after, kept, grr, nrr
    red_flagged: int  # renewals whose account was red
    red_churned: int  # of those, churned
    churned: int  # all churned renewals
    red_precision: float | None
    red_recall: float | None
    lift_red_over_green: float | None


def renewal_outcomes(view: Customer360, grace_days: int) -> pl.DataFrame:
    """Every renewal event dated on or before the view's as_of, sorted by renewal_date, subscription_id.

    Terms are annual from `start_date`: each anniversary before `renewal_date` was renewed at
    the same ARR. A cancelled or churned subscription ended at its `renewal_date`, and the
    succession rule (`account_state.succession`, grace `grace_days`) says whether a successor
    renewed it (at a lower ARR: downsold) or it churned. An active subscription's
    `renewal_date` is still ahead (or its outcome unrecorded), so it is no event.
    """
    subs = view.subs
    years = pl.int_ranges(1, pl.col("renewal_date").dt.year() - pl.col("start_date").dt.year() + 1)
    anniversaries = (
        subs.select("subscription_id", "account_id", "start_date", "renewal_date", "arr", "currency", years=years)
        .explode("years")
        .filter(pl.col("years").is_not_null())
        .with_columns(anniversary=anniversary(pl.col("start_date"), pl.col("years")))
        .filter(pl.col("anniversary") < pl.col("renewal_date"))
        .select(
            "subscription_id",
            "account_id",
            "arr",
            "currency",
            renewal_date="anniversary",
            outcome=pl.lit(RENEWED),
            arr_after="arr",
        )
    )
    ended = succession(subs, grace_days).select(
        "subscription_id",
        "account_id",
        "renewal_date",
        "outcome",
        "arr",
        "currency",
        arr_after=pl.col("successor_arr").fill_null(0.0),
    )
    return (
        pl.concat([anniversaries.select(list(OUTCOME_COLUMNS)), ended.select(list(OUTCOME_COLUMNS))])
        .cast(OUTCOME_COLUMNS)  # type: ignore[arg-type]  # Polars types cast()'s dict keys as an invariant union
        .filter(pl.col("renewal_date") <= view.as_of)
        .sort("renewal_date", "subscription_id")
    )


def _snapshot_dates(
    view: Customer360, start: dt.date, end: dt.date, step_days: int, horizon_days: int
) -> list[dt.date]:
    def fail(message: str) -> None:
        raise C360Error(message, code="BACKTEST_INVALID")

    if step_days < 1:
        fail(f"step must be at least 1 day, got {step_days}")
    if not 1 <= horizon_days <= MAX_HORIZON_DAYS:
        fail(f"horizon must be 1 to {MAX_HORIZON_DAYS} days (one renewal per subscription), got {horizon_days}")
    if start > end:
        fail(f"from ({start.isoformat()}) is after to ({end.isoformat()})")
    if end > view.as_of:
        fail(f"to ({end.isoformat()}) is after the data's as_of ({view.as_of.isoformat()}): nothing happened after it")
    count = (end - start).days // step_days + 1
    return [start + dt.timedelta(days=step_days * i) for i in range(count)]


def _snapshot(
    view: Customer360,
    outcomes: pl.DataFrame,
    as_of: dt.date,
    configs: tuple[HealthConfig, SignalsConfig, RenewalsConfig],
    horizon_days: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(observations, one summary row) for one snapshot date."""
    health_config, signals_config, renewals_config = configs
    cut = view_as_of(view, as_of)
    health = score_health(cut, health_config)
    signals = detect_signals(cut, signals_config, health_config.lifecycle)
    forecast = forecast_renewals(cut, health, signals, renewals_config, window_days=horizon_days)
    horizon_end = as_of + dt.timedelta(days=horizon_days)
    events = outcomes.filter(
        (pl.col("renewal_date") > as_of)
        & (pl.col("renewal_date") <= horizon_end)
        & pl.col("subscription_id").is_in(cut.subs["subscription_id"].implode())
    )
    observations = (
        events.join(health.select("account_id", "tier", "status"), on="account_id", how="left")
        .join(
            forecast.select("subscription_id", "renewal_date", "bucket", "probability"),
            on=["subscription_id", "renewal_date"],
            how="left",
        )
        .select(pl.lit(as_of).alias("as_of"), pl.all())
    )
    summary = pl.DataFrame(
        {
            "as_of": [as_of],
            "accounts": [health.height],
            **{tier: [health.filter(pl.col("tier") == tier).height] for tier in TIERS},
            "unscored": [health.filter(pl.col("tier").is_null()).height],
            "risk_signals": [signals.filter(pl.col("kind") == "risk").height],
            "renewals": [observations.height],
            "churned": [observations.filter(pl.col("outcome") == CHURNED).height],
            "downsold": [observations.filter(pl.col("outcome") == DOWNSOLD).height],
            # Forecast renewals after the data's as_of: their outcome is not in the data yet.
            "not_yet_observed": [forecast.join(events, on=["subscription_id", "renewal_date"], how="anti").height],
        }
    )
    return observations, summary


def _rate(numerator: str, denominator: str) -> pl.Expr:
    """numerator / denominator to RATE_DECIMALS, null when the denominator is 0."""
    return (
        pl.when(pl.col(denominator) > 0)
        .then(pl.col(numerator) / pl.col(denominator))
        .round(RATE_DECIMALS, mode="half_away_from_zero")
    )


def _counts_by(observations: pl.DataFrame, key: str, values: pl.DataFrame) -> pl.DataFrame:
    """`values` (one row per key value, in display order) with renewals/churned/renewed/downsold counts, zeros included.

    `renewed` counts every renewal the customer made, downsells included; `downsold` is that part.
    """
    counts = observations.group_by(key).agg(
        renewals=pl.len().cast(pl.Int64),
        churned=(pl.col("outcome") == CHURNED).sum().cast(pl.Int64),
        renewed=(pl.col("outcome") != CHURNED).sum().cast(pl.Int64),
        downsold=(pl.col("outcome") == DOWNSOLD).sum().cast(pl.Int64),
    )
    return values.join(counts, on=key, how="left", maintain_order="left").with_columns(
        pl.col("renewals", "churned", "renewed", "downsold").fill_null(0)
    )


def _tier_rates(observations: pl.DataFrame) -> pl.DataFrame:
    """Per tier, and for accounts that had no score then (by status), the renewals and churn rate."""
    tiers = pl.DataFrame({"tier": list(TIER_ROWS)})
    keyed = observations.with_columns(tier=pl.coalesce("tier", "status"))
    return _counts_by(keyed, "tier", tiers).with_columns(churn_rate=_rate("churned", "renewals"))


def _retention(observations: pl.DataFrame) -> pl.DataFrame:
    """Gross and net revenue retention per calendar quarter of the renewal date and currency.

    Each renewal event counts once (`counted`), however many snapshots saw it. GRR = ARR kept (at most the
    ARR up for renewal: churn and downsells lost, expansion not counted) / ARR up for renewal;
    NRR = ARR after renewal (expansion counted) / ARR up for renewal. Amounts are never summed
    across currencies.
    """
    events = observations.select(list(OUTCOME_COLUMNS))
    amounts = ["arr_up", "churned_arr", "downsold_arr", "expanded_arr", "arr_after"]
    return (
        events.with_columns(
            period=pl.format("{}-Q{}", pl.col("renewal_date").dt.year(), pl.col("renewal_date").dt.quarter())
        )
        .group_by("period", "currency")
        .agg(
            renewals=pl.len().cast(pl.Int64),
            arr_up=pl.col("arr").sum(),
            churned_arr=pl.col("arr").filter(pl.col("outcome") == CHURNED).sum(),
            downsold_arr=(pl.col("arr") - pl.col("arr_after")).filter(pl.col("outcome") == DOWNSOLD).sum(),
            expanded_arr=(pl.col("arr_after") - pl.col("arr")).clip(lower_bound=0).sum(),
            arr_after=pl.col("arr_after").sum(),
        )
        .with_columns(kept_arr=pl.col("arr_up") - pl.col("churned_arr") - pl.col("downsold_arr"))
        .with_columns(pl.col(*amounts, "kept_arr").round(2))
        .with_columns(grr=_rate("kept_arr", "arr_up"), nrr=_rate("arr_after", "arr_up"))
        .sort("period", "currency")
    )


def _calibration(observations: pl.DataFrame, config: RenewalsConfig) -> pl.DataFrame:
    buckets = pl.DataFrame({"bucket": list(BUCKETS), "probability": [float(config.buckets[b]) for b in BUCKETS]})
    return (
        _counts_by(observations, "bucket", buckets)
        .drop("churned", "downsold")
        .with_columns(observed_rate=_rate("renewed", "renewals"))
        # + 0.0 turns a rounded -0.0 into 0.0
        .with_columns(gap_points=((pl.col("observed_rate") - pl.col("probability")) * 100).round(1) + 0.0)
    )


def _ratio(numerator: float | None, denominator: float | None, decimals: int) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, decimals)


def _lift(red: Mapping[str, Any], green: Mapping[str, Any]) -> float | None:
    """Red's churn rate ÷ green's, from the unrounded rates; None when green has no churn or red no renewals."""
    if red["renewals"] == 0 or green["churned"] == 0:
        return None
    return round((red["churned"] / red["renewals"]) / (green["churned"] / green["renewals"]), 2)


def run_backtest(
    view: Customer360,
    health_config: HealthConfig,
    signals_config: SignalsConfig,
    renewals_config: RenewalsConfig,
    start: dt.date,
    end: dt.date,
    step_days: int,
    horizon_days: int = 120,
) -> BacktestResult:
    """Score every snapshot from `start` to `end` (every `step_days`) and compare with the renewals that followed."""
    dates = _snapshot_dates(view, start, end, step_days, horizon_days)
    outcomes = renewal_outcomes(view, health_config.lifecycle.renewal_grace_days)
    configs = (health_config, signals_config, renewals_config)
    parts = [_snapshot(view, outcomes, as_of, configs, horizon_days) for as_of in dates]
    observations = pl.concat([observed for observed, _ in parts]).sort("as_of", "renewal_date", "subscription_id")
    snapshots = pl.concat([summary for _, summary in parts])
    # A renewal inside several snapshots' horizons counts once, as first foreseen: the prediction
    # made with the most time left to act on it (docs/backtest.md).
    counted = observations.unique(["subscription_id", "renewal_date"], keep="first", maintain_order=True)
    tiers = _tier_rates(counted)
    by_tier = {row["tier"]: row for row in tiers.to_dicts()}
    red = by_tier["red"]
    churned = int(tiers["churned"].sum())
    return BacktestResult(
        data_as_of=view.as_of,
        start=start,
        end=end,
        step_days=step_days,
        horizon_days=horizon_days,
        grace_days=health_config.lifecycle.renewal_grace_days,
        as_of_dates=tuple(dates),
        config_hashes={
            "health": health_config.config_hash,
            "signals": signals_config.config_hash,
            "renewals": renewals_config.config_hash,
        },
        observations=observations,
        counted=counted,
        snapshots=snapshots,
        tiers=tiers,
        calibration=_calibration(counted, renewals_config),
        retention=_retention(counted),
        red_flagged=red["renewals"],
        red_churned=red["churned"],
        churned=churned,
        red_precision=_ratio(red["churned"], red["renewals"], RATE_DECIMALS),
        red_recall=_ratio(red["churned"], churned, RATE_DECIMALS),
        lift_red_over_green=_lift(red, by_tier["green"]),
    )


def _lift_note(result: BacktestResult) -> str | None:
    """Why the lift is n/a, or None when it has a value."""
    if result.lift_red_over_green is not None:
        return None
    green = result.tiers.filter(pl.col("tier") == "green").row(0, named=True)
    if green["renewals"] == 0:
        return "no renewal of a green account was observed"
    if green["churned"] == 0:
        return "no green account churned, so there is nothing to divide by"
    return "no renewal of a red account was observed"


def render_backtest_md(result: BacktestResult) -> str:
    """`backtest.md`: headline measures, churn per tier, calibration per bucket and snapshots, with prose."""
    renewals = result.counted.height
    return render_template(
        MD_TEMPLATE,
        r=result,
        renewals=renewals,
        sightings=result.observations.height,
        churn_rate=_ratio(result.churned, renewals, RATE_DECIMALS),
        downsold=int(result.tiers["downsold"].sum()),
        not_yet_observed=int(result.snapshots["not_yet_observed"].sum()),
        lift_note=_lift_note(result),
        tiers=result.tiers.to_dicts(),
        calibration=result.calibration.to_dicts(),
        retention=result.retention.to_dicts(),
        snapshots=result.snapshots.to_dicts(),
        chart_file=SVG_FILE,
    )


# Chart geometry (SVG user units): plot area inside the margins, one group of two bars per bucket.
CHART_WIDTH, CHART_HEIGHT = 640, 360
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 60, 620, 60, 300
BAR_WIDTH, BAR_GAP = 48, 8


def _y(rate: float) -> float:
    return PLOT_BOTTOM - rate * (PLOT_BOTTOM - PLOT_TOP)


def _bar(x: float, rate: float | None) -> dict[str, Any]:
    """One bar's rectangle and label position (no rectangle when the rate is unknown)."""
    label = "n/a" if rate is None else f"{rate * 100:.1f}%"
    top = _y(rate or 0.0)
    return {
        "x": f"{x:.1f}",
        "y": f"{top:.1f}",
        "height": f"{PLOT_BOTTOM - top:.1f}",
        "label": label,
        "label_x": f"{x + BAR_WIDTH / 2:.1f}",
        "label_y": f"{top - 6:.1f}",
        "drawn": rate is not None,
    }


def render_backtest_chart_svg(result: BacktestResult) -> str:
    """`backtest.svg`: observed renewal rate vs configured probability per bucket, as grouped bars."""
    group_width = (PLOT_RIGHT - PLOT_LEFT) / max(result.calibration.height, 1)
    groups = []
    for index, row in enumerate(result.calibration.iter_rows(named=True)):
        first = PLOT_LEFT + index * group_width + (group_width - 2 * BAR_WIDTH - BAR_GAP) / 2
        groups.append(
            {
                "bucket": row["bucket"],
                "renewals": row["renewals"],
                "center_x": f"{PLOT_LEFT + (index + 0.5) * group_width:.1f}",
                "configured": _bar(first, row["probability"]),
                "observed": _bar(first + BAR_WIDTH + BAR_GAP, row["observed_rate"]),
            }
        )
    gridlines = [{"label": f"{pct}%", "y": f"{_y(pct / 100):.1f}"} for pct in (0, 25, 50, 75, 100)]
    return render_template(
        SVG_TEMPLATE,
        r=result,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        plot_left=PLOT_LEFT,
        plot_right=PLOT_RIGHT,
        plot_bottom=PLOT_BOTTOM,
        bar_width=BAR_WIDTH,
        groups=groups,
        gridlines=gridlines,
    )


def write_backtest(result: BacktestResult, out_dir: Path | str) -> dict[str, str]:
    """Write backtest.md and backtest.svg atomically; return file name → content hash."""
    out_dir = Path(out_dir)
    return {
        MD_FILE: write_text_atomic(out_dir / MD_FILE, render_backtest_md(result)),
        SVG_FILE: write_text_atomic(out_dir / SVG_FILE, render_backtest_chart_svg(result)),
    }
