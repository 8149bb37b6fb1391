"""Success playbooks: a YAML library of SOPs, rules that pick them, and a dated plan per account.

The selection rules become Polars conditions in one place (`_rule_conditions`), evaluated both
for a single account (`select_playbooks`) and for every account at once
(`suggested_playbook_ids`), so the renewal forecast and the per-account plan cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.config import config_hash, load_yaml_config
from c360_dagster.domain.errors import ConfigError
from c360_dagster.domain.overrides import override_phrase
from c360_dagster.domain.text import fmt_amount, render_template

TIERS = ("red", "amber", "green")
TEMPLATE = "playbook.md.j2"
STEP_KEYS = ("title", "owner", "due_days", "accountable", "consulted", "informed")

_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_ROLE_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["roles", "selection", "playbooks"],
    "properties": {
        "roles": {**_ROLE_LIST, "minItems": 1},
        "selection": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rules", "fallback"],
            "properties": {
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["playbook"],
                        "properties": {
                            "playbook": {"type": "string"},
                            "tiers": {
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": True,
                                "items": {"enum": list(TIERS)},
                            },
                            "codes_any": {
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": True,
                                "items": {"type": "string", "pattern": "^SIG_[A-Z0-9_]+$"},
                            },
                        },
                    },
                },
                "fallback": {"type": "string"},
            },
        },
        "playbooks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "title", "summary", "steps", "kpis", "checkpoints", "risks"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "title": {"type": "string", "minLength": 1},
                    "summary": {"type": "string", "minLength": 1},
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": [*STEP_KEYS],
                            "properties": {
                                "title": {"type": "string", "minLength": 1},
                                "owner": {"type": "string", "minLength": 1},
                                "due_days": {"type": "integer", "minimum": 0},
                                "accountable": {"type": "string", "minLength": 1},
                                "consulted": _ROLE_LIST,
                                "informed": _ROLE_LIST,
                            },
                        },
                    },
                    "kpis": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name", "metric", "target", "unit", "direction"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "metric": {"type": "string", "pattern": r"^[a-z0-9_]+(\.[a-z0-9_]+)*$"},
                                "target": {"type": "number"},
                                "unit": {"type": "string"},
                                "direction": {"enum": ["at_least", "at_most"]},
                            },
                        },
                    },
                    "checkpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["offset_days", "what"],
                            "properties": {
                                "offset_days": {"type": "integer", "minimum": 0},
                                "what": {"type": "string", "minLength": 1},
                            },
                        },
                    },
                    "risks": _STRINGS,
                },
            },
        },
    },
}


@dataclass(frozen=True)
class StepSpec:
    """One step of an SOP; its owner is the one Responsible for it."""

    title: str
    owner: str
    due_days: int
    accountable: str
    consulted: tuple[str, ...]
    informed: tuple[str, ...]


@dataclass(frozen=True)
class KpiSpec:
    name: str
    metric: str
    target: float
    unit: str
    direction: str


@dataclass(frozen=True)
class CheckpointSpec:
    offset_days: int
    what: str


@dataclass(frozen=True)
class Playbook:
    """One SOP of the library."""

    id: str
    title: str
    summary: str
    steps: tuple[StepSpec, ...]
    kpis: tuple[KpiSpec, ...]
    checkpoints: tuple[CheckpointSpec, ...]
    risks: tuple[str, ...]


@dataclass(frozen=True)
class SelectionRule:
    """Adds `playbook` when the tier is one of `tiers` and any of `codes_any` fired (None = any)."""

    playbook: str
    tiers: tuple[str, ...] | None
    codes_any: tuple[str, ...] | None


@dataclass(frozen=True)
class PlaybookLibrary:
    playbooks: Mapping[str, Playbook]
    rules: tuple[SelectionRule, ...]
    fallback: str
    config_hash: str


@dataclass(frozen=True)
class PlanStep:
    playbook: str
    title: str
    owner_role: str
    due_date: dt.date


@dataclass(frozen=True)
class RaciEntry:
    playbook: str
    step: str
    responsible: str
    accountable: str
    consulted: tuple[str, ...]
    informed: tuple[str, ...]


@dataclass(frozen=True)
class KpiStatus:
    name: str
    metric: str
    current: float | None
    target: float
    unit: str
    direction: str
    status: str  # met / not met / no data


@dataclass(frozen=True)
class Checkpoint:
    date: dt.date
    what: str


@dataclass(frozen=True)
class PlaybookResult:
    """An account's success plan: the project's "BaseBot-like" result type."""

    account_id: str
    account_name: str
    as_of: dt.date
    tier: str | None
    score: int | None
    plays: tuple[str, ...]
    play_titles: tuple[str, ...]
    summary: str
    raci: tuple[RaciEntry, ...]
    steps: tuple[PlanStep, ...]
    kpis: tuple[KpiStatus, ...]
    checkpoints: tuple[Checkpoint, ...]
    risks: tuple[str, ...]
    library_hash: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: dates as ISO strings, tuples as lists."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def load_playbook_library(path: Path | str) -> PlaybookLibrary:
    """Read and validate the playbook library; errors name the file and the key."""
    raw = load_yaml_config(path, SCHEMA)
    roles = set(raw["roles"])

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{path}: {key}: {message}")

    playbooks: dict[str, Playbook] = {}
    for index, item in enumerate(raw["playbooks"]):
        key = f"playbooks.{index}"
        if item["id"] in playbooks:
            fail(f"{key}.id", f"duplicate playbook id {item['id']!r}")
        for step_index, step in enumerate(item["steps"]):
            named = [("owner", step["owner"]), ("accountable", step["accountable"])]
            named += [(f"consulted.{i}", r) for i, r in enumerate(step["consulted"])]
            named += [(f"informed.{i}", r) for i, r in enumerate(step["informed"])]
            for field, role in named:
                if role not in roles:
                    fail(f"{key}.steps.{step_index}.{field}", f"unknown role {role!r} (not in roles)")
        playbooks[item["id"]] = Playbook(
            id=item["id"],
            title=item["title"],
            summary=item["summary"],
            steps=tuple(
                StepSpec(
                    s["title"], s["owner"], s["due_days"], s["accountable"],
                    tuple(s["consulted"]), tuple(s["informed"]),
                )
                for s in item["steps"]
            ),
            kpis=tuple(
                KpiSpec(k["name"], k["metric"], float(k["target"]), k["unit"], k["direction"])
                for k in item["kpis"]
            ),
            checkpoints=tuple(CheckpointSpec(c["offset_days"], c["what"]) for c in item["checkpoints"]),
            risks=tuple(item["risks"]),
        )
    rules = []
    for index, rule in enumerate(raw["selection"]["rules"]):
        if rule["playbook"] not in playbooks:
            fail(f"selection.rules.{index}.playbook", f"unknown playbook {rule['playbook']!r}")
        tiers, codes = rule.get("tiers"), rule.get("codes_any")
        rules.append(
            SelectionRule(rule["playbook"], tuple(tiers) if tiers else None, tuple(codes) if codes else None)
        )
    fallback = raw["selection"]["fallback"]
    if fallback not in playbooks:
        fail("selection.fallback", f"unknown playbook {fallback!r}")
    return PlaybookLibrary(playbooks, tuple(rules), fallback, config_hash(raw))


def _rule_conditions(library: PlaybookLibrary) -> list[tuple[str, pl.Expr]]:
    """Each rule as (playbook, condition) over `tier` and one boolean `has:<code>` column per code."""
    conditions = []
    for rule in library.rules:
        condition = pl.lit(True)
        if rule.tiers is not None:
            condition &= pl.col("tier").is_in(list(rule.tiers))
        if rule.codes_any is not None:
            condition &= pl.any_horizontal(pl.col(f"has:{code}") for code in rule.codes_any)
        conditions.append((rule.playbook, condition.fill_null(False)))
    return conditions


def _rule_codes(library: PlaybookLibrary) -> list[str]:
    return sorted({code for rule in library.rules for code in rule.codes_any or ()})


def _with_code_flags(accounts: pl.DataFrame, signals: pl.DataFrame, library: PlaybookLibrary) -> pl.DataFrame:
    """`accounts` (account_id, tier) plus `has:<code>` for every code the rules look at."""
    return accounts.with_columns(
        pl.col("account_id")
        .is_in(signals.filter(pl.col("code") == code)["account_id"].implode())
        .alias(f"has:{code}")
        for code in _rule_codes(library)
    )


def select_playbooks(tier: str | None, signal_codes: Sequence[str], library: PlaybookLibrary) -> list[str]:
    """The playbook ids for one account, highest priority first (never empty)."""
    account = pl.DataFrame({"account_id": ["-"], "tier": [tier]}, schema={"account_id": pl.Utf8, "tier": pl.Utf8})
    signals = pl.DataFrame({"account_id": "-", "code": sorted(set(signal_codes))}, schema={"account_id": pl.Utf8, "code": pl.Utf8})
    conditions = _rule_conditions(library)
    matched = _with_code_flags(account, signals, library).select(
        condition.alias(str(index)) for index, (_, condition) in enumerate(conditions)
    ).row(0)
    plays = list(dict.fromkeys(playbook for (playbook, _), hit in zip(conditions, matched, strict=True) if hit))
    return plays or [library.fallback]


def suggested_playbook_ids(
    health: pl.DataFrame, signals: pl.DataFrame, library: PlaybookLibrary
) -> pl.DataFrame:
    """`account_id`, `suggested_playbook` (the top play) for every row of `health`, columnar."""
    top = pl.coalesce(
        *(pl.when(condition).then(pl.lit(playbook)) for playbook, condition in _rule_conditions(library)),
        pl.lit(library.fallback),
    )
    return (
        _with_code_flags(health.select("account_id", "tier"), signals, library)
        .select("account_id", top.alias("suggested_playbook"))
        .sort("account_id")
    )


def _metric(record: Mapping[str, Any], path: str) -> float | None:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return round(float(value), 2)


def _kpi_status(spec: KpiSpec, current: float | None) -> str:
    if current is None:
        return "no data"
    met = current >= spec.target if spec.direction == "at_least" else current <= spec.target
    return "met" if met else "not met"


def _as_date(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _summary(
    name: str, tier: str | None, score: int | None, codes: list[str],
    renewals: Sequence[Mapping[str, Any]], plays: list[Playbook], notes: Sequence[str] = (),
) -> str:
    health = f"{tier or 'unscored'}" + (f" with a health score of {score}/100" if score is not None else "")
    fired = f"{_plural(len(codes), 'active signal')} ({', '.join(codes)})" if codes else "no active signals"
    parts = [f"{name} is {health} and has {fired}.", *notes]
    if renewals:
        by_currency: dict[str, float] = {}
        for row in renewals:
            by_currency[row["currency"]] = by_currency.get(row["currency"], 0.0) + float(row["arr"])
        amounts = ", ".join(f"{fmt_amount(arr)} {cur}" for cur, arr in sorted(by_currency.items()))
        first = min(_as_date(row["renewal_date"]) for row in renewals)
        buckets = ", ".join(sorted({row["bucket"] for row in renewals}))
        parts.append(
            f"{_plural(len(renewals), 'subscription')} {'renews' if len(renewals) == 1 else 'renew'} "
            f"in the forecast window, the first on "
            f"{first.isoformat()} (ARR {amounts}; forecast {buckets})."
        )
    titles = [play.title for play in plays]
    order = titles[0] + (f" first, then {', '.join(titles[1:])}" if len(titles) > 1 else "")
    parts.append(f"Plan: {order}. {plays[0].summary}")
    return " ".join(parts)


def _notes(health_record: Mapping[str, Any], signals: Sequence[Mapping[str, Any]]) -> list[str]:
    """Summary sentences for an overridden tier and for snoozed signals."""
    notes = [f"{override_phrase(health_record)}."] if health_record.get("override") else []
    snoozed = sorted(
        f"{signal['code']} until {signal['snoozed_until']} ({signal['snooze_reason']})"
        for signal in signals
        if signal.get("snoozed_until")
    )
    if snoozed:
        notes.append(f"Snoozed, so not driving the plan: {'; '.join(snoozed)}.")
    return notes


def build_playbook(
    account: Mapping[str, Any],
    health_record: Mapping[str, Any],
    signals: Sequence[Mapping[str, Any]],
    renewals: Sequence[Mapping[str, Any]],
    library: PlaybookLibrary,
    as_of: dt.date,
) -> PlaybookResult:
    """The dated success plan of one account from its health row, signals and renewal rows."""
    tier, score = health_record.get("tier"), health_record.get("score")
    # A snoozed signal stays visible but does not pick plays (docs/trust.md).
    codes = sorted({signal["code"] for signal in signals if not signal.get("snoozed_until")})
    plays = [library.playbooks[pid] for pid in select_playbooks(tier, codes, library)]
    renewal_rows = sorted(renewals, key=lambda r: (_as_date(r["renewal_date"]), r["subscription_id"]))

    # Steps by due date; ties keep priority order (sorted is stable), then the SOP's order.
    dated = sorted(
        ((as_of + dt.timedelta(days=step.due_days), play, step) for play in plays for step in play.steps),
        key=lambda item: item[0],
    )
    steps = tuple(PlanStep(play.id, step.title, step.owner, due) for due, play, step in dated)
    raci = tuple(
        RaciEntry(play.id, step.title, step.owner, step.accountable, step.consulted, step.informed)
        for _, play, step in dated
    )
    kpis: dict[str, KpiStatus] = {}
    for play in plays:
        for spec in play.kpis:
            if spec.metric not in kpis:  # the highest-priority play sets a shared metric's target
                current = _metric(health_record, spec.metric)
                kpis[spec.metric] = KpiStatus(
                    spec.name, spec.metric, current, spec.target, spec.unit, spec.direction,
                    _kpi_status(spec, current),
                )
    checkpoints = {
        (as_of + dt.timedelta(days=c.offset_days), f"{play.title}: {c.what}")
        for play in plays
        for c in play.checkpoints
    }
    checkpoints |= {
        (_as_date(r["renewal_date"]), f"Renewal of {r['product']} ({r['subscription_id']}), forecast {r['bucket']}")
        for r in renewal_rows
    }
    risks = tuple(dict.fromkeys(risk for play in plays for risk in play.risks))
    name = account.get("name") or account["account_id"]
    return PlaybookResult(
        account_id=account["account_id"],
        account_name=name,
        as_of=as_of,
        tier=tier,
        score=score,
        plays=tuple(play.id for play in plays),
        play_titles=tuple(play.title for play in plays),
        summary=_summary(name, tier, score, codes, renewal_rows, plays, _notes(health_record, signals)),
        raci=raci,
        steps=steps,
        kpis=tuple(kpis.values()),
        checkpoints=tuple(Checkpoint(date, what) for date, what in sorted(checkpoints)),
        risks=risks,
        library_hash=library.config_hash,
    )


def render_playbook_markdown(result: PlaybookResult) -> str:
    """The plan as Markdown: tables of phrases and numbers, the summary in prose."""
    return render_template(TEMPLATE, plan=result)

