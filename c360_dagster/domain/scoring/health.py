"""Rule-based account health: five components scored 0–100, weighted into one score and a tier.

Everything is columnar: per-account measures come from group_by/join over the 360 tables, and
the (per-segment) scorecard parameters are joined on as columns, so one pass scores every
account. The model, each measure and the rounding are documented in docs/customer-360.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core import json_text
from c360_dagster.domain.core.config import config_hash, load_yaml_config, validate_config
from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.text import evidence_text
from c360_dagster.domain.core.words import fmt_date, segment_label
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.account_state import (
    CHURNED,
    LIFECYCLE_SCHEMA,
    LIVE_STATES,
    NOT_STARTED,
    LifecycleConfig,
    account_states,
    lifecycle_config,
    lifecycle_counts,
)
from c360_dagster.domain.scoring.overrides import (
    override_fields,
    override_phrase,
    override_record,
)

COMPONENTS = ("adoption", "value", "support", "commercial", "sentiment")
SEGMENTS = ("enterprise", "mid_market", "smb")
TIERS = ("red", "amber", "green")
SCORED, INSUFFICIENT_DATA = "scored", "insufficient_data"
# Only `scored` has a score and tier; churned and not_started come from the account lifecycle.
STATUSES = (SCORED, INSUFFICIENT_DATA, CHURNED, NOT_STARTED)
# Each status in words, for people (the codes stay in the data).
STATUS_WORDS = {
    SCORED: "scored",
    INSUFFICIENT_DATA: "not enough data yet",
    CHURNED: "churned",
    NOT_STARTED: "not started",
}
WINDOW_KEYS = ("usage_days", "support_days", "credits_days", "nps_trend_days")
THRESHOLD_KEYS: dict[str, tuple[str, ...]] = {
    "adoption": ("utilisation_floor_pct", "utilisation_target_pct"),
    "value": (
        "breadth_floor_pct",
        "breadth_target_pct",
        "release_floor_pct",
        "release_target_pct",
        "breadth_weight",
        "release_weight",
    ),
    "support": (
        "severity1_weight",
        "severity2_weight",
        "severity3_weight",
        "severity4_weight",
        "volume_start_per_10_seats",
        "volume_full_per_10_seats",
        "volume_max_penalty",
        "open_sev1_penalty",
        "sla_breach_penalty",
    ),
    "commercial": (
        "overdue_days_start",
        "overdue_days_full",
        "overdue_days_max_penalty",
        "overdue_amount_start_pct",
        "overdue_amount_full_pct",
        "overdue_amount_max_penalty",
        "credits_start_pct",
        "credits_full_pct",
        "credits_max_penalty",
        "discount_start_pct",
        "discount_full_pct",
        "discount_max_penalty",
    ),
    "sentiment": ("nps_floor", "nps_target", "trend_points_per_nps_point", "trend_max_adjustment"),
}
# (lower, upper) threshold pairs of one ramp: upper must be strictly greater (it is a divisor).
ORDERED_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "adoption": (("utilisation_floor_pct", "utilisation_target_pct"),),
    "value": (("breadth_floor_pct", "breadth_target_pct"), ("release_floor_pct", "release_target_pct")),
    "support": (("volume_start_per_10_seats", "volume_full_per_10_seats"),),
    "commercial": (
        ("overdue_days_start", "overdue_days_full"),
        ("overdue_amount_start_pct", "overdue_amount_full_pct"),
        ("credits_start_pct", "credits_full_pct"),
        ("discount_start_pct", "discount_full_pct"),
    ),
    "sentiment": (("nps_floor", "nps_target"),),
}
NOT_LIVE_REASONS = {
    CHURNED: "the account has churned (no active subscription), so it is not scored",
    NOT_STARTED: "the account has not started (no subscription has started yet), so it is not scored",
}
_SHARED_OUT = "; its weight is shared out proportionally over the available components"
# The view's tables `score_health` reads (the account lifecycle's included): a run opens only these.
VIEW_TABLES = ("accounts", "subs", "usage", "cases", "invoices", "nps")


# The health frame: these account columns, then each component's parts (docs/architecture.md).
ACCOUNT_COLUMNS = (
    "account_id",
    "segment",
    "scorecard",
    "score",
    "tier",
    "tier_reason",
    "status",
    "status_reason",
    "lifecycle",
    "config_hash",
)
COMPONENT_PARTS = ("score", "weight", "points", "reason", "evidence")


def _object(properties: Mapping[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": dict(properties),
        "required": sorted(properties) if required else [],
    }


_NUMBER = {"type": "number", "minimum": 0}
_PERCENT = {"type": "number", "minimum": 0, "maximum": 100}


def _weights_schema(required: bool) -> dict[str, Any]:
    return _object(dict.fromkeys(COMPONENTS, _NUMBER), required=required)


def _thresholds_schema(required: bool) -> dict[str, Any]:
    return _object(
        {c: _object(dict.fromkeys(keys, _NUMBER), required=required) for c, keys in THRESHOLD_KEYS.items()},
        required=required,
    )


HEALTH_SCHEMA: dict[str, Any] = {
    **_object(
        {
            "weights": _weights_schema(True),
            "tiers": _object({"red_below": _PERCENT, "green_from": _PERCENT, "green_min_measured_pct": _PERCENT}),
            "min_available_components": {"type": "integer", "minimum": 1, "maximum": len(COMPONENTS)},
            "lifecycle": LIFECYCLE_SCHEMA,
            "feature_catalog_size": {"type": "integer", "minimum": 1},
            "windows": _object({k: {"type": "integer", "minimum": 1} for k in WINDOW_KEYS}),
            "thresholds": _thresholds_schema(True),
            "segments": _object(
                {
                    s: _object(
                        {"weights": _weights_schema(False), "thresholds": _thresholds_schema(False)},
                        required=False,
                    )
                    for s in SEGMENTS
                },
                required=False,
            ),
        }
    ),
    "required": sorted(
        ["weights", "tiers", "min_available_components", "lifecycle", "feature_catalog_size", "windows", "thresholds"]
    ),
}


@dataclass(frozen=True)
class Scorecard:
    """Weights and thresholds resolved for one segment (segment override, else default)."""

    name: str  # "default" or "segment:<segment>"
    weights: dict[str, float]
    thresholds: dict[str, dict[str, float]]


@dataclass(frozen=True)
class HealthConfig:
    """A validated health.yaml: one resolved scorecard per segment plus the global settings."""

    scorecards: dict[str, Scorecard]
    red_below: float
    green_from: float
    green_min_measured_pct: float
    min_available_components: int
    lifecycle: LifecycleConfig
    feature_catalog_size: int
    windows: dict[str, int]
    config_hash: str


def load_health_config(path: Path | str) -> HealthConfig:
    """Read and validate health.yaml; any mistake is a ConfigError naming the key."""
    return _build_config(load_yaml_config(path, HEALTH_SCHEMA), str(path))


def health_config_from_dict(data: Mapping[str, Any], source: str = "health config") -> HealthConfig:
    """Validate an already parsed config (the same checks as `load_health_config`)."""
    return _build_config(validate_config(data, HEALTH_SCHEMA, source), source)


def _build_config(data: Mapping[str, Any], source: str) -> HealthConfig:
    tiers = data["tiers"]
    if tiers["green_from"] < tiers["red_below"]:
        raise ConfigError(f"{source}: tiers.green_from: must not be below tiers.red_below ({tiers['red_below']})")
    default = Scorecard("default", dict(data["weights"]), {c: dict(v) for c, v in data["thresholds"].items()})
    _check_scorecard(default, {}, "", source)
    scorecards = {}
    for segment in SEGMENTS:
        override = data.get("segments", {}).get(segment)
        if override is None:
            scorecards[segment] = default
            continue
        card = Scorecard(
            f"segment:{segment}",
            {**default.weights, **override.get("weights", {})},
            {c: {**t, **override.get("thresholds", {}).get(c, {})} for c, t in default.thresholds.items()},
        )
        _check_scorecard(card, override, f"segments.{segment}.", source)
        scorecards[segment] = card
    return HealthConfig(
        scorecards=scorecards,
        red_below=float(tiers["red_below"]),
        green_from=float(tiers["green_from"]),
        green_min_measured_pct=float(tiers["green_min_measured_pct"]),
        min_available_components=data["min_available_components"],
        lifecycle=lifecycle_config(data["lifecycle"]),
        feature_catalog_size=data["feature_catalog_size"],
        windows=dict(data["windows"]),
        config_hash=config_hash(data),
    )


def _check_scorecard(card: Scorecard, override: Mapping[str, Any], prefix: str, source: str) -> None:
    """Checks JSON Schema cannot express; the key named is the one the user wrote (override first)."""
    if sum(card.weights.values()) <= 0:
        raise ConfigError(f"{source}: {prefix}weights: at least one weight must be positive")
    if card.thresholds["value"]["breadth_weight"] + card.thresholds["value"]["release_weight"] <= 0:
        raise ConfigError(
            f"{source}: {prefix}thresholds.value.breadth_weight: breadth or release weight must be positive"
        )
    overridden = override.get("thresholds", {})
    for component, pairs in ORDERED_PAIRS.items():
        values = card.thresholds[component]
        for lower, upper in pairs:
            if values[upper] > values[lower]:
                continue
            key = (
                lower
                if lower in overridden.get(component, {}) and upper not in overridden.get(component, {})
                else upper
            )
            raise ConfigError(
                f"{source}: {prefix}thresholds.{component}.{key}: {upper} ({values[upper]}) must be "
                f"greater than {lower} ({values[lower]})"
            )


def _scorecard_frame(config: HealthConfig) -> pl.DataFrame:
    """One row per segment: scorecard name, weights `w_<c>` and thresholds `<c>__<key>`."""
    rows = []
    for segment in SEGMENTS:
        card = config.scorecards[segment]
        row: dict[str, Any] = {"segment": segment, "scorecard": card.name}
        row |= {f"w_{c}": float(card.weights[c]) for c in COMPONENTS}
        row |= {f"{c}__{k}": float(card.thresholds[c][k]) for c, keys in THRESHOLD_KEYS.items() for k in keys}
        rows.append(row)
    return pl.DataFrame(rows)


def _t(component: str, key: str) -> pl.Expr:
    return pl.col(f"{component}__{key}")


def in_last_days(column: str, as_of: dt.date, days: int) -> pl.Expr:
    """`column` falls in the last `days` days: (as_of - days, as_of]."""
    return (pl.col(column) > as_of - dt.timedelta(days=days)) & (pl.col(column) <= as_of)


def _ramp(x: pl.Expr, floor: pl.Expr, target: pl.Expr) -> pl.Expr:
    """0 at `floor`, 100 at `target`, linear between, clamped."""
    return _unsigned_zero(((x - floor) / (target - floor)).clip(0, 1) * 100)


def _penalty(x: pl.Expr, start: pl.Expr, full: pl.Expr, max_penalty: pl.Expr) -> pl.Expr:
    """0 points at `start`, `max_penalty` points at `full`, linear between, clamped."""
    return _unsigned_zero(((x - start) / (full - start)).clip(0, 1) * max_penalty)


def _unsigned_zero(value: pl.Expr) -> pl.Expr:
    """0.0 for a zero of either sign: Polars' clip may keep a -0.0 depending on how the column is
    chunked (how many accounts are scored together), and -0.0 prints as such in health.json."""
    return pl.when(value == 0).then(0.0).otherwise(value)


def round2(expr: pl.Expr) -> pl.Expr:
    """Round half away from zero to 2 decimals (half up for the non-negative measures here)."""
    return expr.round(2, mode="half_away_from_zero")


def _entitlements(view: Customer360) -> pl.DataFrame:
    """Active subscriptions and their seats per account (ARR is per currency: `_money_measures`)."""
    return (
        view.subs.filter(pl.col("status") == "active")
        .group_by("account_id")
        .agg(active_subscriptions=pl.len(), seats=pl.col("seats").sum())
    )


def _usage_measures(view: Customer360, days: int) -> pl.DataFrame:
    """Usage windows up to as_of and sums over the recent ones (window_end in the last `days`)."""
    recent = in_last_days("window_end", view.as_of, days)
    return (
        view.usage.filter(pl.col("window_end") <= view.as_of)
        .group_by("account_id")
        .agg(
            usage_windows=pl.len(),
            recent_windows=recent.sum(),
            recent_active_users=pl.col("active_users").filter(recent).sum(),
            recent_features=pl.col("features_used").filter(recent).sum(),
            recent_release_features=pl.col("release_features_used").filter(recent).sum(),
        )
    )


def _support_measures(view: Customer360, days: int) -> pl.DataFrame:
    """Cases by severity opened in the window, SLA breaches among them, open severity-1 cases."""
    as_of = view.as_of
    in_window = in_last_days("opened_on", as_of, days)
    is_open = pl.col("closed_on").is_null() | (pl.col("closed_on") > as_of)
    return (
        view.cases.filter(pl.col("opened_on") <= as_of)
        .group_by("account_id")
        .agg(
            cases_total=pl.len(),
            cases_in_window=in_window.sum(),
            *[(in_window & (pl.col("severity") == s)).sum().alias(f"severity{s}_cases") for s in (1, 2, 3, 4)],
            sla_breaches=(in_window & pl.col("sla_breached")).sum(),
            open_sev1_cases=(is_open & (pl.col("severity") == 1)).sum(),
        )
    )


def _overdue(as_of: dt.date) -> pl.Expr:
    """An invoice unpaid at `as_of` and past its due date."""
    return (pl.col("paid_on").is_null() | (pl.col("paid_on") > as_of)) & (pl.col("due_on") < as_of)


def _billing_measures(view: Customer360) -> pl.DataFrame:
    """Invoices issued up to as_of, those fallen due, and the unpaid past-due ones (count, days)."""
    as_of = view.as_of
    overdue = _overdue(as_of)
    return (
        view.invoices.filter(pl.col("issued_on") <= as_of)
        .group_by("account_id")
        .agg(
            invoices=pl.len(),
            invoices_due=(pl.col("due_on") <= as_of).sum(),
            overdue_invoices=overdue.sum(),
            max_days_overdue=(pl.lit(as_of) - pl.col("due_on")).dt.total_days().filter(overdue).max(),
        )
    )


def _pct_of_arr(amount: str) -> pl.Expr:
    """`amount` as % of ARR (both in one currency); any amount against zero ARR counts as 100%."""
    return (
        pl.when(pl.col("arr") > 0)
        .then(100 * pl.col(amount) / pl.col("arr"))
        .otherwise(pl.when(pl.col(amount) > 0).then(100.0).otherwise(0.0))
    )


MONEY_FIELDS = ("arr", "overdue_amount", "overdue_pct_of_arr", "credits", "credits_pct_of_arr", "discount_pct")


def _money_measures(view: Customer360, credits_days: int) -> pl.DataFrame:
    """Per account: the money measures per currency, and the worst currency's ratios.

    An amount is only ever compared with ARR in its own currency (no conversion): per account
    and currency, ARR and ARR-weighted discount of the active subscriptions, the unpaid
    past-due amount and the credits granted in the window. The commercial penalties use the
    worst currency's overdue %, credits % and discount %, so a small contract in one currency
    that is badly behind is not diluted by a large one in another.
    """
    as_of = view.as_of
    arr = pl.col("arr").sum()
    contracts = (
        view.subs.filter(pl.col("status") == "active")
        .group_by("account_id", "currency")
        .agg(
            arr=arr,
            discount_pct=pl.when(arr > 0)
            .then((pl.col("arr") * pl.col("discount_pct").fill_null(0)).sum() / arr)
            .otherwise(0.0),
        )
    )
    billing = (
        view.invoices.filter(pl.col("issued_on") <= as_of)
        .group_by("account_id", "currency")
        .agg(
            overdue_amount=pl.col("amount").filter(_overdue(as_of)).sum(),
            credits=pl.col("credit_amount").fill_null(0).filter(in_last_days("issued_on", as_of, credits_days)).sum(),
        )
    )
    money = pl.col("arr") + pl.col("overdue_amount") + pl.col("credits")
    per_currency = (
        contracts.join(billing, on=["account_id", "currency"], how="full", coalesce=True)
        .with_columns(
            pl.col(c).fill_null(0.0).cast(pl.Float64) for c in ("arr", "discount_pct", "overdue_amount", "credits")
        )
        .filter(money > 0)
        .with_columns(
            overdue_pct_of_arr=_pct_of_arr("overdue_amount"),
            credits_pct_of_arr=_pct_of_arr("credits"),
        )
    )
    return per_currency.group_by("account_id").agg(
        has_arr=(pl.col("arr") > 0).any(),
        overdue_pct_of_arr=pl.col("overdue_pct_of_arr").max(),
        credits_pct_of_arr=pl.col("credits_pct_of_arr").max(),
        discount_pct=pl.col("discount_pct").max(),
        by_currency=pl.struct("currency", *[round2(pl.col(c)).alias(c) for c in MONEY_FIELDS]).sort_by("currency"),
    )


def _nps_measures(view: Customer360, trend_days: int) -> pl.DataFrame:
    """Latest NPS response (by date, then id) and the mean of the earlier ones in the trend window."""
    order = ["responded_on", "response_id"]
    responses = view.nps.filter(pl.col("responded_on") <= view.as_of)
    latest = responses.group_by("account_id").agg(
        nps_responses=pl.len(),
        latest_nps=pl.col("score").sort_by(order).last(),
        latest_on=pl.col("responded_on").sort_by(order).last(),
        latest_id=pl.col("response_id").sort_by(order).last(),
    )
    earlier = (
        responses.join(latest.select("account_id", "latest_id"), on="account_id")
        .filter((pl.col("response_id") != pl.col("latest_id")) & in_last_days("responded_on", view.as_of, trend_days))
        .group_by("account_id")
        .agg(earlier_responses=pl.len(), earlier_mean_nps=pl.col("score").mean())
    )
    return latest.drop("latest_id").join(earlier, on="account_id", how="left")


def health_measures(view: Customer360, config: HealthConfig) -> pl.DataFrame:
    """One row per account: segment parameters joined with every measured value (all that scoring
    reads of the view besides `as_of`)."""
    windows = config.windows
    frame = (
        view.accounts.select("account_id", "segment")
        .join(account_states(view, config.lifecycle), on="account_id", how="left")
        .join(_scorecard_frame(config), on="segment", how="left")
        .join(_entitlements(view), on="account_id", how="left")
        .join(_usage_measures(view, windows["usage_days"]), on="account_id", how="left")
        .join(_support_measures(view, windows["support_days"]), on="account_id", how="left")
        .join(_billing_measures(view), on="account_id", how="left")
        .join(_money_measures(view, windows["credits_days"]), on="account_id", how="left")
        .join(_nps_measures(view, windows["nps_trend_days"]), on="account_id", how="left")
    )
    counts = [
        "active_subscriptions", "seats", "usage_windows", "recent_windows", "recent_active_users",
        "recent_features", "recent_release_features", "cases_total", "cases_in_window",
        "severity1_cases", "severity2_cases", "severity3_cases", "severity4_cases", "sla_breaches",
        "open_sev1_cases", "invoices", "invoices_due", "overdue_invoices", "max_days_overdue", "nps_responses",
        "earlier_responses",
    ]  # fmt: skip
    ratios = ["overdue_pct_of_arr", "credits_pct_of_arr", "discount_pct"]
    money_dtype = frame.collect_schema()["by_currency"]
    return frame.with_columns(
        *[pl.col(c).fill_null(0).cast(pl.Int64) for c in counts],
        *[pl.col(c).fill_null(0.0).cast(pl.Float64) for c in ratios],
        pl.col("has_arr").fill_null(False),
        pl.col("by_currency").fill_null(pl.lit([], money_dtype)),
        customer_days=(pl.lit(view.as_of) - pl.col("customer_since")).dt.total_days().fill_null(0),
    )


def _per_recent_window(total: str) -> pl.Expr:
    """Average per recent usage window; no recent windows (but older ones) counts as 0, and no
    usage rows at all is unknown (null): an average over nothing is not a measured 0."""
    return (
        pl.when(pl.col("recent_windows") > 0)
        .then(pl.col(total) / pl.col("recent_windows"))
        .when(pl.col("usage_windows") > 0)
        .then(0.0)
    )


def _component_columns(config: HealthConfig) -> list[pl.Expr]:
    """Intermediate measures, then `<c>_raw` (unrounded score, null = not available) and `<c>_why`."""
    has_usage = pl.col("usage_windows") > 0
    avg_active = _per_recent_window("recent_active_users")
    avg_features = _per_recent_window("recent_features")
    utilisation = pl.when(pl.col("seats") > 0).then(100 * avg_active / pl.col("seats"))
    breadth = 100 * avg_features / config.feature_catalog_size
    # A share of no features is undefined (null); its score is 0 then, as breadth's is.
    release_share = pl.when(pl.col("recent_features") > 0).then(
        100 * pl.col("recent_release_features") / pl.col("recent_features")
    )
    release_score = _ramp(release_share, _t("value", "release_floor_pct"), _t("value", "release_target_pct"))
    weighted_cases = sum(
        (pl.col(f"severity{s}_cases") * _t("support", f"severity{s}_weight") for s in (1, 2, 3, 4)), pl.lit(0)
    )
    # Accounts under 10 seats count as 10, so one case at a tiny account is not a crisis.
    per_10_seats = weighted_cases * 10 / pl.max_horizontal(pl.col("seats"), pl.lit(10))
    trend = pl.when(pl.col("earlier_responses") > 0).then(pl.col("latest_nps") - pl.col("earlier_mean_nps"))
    trend_cap = _t("sentiment", "trend_max_adjustment")
    has_contract = pl.col("active_subscriptions") > 0
    return [
        avg_active.alias("avg_active_users"),
        avg_features.alias("avg_features_used"),
        utilisation.alias("utilisation_pct"),
        breadth.alias("breadth_pct"),
        release_share.alias("release_share_pct"),
        _ramp(breadth, _t("value", "breadth_floor_pct"), _t("value", "breadth_target_pct")).alias("breadth_score"),
        pl.when(has_usage).then(release_score.fill_null(0.0)).alias("release_score"),
        weighted_cases.cast(pl.Float64).alias("weighted_cases"),
        per_10_seats.alias("cases_per_10_seats"),
        _penalty(
            per_10_seats,
            _t("support", "volume_start_per_10_seats"),
            _t("support", "volume_full_per_10_seats"),
            _t("support", "volume_max_penalty"),
        ).alias("volume_penalty"),
        (pl.col("open_sev1_cases") * _t("support", "open_sev1_penalty")).alias("open_sev1_penalty"),
        (pl.col("sla_breaches") * _t("support", "sla_breach_penalty")).alias("sla_penalty"),
        trend.alias("trend"),
        (pl.when(trend.is_not_null()).then(trend * _t("sentiment", "trend_points_per_nps_point")).otherwise(0.0))
        .clip(-trend_cap, trend_cap)
        .alias("trend_adjustment"),
        _ramp(pl.col("latest_nps"), _t("sentiment", "nps_floor"), _t("sentiment", "nps_target")).alias("latest_score"),
        has_usage.alias("_has_usage"),
        has_contract.alias("_has_contract"),
    ]


def _commercial_penalties() -> list[pl.Expr]:
    t = "commercial"
    return [
        _penalty(
            pl.col("max_days_overdue"),
            _t(t, "overdue_days_start"),
            _t(t, "overdue_days_full"),
            _t(t, "overdue_days_max_penalty"),
        ).alias("overdue_days_penalty"),
        _penalty(
            pl.col("overdue_pct_of_arr"),
            _t(t, "overdue_amount_start_pct"),
            _t(t, "overdue_amount_full_pct"),
            _t(t, "overdue_amount_max_penalty"),
        ).alias("overdue_amount_penalty"),
        _penalty(
            pl.col("credits_pct_of_arr"),
            _t(t, "credits_start_pct"),
            _t(t, "credits_full_pct"),
            _t(t, "credits_max_penalty"),
        ).alias("credits_penalty"),
        _penalty(
            pl.col("discount_pct"),
            _t(t, "discount_start_pct"),
            _t(t, "discount_full_pct"),
            _t(t, "discount_max_penalty"),
        ).alias("discount_penalty"),
    ]


def _raw_scores(config: HealthConfig, as_of: dt.date) -> list[pl.Expr]:
    """Each component's unrounded score (null = not available) and the reason when not.

    A component is available only when its data was measured: no cases means a quiet account
    only after a whole support window as a customer, and no overdue invoice means prompt
    payment only once an invoice has fallen due against real ARR. An account that is not a
    customer today (churned, not started) has no component available.
    """
    value_weights = _t("value", "breadth_weight") + _t("value", "release_weight")
    support_days = config.windows["support_days"]
    quiet_window = pl.col("_has_contract") & (pl.col("customer_days") >= support_days)
    live = pl.col("lifecycle").is_in(list(LIVE_STATES))
    available = {
        "adoption": pl.col("_has_usage") & (pl.col("seats") > 0),
        "value": pl.col("_has_usage"),
        "support": quiet_window | (pl.col("cases_total") > 0),
        "commercial": pl.col("has_arr") & (pl.col("invoices_due") > 0),
        "sentiment": pl.col("nps_responses") > 0,
    }
    scores = {
        "adoption": _ramp(
            pl.col("utilisation_pct"), _t("adoption", "utilisation_floor_pct"), _t("adoption", "utilisation_target_pct")
        ),
        "value": (
            _t("value", "breadth_weight") * pl.col("breadth_score")
            + _t("value", "release_weight") * pl.col("release_score")
        )
        / value_weights,
        "support": (100 - pl.col("volume_penalty") - pl.col("open_sev1_penalty") - pl.col("sla_penalty")).clip(0, 100),
        "commercial": (
            100
            - pl.col("overdue_days_penalty")
            - pl.col("overdue_amount_penalty")
            - pl.col("credits_penalty")
            - pl.col("discount_penalty")
        ).clip(0, 100),
        "sentiment": (pl.col("latest_score") + pl.col("trend_adjustment")).clip(0, 100),
    }
    no_usage = f"no usage recorded up to {fmt_date(as_of)}"
    reasons = {
        "adoption": pl.when(~pl.col("_has_usage"))
        .then(pl.lit(no_usage))
        .otherwise(pl.lit("no seats entitled by active subscriptions")),
        "value": pl.lit(no_usage),
        "support": pl.lit(f"no support cases, and not yet a customer for the {support_days}-day support window"),
        "commercial": pl.when(~pl.col("has_arr"))
        .then(pl.lit("no ARR from active subscriptions"))
        .otherwise(pl.lit("no invoice has fallen due yet, so payment is not measured")),
        "sentiment": pl.lit("no NPS response yet"),
    }
    not_live = pl.col("lifecycle").replace_strict(NOT_LIVE_REASONS, default=None, return_dtype=pl.Utf8)
    return [
        expr
        for c in COMPONENTS
        for expr in (
            pl.when(live & available[c]).then(scores[c]).alias(f"{c}_raw"),
            pl.when(~live)
            .then(not_live)
            .when(available[c])
            .then(None)
            .otherwise(reasons[c])
            .cast(pl.Utf8)
            .alias(f"{c}_reason"),
        )
    ]


def _evidence(schema: pl.Schema) -> dict[str, pl.Expr]:
    """The measured values behind each component (floats to 2 decimals, dates as ISO text)."""

    def fields(*names: str) -> list[pl.Expr]:
        return [round2(pl.col(n)) if schema[n] == pl.Float64 else pl.col(n) for n in names]

    return {
        "adoption": pl.struct(
            *fields("usage_windows", "recent_windows", "avg_active_users", "seats", "utilisation_pct"),
            pl.col("w_adoption").alias("configured_weight"),
        ),
        "value": pl.struct(
            *fields("recent_windows", "avg_features_used", "breadth_pct", "breadth_score"),
            *fields("release_share_pct", "release_score"),
            pl.col("w_value").alias("configured_weight"),
        ),
        "support": pl.struct(
            *fields("cases_in_window", "weighted_cases", "cases_per_10_seats", "volume_penalty"),
            *fields("open_sev1_cases", "open_sev1_penalty", "sla_breaches", "sla_penalty"),
            pl.col("w_support").alias("configured_weight"),
        ),
        "commercial": pl.struct(
            pl.col("by_currency"),
            *fields("overdue_invoices", "max_days_overdue", "overdue_days_penalty"),
            # The ratios the penalties use: the worst currency's (see `_money_measures`).
            *[
                round2(pl.col(n)).alias(f"worst_{n}")
                for n in ("overdue_pct_of_arr", "credits_pct_of_arr", "discount_pct")
            ],
            *fields("overdue_amount_penalty", "credits_penalty", "discount_penalty"),
            pl.col("w_commercial").alias("configured_weight"),
        ),
        "sentiment": pl.struct(
            *fields("nps_responses", "latest_nps", "latest_score"),
            pl.col("latest_on").dt.to_string("%Y-%m-%d").alias("latest_on"),
            *fields("earlier_responses", "earlier_mean_nps", "trend", "trend_adjustment"),
            pl.col("w_sentiment").alias("configured_weight"),
        ),
    }


def score_health(view: Customer360, config: HealthConfig) -> pl.DataFrame:
    """The health frame of docs/architecture.md: one row per account, sorted by account_id."""
    return score_measures(health_measures(view, config), config, view.as_of)


def score_measures(measures: pl.DataFrame, config: HealthConfig, as_of: dt.date) -> pl.DataFrame:
    """The health frame from `health_measures`' frame. A caller that holds the view only to score it
    lets it go before this: at 1M accounts its tables are about 1.7 GB, which scoring then reuses."""
    frame = measures.lazy()
    frame = frame.with_columns(_component_columns(config)).with_columns(_commercial_penalties())
    frame = frame.with_columns(_raw_scores(config, as_of))
    available = [pl.col(f"{c}_raw").is_not_null() for c in COMPONENTS]
    available_count = pl.sum_horizontal(a.cast(pl.Int64) for a in available)
    minimum = config.min_available_components
    frame = frame.with_columns(
        status=pl.when(~pl.col("lifecycle").is_in(list(LIVE_STATES)))
        .then(pl.col("lifecycle"))
        .when(available_count < minimum)
        .then(pl.lit(INSUFFICIENT_DATA))
        .otherwise(pl.lit(SCORED)),
        status_reason=pl.when(~pl.col("lifecycle").is_in(list(LIVE_STATES)))
        .then(pl.col("lifecycle").replace_strict(NOT_LIVE_REASONS, default=None, return_dtype=pl.Utf8))
        .when(available_count < minimum)
        .then(
            pl.format(
                f"not enough data yet: {{}} of {len(COMPONENTS)} components have data, the scorecard needs {minimum}",
                available_count,
            )
        ),
    )
    scored = pl.col("status") == SCORED
    available_weight = pl.sum_horizontal(
        pl.when(a).then(pl.col(f"w_{c}")).otherwise(0.0) for a, c in zip(available, COMPONENTS, strict=True)
    )
    frame = frame.with_columns(
        # Effective weights of the available components sum to 100; unavailable ones get 0.
        # An account without a score has no weights at all (null).
        pl.when(~scored)
        .then(None)
        .when(a & (available_weight > 0))
        .then(pl.col(f"w_{c}") * 100 / available_weight)
        .otherwise(0.0)
        .alias(f"{c}_weight")
        for a, c in zip(available, COMPONENTS, strict=True)
    )
    frame = frame.with_columns(
        (pl.col(f"{c}_raw").fill_null(0) * pl.col(f"{c}_weight") / 100).alias(f"_{c}_points") for c in COMPONENTS
    )
    # Round half up; the 9-decimal pre-round keeps float noise (67.4999999) from flipping it.
    raw_score = pl.sum_horizontal(pl.col(f"_{c}_points") for c in COMPONENTS).round(9)
    score = pl.when(scored).then(raw_score.round(0, mode="half_away_from_zero").clip(0, 100).cast(pl.Int64))
    tier_by_score = (
        pl.when(score < config.red_below)
        .then(pl.lit("red"))
        .when(score >= config.green_from)
        .then(pl.lit("green"))
        .when(score.is_not_null())
        .then(pl.lit("amber"))
    )
    # Green is earned on evidence: an account whose measured components carry too little of its
    # scorecard's configured weight stops at amber, whatever they score (docs/customer-360.md).
    measured_pct = (100 * available_weight / pl.sum_horizontal(pl.col(f"w_{c}") for c in COMPONENTS)).round(9)
    held_at_amber = (tier_by_score == "green") & (measured_pct < config.green_min_measured_pct)
    frame = frame.with_columns(
        score.alias("score"),
        pl.when(held_at_amber).then(pl.lit("amber")).otherwise(tier_by_score).alias("tier"),
        pl.when(held_at_amber).then(_held_at_amber_reason(available, measured_pct, config)).alias("tier_reason"),
        pl.lit(config.config_hash).alias("config_hash"),
        *[round2(pl.col(f"{c}_raw")).alias(f"{c}_score") for c in COMPONENTS],
        *[round2(pl.col(f"_{c}_points")).alias(f"{c}_points") for c in COMPONENTS],
        *[round2(pl.col(f"{c}_weight")).alias(f"{c}_weight") for c in COMPONENTS],
        # Only a score shares a missing component's weight out; without one there is nothing to share.
        *[
            pl.when(scored & pl.col(f"{c}_reason").is_not_null())
            .then(pl.col(f"{c}_reason") + _SHARED_OUT)
            .otherwise(pl.col(f"{c}_reason"))
            .alias(f"{c}_reason")
            for c in COMPONENTS
        ],
        *[expr.alias(f"{c}_evidence") for c, expr in _evidence(frame.collect_schema()).items()],
    )
    columns = [*ACCOUNT_COLUMNS, *(f"{c}_{part}" for c in COMPONENTS for part in COMPONENT_PARTS)]
    return frame.select(columns).sort("account_id").collect()


def _held_at_amber_reason(available: list[pl.Expr], measured_pct: pl.Expr, config: HealthConfig) -> pl.Expr:
    """`amber, not green: adoption and value (45% of the scorecard's weight) are not measured; ...`."""
    # Plain strings, not lists: lists of names cost half a second per 100k accounts.
    unmeasured = [~a & (pl.col(f"w_{c}") > 0) for a, c in zip(available, COMPONENTS, strict=True)]
    names = pl.concat_str(
        [pl.when(gap).then(pl.lit(c)) for gap, c in zip(unmeasured, COMPONENTS, strict=True)],
        separator=", ",
        ignore_nulls=True,
    ).str.replace(r", ([a-z]+)$", " and $1")
    verb = pl.when(pl.sum_horizontal(unmeasured) == 1).then(pl.lit("is")).otherwise(pl.lit("are"))
    share = (100 - measured_pct).round(1).cast(pl.Utf8).str.replace(r"\.0$", "")
    return pl.format(
        f"amber, not green: {{}} ({{}}% of the scorecard's weight) {{}} not measured; "
        f"green needs at least {_number(config.green_min_measured_pct)}% measured",
        names,
        share,
        verb,
    )


def health_records(frame: pl.DataFrame) -> Iterator[tuple[str, dict[str, Any]]]:
    """(account_id, record) per row, in frame order, shaped for health.json.

    The frame's floats are already rounded to 2 decimals, so the records are JSON-ready as is.
    """
    for row in frame.iter_rows(named=True):
        yield (
            row["account_id"],
            {
                "score": row["score"],
                "total": 100,
                "tier": row["tier"],
                "tier_reason": row["tier_reason"],
                "status": row["status"],
                "status_reason": row["status_reason"],
                "lifecycle": row["lifecycle"],
                "scorecard": row["scorecard"],
                "components": {
                    c: {
                        "score": row[f"{c}_score"],
                        "weight": row[f"{c}_weight"],
                        "points": row[f"{c}_points"],
                        "available": row[f"{c}_score"] is not None,
                        "reason": row[f"{c}_reason"],
                        "evidence": row[f"{c}_evidence"],
                    }
                    for c in COMPONENTS
                },
                **(override_record(row) if "computed_score" in row else {}),
            },
        )


def health_json_entries(frame: pl.DataFrame, chunk_rows: int = 2_048) -> Iterator[bytes]:
    """health.json's `"account_id": record` lines in chunks, encoded column-wise: the bytes of
    `health_records` as compact canonical JSON (`io.write_json_stream`).

    A record is about 1 KB: a chunk is about 2 MB, and a few of them are queued for writing.
    """
    record = pl.struct(
        pl.col("score"),
        pl.lit(100, pl.Int64).alias("total"),
        pl.col("tier"),
        pl.col("tier_reason"),
        pl.col("status"),
        pl.col("status_reason"),
        pl.col("lifecycle"),
        pl.col("scorecard"),
        pl.struct(
            pl.struct(
                pl.col(f"{c}_score").alias("score"),
                pl.col(f"{c}_weight").alias("weight"),
                pl.col(f"{c}_points").alias("points"),
                pl.col(f"{c}_score").is_not_null().alias("available"),
                pl.col(f"{c}_reason").alias("reason"),
                pl.col(f"{c}_evidence").alias("evidence"),
            ).alias(c)
            for c in COMPONENTS
        ).alias("components"),
        *(override_fields() if "computed_score" in frame.columns else []),
    )
    return json_text.entries(frame, "account_id", record, chunk_rows=chunk_rows, fallback=health_records)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return "n/a" if value is None else str(value)


def shown_tier_reason(record: Mapping[str, Any]) -> str | None:
    """The record's `tier_reason` where it explains the tier shown: it explains the computed amber,
    so a person's override to another tier makes it moot."""
    return record.get("tier_reason") if record.get("tier") == "amber" else None


def explain_health(record: Mapping[str, Any]) -> str:
    """A health record's breakdown in plain words."""
    components = record["components"]
    lifecycle = record["lifecycle"].replace("_", " ")
    scorecard = record["scorecard"]  # `default` or `segment:<segment>`
    if scorecard.startswith("segment:"):
        scorecard = f"{segment_label(scorecard.removeprefix('segment:'))} segment's"
    if record["score"] is None:
        lines = [f"No health score: {record['status_reason']} (lifecycle {lifecycle}, {scorecard} scorecard)."]
    else:
        lines = [
            f"Health score {record['score']}/{record['total']}: {record['tier']} "
            f"({record['status'].replace('_', ' ')}, lifecycle {lifecycle}, {scorecard} scorecard).",
        ]
    if record.get("override"):
        lines.append(
            f"{override_phrase(record)} (computed: {record['computed_score']}/{record['total']} "
            f"{record['computed_tier']}; the components below add up to the computed score)."
        )
    if record["tier_reason"]:
        lines.append(f"{'Computed tier' if record.get('override') else 'Tier'} {record['tier_reason']}.")
    if record["status"] == SCORED:
        lines.append(
            "The score is the sum of the component points (component score x effective weight / 100), "
            "rounded half up; effective weights of the available components add up to 100."
        )
    for c in COMPONENTS:
        part = components[c]
        evidence = evidence_text(part["evidence"])
        if part["available"] and part["weight"] is not None:
            lines.append(
                f"- {c.capitalize()}: {_number(part['score'])}/100 x weight {_number(part['weight'])} "
                f"= {_number(part['points'])} points ({evidence})."
            )
        elif part["available"]:
            lines.append(f"- {c.capitalize()}: {_number(part['score'])}/100, not weighted ({evidence}).")
        else:
            lines.append(f"- {c.capitalize()}: not available, {part['reason']}.")
    return "\n".join(lines)


def health_summary(frame: pl.DataFrame) -> dict[str, Any]:
    """Tier, status and lifecycle counts and the distribution of the scores there are, for asset metadata.

    Accounts without a score (churned, not started, insufficient data) are counted under their
    status, never in a tier or the score distribution. `held_at_amber` counts the amber accounts
    whose score is green's but whose measured components carry too little weight (`tier_reason`).
    """
    scores = frame["score"].drop_nulls()
    tiers = frame["tier"].value_counts()
    statuses = frame["status"].value_counts()
    distribution = (
        {"min": None, "median": None, "max": None, "mean": None}
        if scores.is_empty()
        else {
            # Polars types a series' min, median, max and mean as maybe None; not so on a non-empty one.
            "min": int(scores.min()),  # type: ignore[arg-type]
            "median": round(float(scores.median()), 2),  # type: ignore[arg-type]
            "max": int(scores.max()),  # type: ignore[arg-type]
            "mean": round(float(scores.mean()), 2),  # type: ignore[arg-type]
        }
    )
    return {
        "accounts": frame.height,
        "tiers": {t: int(tiers.filter(pl.col("tier") == t)["count"].sum()) for t in TIERS},
        "held_at_amber": frame.filter((pl.col("tier") == "amber") & pl.col("tier_reason").is_not_null()).height,
        "status": {s: int(statuses.filter(pl.col("status") == s)["count"].sum()) for s in STATUSES},
        "lifecycle": lifecycle_counts(frame["lifecycle"]),
        "score": distribution,
    }
