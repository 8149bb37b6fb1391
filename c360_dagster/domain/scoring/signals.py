"""Rule-based churn and expansion signals, one columnar rule per code.

A rule fires only when its measure is strictly beyond the configured threshold; the evidence
is the measured numbers and dates that tripped it, as canonical JSON. Meanings and thresholds
are documented in docs/customer-360.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core import json_text
from c360_dagster.domain.core.config import config_hash, load_yaml_config, validate_config
from c360_dagster.domain.core.io import entry_text, joined_items
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.account_state import LIVE_STATES, LifecycleConfig, account_states, successors
from c360_dagster.domain.scoring.health import in_last_days, round2

KINDS = ("risk", "expansion")
ROLES = ("champion", "exec_sponsor", "economic_buyer", "admin", "user")


@dataclass(frozen=True)
class SignalSpec:
    """What a signal code means and whether it is a churn risk or an expansion opportunity.

    `live_only`: the signal assumes a customer today (lifecycle onboarding or active), so it
    never fires for a churned or not-started account; an overdue invoice is owed either way.
    """

    kind: str
    meaning: str
    live_only: bool = True


SIGNAL_CATALOG: dict[str, SignalSpec] = {
    "SIG_EXPANSION_TRAIL": SignalSpec(
        "expansion", "An open expansion opportunity on an account that uses nearly all its seats or is growing fast."
    ),
    "SIG_FEATURE_ADOPTION_LOW": SignalSpec(
        "risk", "The account uses only a small share of the product's features, so it sees little of its value."
    ),
    "SIG_PAYMENT_OVERDUE": SignalSpec("risk", "An invoice is unpaid well past its due date.", live_only=False),
    "SIG_RENEWAL_SOON": SignalSpec("risk", "An active subscription renews soon, so any risk is now urgent."),
    "SIG_STAKEHOLDER_CHANGE": SignalSpec(
        "risk", "A champion, executive sponsor or economic buyer recently left or started."
    ),
    "SIG_SUPPORT_SPIKE": SignalSpec(
        "risk", "Support cases jumped well above the account's usual rate, or a critical case is open."
    ),
    "SIG_USAGE_SLIDE_4W": SignalSpec(
        "risk", "Weekly active users over the last 4 weeks fell sharply against the 4 weeks before."
    ),
}


def _section(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": sorted(properties)}


_DAYS = {"type": "integer", "minimum": 1}
_PCT = {"type": "number", "minimum": 0, "maximum": 100}

SIGNALS_SCHEMA: dict[str, Any] = _section(
    {
        "usage_window_days": _DAYS,
        "usage_slide_4w": _section({"drop_pct_over": {"type": "number", "minimum": 0, "exclusiveMaximum": 100}}),
        "support_spike": _section(
            {
                "recent_days": _DAYS,
                "prior_days": _DAYS,
                "cases_over": {"type": "integer", "minimum": 0},
                "ratio_over": {"type": "number", "minimum": 0},
            }
        ),
        "payment_overdue": _section({"days_overdue_over": {"type": "integer", "minimum": 0}}),
        "feature_adoption_low": _section(
            {"feature_catalog_size": {"type": "integer", "minimum": 1}, "breadth_pct_under": _PCT}
        ),
        "stakeholder_change": _section(
            {
                "days": _DAYS,
                "roles": {"type": "array", "items": {"enum": list(ROLES)}, "minItems": 1, "uniqueItems": True},
            }
        ),
        "renewal_soon": _section({"days": {"type": "integer", "minimum": 0}}),
        "expansion_trail": _section(
            {
                "utilisation_pct_over": {"type": "number", "minimum": 0},
                "growth_pct_over": {"type": "number", "minimum": 0},
            }
        ),
    }
)


@dataclass(frozen=True)
class SharedMeasures:
    """What several rules read, computed once per detection."""

    usage: pl.DataFrame  # `_usage_periods`
    renewal_booked: pl.Series  # ids of subscriptions whose successor is already recorded


@dataclass(frozen=True)
class SignalsConfig:
    """A validated signals.yaml: every window (days) and threshold of every rule."""

    usage_window_days: int
    slide_drop_pct_over: float
    spike_recent_days: int
    spike_prior_days: int
    spike_cases_over: int
    spike_ratio_over: float
    overdue_days_over: int
    feature_catalog_size: int
    feature_breadth_pct_under: float
    stakeholder_days: int
    stakeholder_roles: tuple[str, ...]
    renewal_days: int
    expansion_utilisation_pct_over: float
    expansion_growth_pct_over: float
    config_hash: str


def load_signals_config(path: Path | str) -> SignalsConfig:
    """Read and validate signals.yaml; any mistake is a ConfigError naming the key."""
    return _build_config(load_yaml_config(path, SIGNALS_SCHEMA))


def signals_config_from_dict(data: dict[str, Any], source: str = "signals config") -> SignalsConfig:
    """Validate an already parsed config (the same checks as `load_signals_config`)."""
    return _build_config(validate_config(data, SIGNALS_SCHEMA, source))


def _build_config(data: dict[str, Any]) -> SignalsConfig:
    spike, features = data["support_spike"], data["feature_adoption_low"]
    return SignalsConfig(
        usage_window_days=data["usage_window_days"],
        slide_drop_pct_over=float(data["usage_slide_4w"]["drop_pct_over"]),
        spike_recent_days=spike["recent_days"],
        spike_prior_days=spike["prior_days"],
        spike_cases_over=spike["cases_over"],
        spike_ratio_over=float(spike["ratio_over"]),
        overdue_days_over=data["payment_overdue"]["days_overdue_over"],
        feature_catalog_size=features["feature_catalog_size"],
        feature_breadth_pct_under=float(features["breadth_pct_under"]),
        stakeholder_days=data["stakeholder_change"]["days"],
        stakeholder_roles=tuple(data["stakeholder_change"]["roles"]),
        renewal_days=data["renewal_soon"]["days"],
        expansion_utilisation_pct_over=float(data["expansion_trail"]["utilisation_pct_over"]),
        expansion_growth_pct_over=float(data["expansion_trail"]["growth_pct_over"]),
        config_hash=config_hash(data),
    )


def _iso(value: dt.date | pl.Expr) -> pl.Expr:
    if isinstance(value, dt.date):
        return pl.lit(value.isoformat())
    return value.dt.to_string("%Y-%m-%d")


def _usage_periods(view: Customer360, days: int) -> pl.DataFrame:
    """Per account: average active users and features in the recent period and the one before."""
    as_of = view.as_of
    recent = in_last_days("window_end", as_of, days)
    prior = in_last_days("window_end", as_of - dt.timedelta(days=days), days)
    return (
        view.usage.filter(pl.col("window_end") <= as_of)
        .group_by("account_id")
        .agg(
            recent_windows=recent.sum(),
            # No recent windows while older ones exist means nobody used the product: 0, not unknown.
            recent_avg_active_users=pl.col("active_users").filter(recent).mean().fill_null(0.0),
            prior_avg_active_users=pl.col("active_users").filter(prior).mean(),
            avg_features_used=pl.col("features_used").filter(recent).mean().fill_null(0.0),
        )
    )


def _period_dates(as_of: dt.date, days: int) -> list[pl.Expr]:
    """First and last day of the recent period and of the one before, as ISO text."""
    first_recent = as_of - dt.timedelta(days=days - 1)
    return [
        _iso(first_recent).alias("recent_from"),
        _iso(as_of).alias("recent_to"),
        _iso(first_recent - dt.timedelta(days=days)).alias("prior_from"),
        _iso(first_recent - dt.timedelta(days=1)).alias("prior_to"),
    ]


def _usage_slide(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    prior, recent = pl.col("prior_avg_active_users"), pl.col("recent_avg_active_users")
    drop = 100 * (prior - recent) / prior
    return shared.usage.filter((prior > 0) & (drop > config.slide_drop_pct_over)).select(
        "account_id",
        pl.struct(
            round2(prior).alias("prior_avg_active_users"),
            round2(recent).alias("recent_avg_active_users"),
            round2(drop).alias("drop_pct"),
            *_period_dates(view.as_of, config.usage_window_days),
        ).alias("evidence"),
    )


def _support_spike(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    as_of, recent_days, prior_days = view.as_of, config.spike_recent_days, config.spike_prior_days
    recent = in_last_days("opened_on", as_of, recent_days)
    prior = in_last_days("opened_on", as_of - dt.timedelta(days=recent_days), prior_days)
    open_sev1 = (pl.col("severity") == 1) & (pl.col("closed_on").is_null() | (pl.col("closed_on") > as_of))
    counts = (
        view.cases.filter(pl.col("opened_on") <= as_of)
        .group_by("account_id")
        .agg(
            recent_cases=recent.sum().cast(pl.Int64),
            prior_cases=prior.sum().cast(pl.Int64),
            open_sev1_cases=open_sev1.sum().cast(pl.Int64),
            oldest_open_sev1_opened_on=pl.col("opened_on").filter(open_sev1).min(),
        )
        # The prior period's case rate scaled to the length of the recent period.
        .with_columns(prior_rate=pl.col("prior_cases") * recent_days / prior_days)
    )
    spike = (pl.col("recent_cases") > config.spike_cases_over) & (
        pl.col("recent_cases") > config.spike_ratio_over * pl.col("prior_rate")
    )
    return counts.filter(spike | (pl.col("open_sev1_cases") > 0)).select(
        "account_id",
        pl.struct(
            "recent_cases",
            "prior_cases",
            round2(pl.col("prior_rate")).alias("prior_rate_per_recent_period"),
            round2(pl.when(pl.col("prior_rate") > 0).then(pl.col("recent_cases") / pl.col("prior_rate"))).alias(
                "ratio"
            ),
            "open_sev1_cases",
            _iso(pl.col("oldest_open_sev1_opened_on")).alias("oldest_open_sev1_opened_on"),
            _iso(as_of - dt.timedelta(days=recent_days - 1)).alias("recent_from"),
        ).alias("evidence"),
    )


def _payment_overdue(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    as_of = view.as_of
    unpaid = pl.col("paid_on").is_null() | (pl.col("paid_on") > as_of)
    worst_first = [pl.col("days_overdue"), pl.col("invoice_id")]
    overdue = (
        view.invoices.filter((pl.col("issued_on") <= as_of) & unpaid & (pl.col("due_on") < as_of))
        .with_columns(days_overdue=(pl.lit(as_of) - pl.col("due_on")).dt.total_days())
        .group_by("account_id")
        .agg(
            overdue_invoices=pl.len().cast(pl.Int64),
            # Amounts add up within one currency only: the most overdue invoice's.
            overdue_amount=pl.col("amount")
            .filter(pl.col("currency") == pl.col("currency").sort_by(worst_first, descending=[True, False]).first())
            .sum(),
            *[
                pl.col(c).sort_by(worst_first, descending=[True, False]).first()
                for c in ("invoice_id", "due_on", "days_overdue", "amount", "currency")
            ],
        )
    )
    return overdue.filter(pl.col("days_overdue") > config.overdue_days_over).select(
        "account_id",
        pl.struct(
            "invoice_id",
            _iso(pl.col("due_on")).alias("due_on"),
            "days_overdue",
            round2(pl.col("amount")).alias("amount"),
            "currency",
            "overdue_invoices",
            round2(pl.col("overdue_amount")).alias("overdue_amount"),
        ).alias("evidence"),
    )


def _feature_adoption_low(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    breadth = 100 * pl.col("avg_features_used") / config.feature_catalog_size
    return shared.usage.filter(breadth < config.feature_breadth_pct_under).select(
        "account_id",
        pl.struct(
            round2(pl.col("avg_features_used")).alias("avg_features_used"),
            pl.lit(config.feature_catalog_size).alias("feature_catalog_size"),
            round2(breadth).alias("breadth_pct"),
            pl.col("recent_windows").cast(pl.Int64),
            _iso(view.as_of - dt.timedelta(days=config.usage_window_days - 1)).alias("recent_from"),
        ).alias("evidence"),
    )


def _stakeholder_change(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    as_of, days = view.as_of, config.stakeholder_days
    contacts = view.contacts.filter(pl.col("role").is_in(list(config.stakeholder_roles)))
    changes = pl.concat(
        [
            contacts.filter(in_last_days(column, as_of, days)).select(
                "account_id", "contact_id", "role", pl.lit(change).alias("change"), pl.col(column).alias("on")
            )
            for change, column in (("started", "started_on"), ("left", "ended_on"))
        ]
    )
    return (
        changes.sort("account_id", "on", "contact_id", "change")
        .group_by("account_id", maintain_order=True)
        .agg(changes=pl.struct("change", "contact_id", _iso(pl.col("on")).alias("on"), "role"))
        .select(
            "account_id",
            pl.struct(
                "changes",
                _iso(as_of - dt.timedelta(days=days - 1)).alias("since"),
            ).alias("evidence"),
        )
    )


def _renewal_soon(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    soonest_first = [pl.col("days_to_renewal"), pl.col("subscription_id")]
    return (
        # A renewal already booked (a successor recorded, docs/renewals.md) is no longer ahead.
        view.subs.filter(
            (pl.col("status") == "active") & ~pl.col("subscription_id").is_in(shared.renewal_booked.implode())
        )
        .with_columns(days_to_renewal=(pl.col("renewal_date") - pl.lit(view.as_of)).dt.total_days())
        .filter(pl.col("days_to_renewal").is_between(0, config.renewal_days))
        .group_by("account_id")
        .agg(
            renewing_subscriptions=pl.len().cast(pl.Int64),
            *[
                pl.col(c).sort_by(soonest_first).first()
                for c in ("subscription_id", "renewal_date", "days_to_renewal", "arr", "currency", "auto_renew")
            ],
        )
        .select(
            "account_id",
            pl.struct(
                "subscription_id",
                _iso(pl.col("renewal_date")).alias("renewal_date"),
                "days_to_renewal",
                round2(pl.col("arr")).alias("arr"),
                "currency",
                "auto_renew",
                "renewing_subscriptions",
            ).alias("evidence"),
        )
    )


def _expansion_trail(view: Customer360, config: SignalsConfig, shared: SharedMeasures) -> pl.DataFrame:
    seats = view.subs.filter(pl.col("status") == "active").group_by("account_id").agg(seats=pl.col("seats").sum())
    earliest_first = [pl.col("close_date"), pl.col("opp_id")]
    opps = (
        view.crm_opps.filter((pl.col("type") == "expansion") & (pl.col("stage") == "open"))
        .group_by("account_id")
        .agg(
            open_expansion_opps=pl.len().cast(pl.Int64),
            *[pl.col(c).sort_by(earliest_first).first() for c in ("opp_id", "amount", "currency", "close_date")],
        )
    )
    recent, prior = pl.col("recent_avg_active_users"), pl.col("prior_avg_active_users")
    utilisation = pl.when(pl.col("seats") > 0).then(100 * recent / pl.col("seats"))
    growth = pl.when(prior > 0).then(100 * (recent - prior) / prior)
    heavy_or_growing = (utilisation > config.expansion_utilisation_pct_over).fill_null(False) | (
        growth > config.expansion_growth_pct_over
    ).fill_null(False)
    return (
        shared.usage.join(opps, on="account_id")
        .join(seats, on="account_id", how="left")
        .filter(heavy_or_growing)
        .select(
            "account_id",
            pl.struct(
                round2(utilisation).alias("utilisation_pct"),
                round2(growth).alias("growth_pct"),
                pl.col("seats").fill_null(0),
                round2(recent).alias("recent_avg_active_users"),
                round2(prior).alias("prior_avg_active_users"),
                "open_expansion_opps",
                "opp_id",
                round2(pl.col("amount")).alias("opp_amount"),
                pl.col("currency").alias("opp_currency"),
                _iso(pl.col("close_date")).alias("opp_close_date"),
            ).alias("evidence"),
        )
    )


RULES: dict[str, Callable[[Customer360, SignalsConfig, SharedMeasures], pl.DataFrame]] = {
    "SIG_EXPANSION_TRAIL": _expansion_trail,
    "SIG_FEATURE_ADOPTION_LOW": _feature_adoption_low,
    "SIG_PAYMENT_OVERDUE": _payment_overdue,
    "SIG_RENEWAL_SOON": _renewal_soon,
    "SIG_STAKEHOLDER_CHANGE": _stakeholder_change,
    "SIG_SUPPORT_SPIKE": _support_spike,
    "SIG_USAGE_SLIDE_4W": _usage_slide,
}
assert set(RULES) == set(SIGNAL_CATALOG), "every catalogued signal needs a rule"

# The view's tables the rules read (the account lifecycle's included): a run opens only these.
VIEW_TABLES = ("accounts", "subs", "usage", "cases", "invoices", "contacts", "crm_opps")
SIGNALS_COLUMNS = {"account_id": pl.Utf8, "code": pl.Utf8, "kind": pl.Utf8, "evidence": pl.Utf8}
# Added by domain/scoring/lifecycle.py after detection (docs/trust.md); shown per signal in signals.json.
LIFECYCLE_COLUMNS = ("signal_id", "status", "since", "snoozed_until", "snooze_reason")


def _encoded(code: str, fired: pl.DataFrame) -> pl.DataFrame:
    """The rule's rows with the evidence struct written as canonical JSON."""
    return fired.select(
        "account_id",
        code=pl.lit(code),
        kind=pl.lit(SIGNAL_CATALOG[code].kind),
        evidence=json_text.canonical_texts(fired["evidence"]),
    ).cast(SIGNALS_COLUMNS)  # type: ignore[arg-type]  # Polars types cast()'s dict keys as an invariant union


def detect_signals(view: Customer360, config: SignalsConfig, lifecycle: LifecycleConfig) -> pl.DataFrame:
    """The signals frame of docs/architecture.md: one row per fired signal, sorted by account_id, code.

    `lifecycle` (health.yaml) decides which accounts are customers today and which renewals
    are already booked, by the same rules the health score uses.
    """
    shared = SharedMeasures(
        usage=_usage_periods(view, config.usage_window_days),
        renewal_booked=successors(view.subs, lifecycle.renewal_grace_days)["subscription_id"],
    )
    states = account_states(view, lifecycle)
    live = states.filter(pl.col("lifecycle").is_in(list(LIVE_STATES)))["account_id"].implode()
    frames = []
    for code, rule in RULES.items():
        fired = rule(view, config, shared)
        if SIGNAL_CATALOG[code].live_only:
            fired = fired.filter(pl.col("account_id").is_in(live))
        frames.append(_encoded(code, fired))
    return pl.concat(frames).sort("account_id", "code")


def signal_records(frame: pl.DataFrame) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(account_id, [{"code", "kind", "evidence"}] sorted by code) per account with signals, in order."""
    account_id, signals = "", list[dict[str, Any]]()
    for row in frame.sort("account_id", "code").iter_rows(named=True):
        if row["account_id"] != account_id and signals:
            yield account_id, signals
            signals = []
        account_id = row["account_id"]
        signals.append(
            {"code": row["code"], "kind": row["kind"], "evidence": json.loads(row["evidence"])}
            | {key: _plain(row[key]) for key in LIFECYCLE_COLUMNS if key in row}
        )
    if signals:
        yield account_id, signals


def signal_json_entries(frame: pl.DataFrame, chunk_rows: int = 20_000) -> Iterator[bytes]:
    """signals.json's `"account_id": [signals]` lines in chunks, encoded column-wise: the bytes
    of `signal_records` as compact canonical JSON (`io.write_json_stream`).

    The evidence is canonical JSON text already (`_encoded`), so it goes in as it is, between
    the code and the other members (keys in sorted order).
    """
    ordered = frame.sort("account_id", "code", maintain_order=True)
    after_evidence = [name for name in ("kind", *LIFECYCLE_COLUMNS) if name in ordered.columns]
    plain = ordered.select(
        "account_id",
        "code",
        pl.col("evidence").fill_null("null"),
        pl.struct(
            pl.col(n).dt.to_string("%Y-%m-%d") if ordered.schema[n] == pl.Date else pl.col(n) for n in after_evidence
        ).alias("members"),
    )
    unsafe = [
        check
        for name in ("account_id", "code", "members")
        for check in json_text.unsafe_leaves(pl.col(name), plain.schema[name])
    ]
    # isoformat() pads years to four digits; strftime does not.
    years = [
        ~pl.col(n).dt.year().is_between(1000, 9999).fill_null(True)
        for n in after_evidence
        if ordered.schema[n] == pl.Date
    ]
    if (
        plain.select(pl.any_horizontal(pl.lit(False), *unsafe).any()).item()
        or ordered.select(pl.any_horizontal(pl.lit(False), *years).any()).item()
    ):
        for account_id, records in signal_records(frame):
            yield joined_items([entry_text(account_id, records)])
        return
    members = json_text.canonical_text(pl.col("members"), plain.schema["members"])
    signal = pl.concat_str(
        pl.lit('{"code":'),
        json_text.json_string(pl.col("code")),
        pl.lit(',"evidence":'),
        pl.col("evidence"),
        pl.lit(","),
        members.str.slice(1),  # `{"kind":...}` without its brace
    )
    accounts = (
        plain.select("account_id", signal.alias("signal"))
        .group_by("account_id", maintain_order=True)
        .agg(pl.col("signal").str.join(","))
    )
    line = pl.concat_str(json_text.json_string(pl.col("account_id")), pl.lit(": ["), "signal", pl.lit("]"))
    yield from json_text.joined_chunks(accounts, line, chunk_rows)


# signal_json_entries puts the evidence after the code and before every other member.
assert "code" < "evidence" < min("kind", *LIFECYCLE_COLUMNS)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def signals_by_account(frame: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Account → its signals, for signals.json (accounts without signals are absent)."""
    return dict(signal_records(frame))


def signals_summary(frame: pl.DataFrame) -> dict[str, Any]:
    """Counts per code (every catalogued code, zeros included) and per kind, for asset metadata."""
    by_code = frame.group_by("code").len()
    counts = {code: int(by_code.filter(pl.col("code") == code)["len"].sum()) for code in sorted(SIGNAL_CATALOG)}
    return {
        "signals": frame.height,
        "accounts_with_signals": frame["account_id"].n_unique(),
        "by_code": counts,
        "by_kind": {kind: sum(n for code, n in counts.items() if SIGNAL_CATALOG[code].kind == kind) for kind in KINDS},
    }
