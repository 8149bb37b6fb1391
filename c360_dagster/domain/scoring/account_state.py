"""Where an account stands in its life as a customer, and what became of each ended subscription.

Two rules, used by every stage that needs them (health, signals, gates, backtest):
- `succession`: an ended subscription was renewed when a subscription of the same account and
  product starts within `renewal_grace_days` of its renewal_date (CRMs often record a renewal
  as a new contract), downsold when that successor brings less ARR, churned when there is none.
- `account_states`: not_started / onboarding / active / churned, from the subscriptions alone.
Documented in docs/customer-360.md ("Account lifecycle") and docs/renewals.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from c360_dagster.domain.core.errors import GateError
from c360_dagster.domain.ingest.view import Customer360

NOT_STARTED, ONBOARDING, ACTIVE, CHURNED = "not_started", "onboarding", "active", "churned"
LIFECYCLE_STATES = (NOT_STARTED, ONBOARDING, ACTIVE, CHURNED)
LIVE_STATES = (ONBOARDING, ACTIVE)  # a customer today: scored, signalled, planned, presented
RENEWED, DOWNSOLD = "renewed", "downsold"  # with CHURNED: the outcomes of an ended subscription
ENDED_STATUSES = ("cancelled", "churned")

LIFECYCLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "onboarding_days": {"type": "integer", "minimum": 0},
        "renewal_grace_days": {"type": "integer", "minimum": 0},
    },
    "required": ["onboarding_days", "renewal_grace_days"],
}
SUCCESSION_COLUMNS = {
    "subscription_id": pl.Utf8,
    "account_id": pl.Utf8,
    "product": pl.Utf8,
    "renewal_date": pl.Date,
    "arr": pl.Float64,
    "currency": pl.Utf8,
    "outcome": pl.Utf8,
    "successor_id": pl.Utf8,
    "successor_arr": pl.Float64,
}


@dataclass(frozen=True)
class LifecycleConfig:
    """The `lifecycle` section of health.yaml."""

    onboarding_days: int  # an account is onboarding this many days after its first subscription starts
    renewal_grace_days: int  # a successor starting this close to a renewal_date continues the subscription


def lifecycle_config(data: Mapping[str, Any]) -> LifecycleConfig:
    """From the already validated `lifecycle` section (LIFECYCLE_SCHEMA)."""
    return LifecycleConfig(data["onboarding_days"], data["renewal_grace_days"])


def successors(subs: pl.DataFrame, grace_days: int) -> pl.DataFrame:
    """Every subscription that has a successor: subscription_id, successor_id, successor_arr.

    The successor is the subscription of the same account and product whose start_date is
    closest to this one's renewal_date, at most `grace_days` away (ties: earlier start, then
    id). When several subscriptions share one successor (a consolidation), its ARR is split
    between them in proportion to theirs, so no revenue is counted twice.
    """
    candidates = subs.select(
        "account_id",
        "product",
        successor_id="subscription_id",
        successor_start="start_date",
        successor_total_arr="arr",
    )
    gap = (pl.col("successor_start") - pl.col("renewal_date")).dt.total_days()
    matched = (
        subs.select("subscription_id", "account_id", "product", "start_date", "renewal_date", "arr")
        .join(candidates, on=["account_id", "product"])
        .filter(
            (pl.col("successor_id") != pl.col("subscription_id"))
            & (pl.col("successor_start") > pl.col("start_date"))
            & (gap.abs() <= grace_days)
        )
        .sort(gap.abs(), "successor_start", "successor_id")
        .unique("subscription_id", keep="first", maintain_order=True)
    )
    predecessors_arr = pl.col("arr").sum().over("successor_id")
    predecessors = pl.len().over("successor_id")
    return matched.select(
        "subscription_id",
        "successor_id",
        successor_arr=pl.when(predecessors_arr > 0)
        .then(pl.col("successor_total_arr") * pl.col("arr") / predecessors_arr)
        .otherwise(pl.col("successor_total_arr") / predecessors),
    )


def succession(subs: pl.DataFrame, grace_days: int) -> pl.DataFrame:
    """One row per ended (cancelled or churned) subscription: its outcome and successor.

    Renewed when it has a successor (`successors`), downsold when the successor's ARR (its
    share) is lower, churned when there is none. `successor_arr` is null on churn; amounts are
    compared in the row's currency. Sorted by renewal_date, subscription_id.
    """
    # Cents decide a downsell, so float noise in a split share never turns a renewal into one.
    lower = pl.col("successor_arr").round(2) < pl.col("arr").round(2)
    return (
        subs.filter(pl.col("status").is_in(ENDED_STATUSES))
        .join(successors(subs, grace_days), on="subscription_id", how="left")
        .with_columns(
            outcome=pl.when(pl.col("successor_id").is_null())
            .then(pl.lit(CHURNED))
            .when(lower)
            .then(pl.lit(DOWNSOLD))
            .otherwise(pl.lit(RENEWED))
        )
        .select(list(SUCCESSION_COLUMNS))
        .cast(SUCCESSION_COLUMNS)  # type: ignore[arg-type]  # Polars types cast()'s dict keys as an invariant union
        .sort("renewal_date", "subscription_id")
    )


def account_states(view: Customer360, config: LifecycleConfig) -> pl.DataFrame:
    """One row per account of the view, sorted by account_id: `lifecycle` and `customer_since`.

    - not_started: no subscription has started by as_of;
    - churned: subscriptions have started, but none is active (an active one starting within
      the grace period after as_of is the renewal of an ended one, so it counts);
    - onboarding: active, and the first subscription started less than `onboarding_days` ago;
    - active: otherwise.
    `customer_since` is the first subscription's start_date (null when not started).
    """
    as_of = view.as_of
    grace_end = as_of + dt.timedelta(days=config.renewal_grace_days)
    started = pl.col("start_date") <= as_of
    live = (pl.col("status") == "active") & (pl.col("start_date") <= grace_end)
    per_account = view.subs.group_by("account_id").agg(
        customer_since=pl.col("start_date").filter(started).min(),
        live_subscriptions=live.sum(),
    )
    onboarding_from = as_of - dt.timedelta(days=config.onboarding_days)
    state = (
        pl.when(pl.col("customer_since").is_null())
        .then(pl.lit(NOT_STARTED))
        .when(pl.col("live_subscriptions").fill_null(0) == 0)
        .then(pl.lit(CHURNED))
        .when(pl.col("customer_since") > onboarding_from)
        .then(pl.lit(ONBOARDING))
        .otherwise(pl.lit(ACTIVE))
    )
    return (
        view.accounts.select("account_id")
        .join(per_account, on="account_id", how="left")
        .select("account_id", state.alias("lifecycle"), "customer_since")
        .sort("account_id")
    )


GATE_CODES = {CHURNED: "ACCOUNT_CHURNED", NOT_STARTED: "ACCOUNT_NOT_STARTED"}
_GATE_WHY = {
    CHURNED: "has churned (no active subscription)",
    NOT_STARTED: "has not started (no subscription has started yet)",
}


def refuse_not_live(lifecycles: Mapping[str, str], what: str) -> None:
    """Refuse `what` (a playbook, a QBR pack) when any account (id -> lifecycle) is not a customer today.

    One GateError names every refused account; its code is the first one's (ACCOUNT_CHURNED or
    ACCOUNT_NOT_STARTED), so a batch is stopped before anything is written.
    """
    refused = [(account_id, state) for account_id, state in lifecycles.items() if state in GATE_CODES]
    if refused:
        raise GateError(
            "; ".join(f"account {account_id} {_GATE_WHY[state]}: it gets no {what}" for account_id, state in refused),
            code=GATE_CODES[refused[0][1]],
        )


def lifecycle_counts(states: pl.Series) -> dict[str, int]:
    """Accounts per lifecycle state, every state listed (zeros included)."""
    counts = states.value_counts()
    return {s: int(counts.filter(pl.col(states.name) == s)["count"].sum()) for s in LIFECYCLE_STATES}
