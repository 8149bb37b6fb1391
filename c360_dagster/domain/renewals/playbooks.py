"""Success playbooks: a YAML library of SOPs, rules that pick them, and a dated plan per account.

The selection rules become Polars conditions in one place (`_rule_conditions`), evaluated both
for a batch of accounts' plans (`selected_playbooks`; `select_playbooks` for one) and for every
account at once (`suggested_playbook_ids`), so the renewal forecast and the per-account plan
cannot disagree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core.config import config_hash, load_yaml_config
from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.text import format_amount, plural, render_template
from c360_dagster.domain.core.words import CONTACT_ROLES, fmt_date, renewal_odds, role_words, signal_name, tier_words
from c360_dagster.domain.scoring.health import COMPONENTS, shown_tier_reason
from c360_dagster.domain.scoring.overrides import override_phrase

TIERS = ("red", "amber", "green")
TEMPLATE = "playbook.md.j2"
STEP_KEYS = ("title", "owner", "due_days", "accountable", "consulted", "informed")

_DONE_WHEN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["new_contact"],
    "properties": {"new_contact": {"enum": list(CONTACT_ROLES)}},
}
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_ROLE_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["roles", "people", "new_contact_days", "selection", "playbooks"],
    "properties": {
        "roles": {**_ROLE_LIST, "minItems": 1},
        "people": {
            "type": "object",
            "additionalProperties": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["account"],
                        "properties": {"account": {"enum": ["csm_owner"]}},
                    },
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["contact_role"],
                        "properties": {"contact_role": {"enum": list(CONTACT_ROLES)}},
                    },
                ]
            },
        },
        "new_contact_days": {"type": "integer", "minimum": 0},
        "selection": {
            "type": "object",
            "additionalProperties": False,
            "required": ["renewal_due", "rules", "fallback"],
            "properties": {
                "renewal_due": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["window_days", "buckets", "auto_renew_off"],
                    "properties": {
                        "window_days": {"type": "integer", "minimum": 0},
                        "buckets": {"type": "array", "uniqueItems": True, "items": {"enum": ["High", "Medium", "Low"]}},
                        "auto_renew_off": {"type": "boolean"},
                    },
                },
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
                            "renewal_due": {"const": True},
                            "unscored": {"const": True},
                            "unmeasured_any": {
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": True,
                                "items": {"type": "string"},
                            },
                        },
                        "not": {"required": ["tiers", "unscored"]},  # an account without a score has no tier
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
                                "done_when": _DONE_WHEN,
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
                                "done_when": _DONE_WHEN,
                            },
                        },
                    },
                    "risks": _STRINGS,
                    "due_by_renewal": {"type": "boolean"},
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
    done_when: str | None = None  # contact role: done when a new contact of it is in role


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
    done_when: str | None = None


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
    due_by_renewal: bool = False  # its dates never fall after the renewal that made it due


@dataclass(frozen=True)
class SelectionRule:
    """Adds `playbook` when the tier is one of `tiers`, any of `codes_any` fired (None = any),
    with `renewal_due` the account has a renewal due (`RenewalDue`), with `unscored` the
    account has no health score yet (no tier) and, with `unmeasured_any`, the account has a
    score but any of these health components had no data."""

    playbook: str
    tiers: tuple[str, ...] | None
    codes_any: tuple[str, ...] | None
    renewal_due: bool = False
    unscored: bool = False
    unmeasured_any: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RenewalDue:
    """A renewal that needs a play: within `window_days`, in one of `buckets` or (if `auto_renew_off`) not auto-renewing."""

    window_days: int
    buckets: tuple[str, ...]
    auto_renew_off: bool

    def expr(self) -> pl.Expr:
        """True for a forecast row (`days_to_renewal`, `bucket`, `auto_renew`) that is due."""
        flagged = pl.col("bucket").is_in(list(self.buckets))
        if self.auto_renew_off:
            flagged |= ~pl.col("auto_renew").fill_null(True)
        return (pl.col("days_to_renewal") <= self.window_days) & flagged

    def accounts(self, renewals: pl.DataFrame) -> pl.DataFrame:
        """`account_id`, `renewal_due` per account of the forecast rows."""
        return renewals.group_by("account_id").agg(renewal_due=self.expr().any())


@dataclass(frozen=True)
class PlaybookLibrary:
    playbooks: Mapping[str, Playbook]
    rules: tuple[SelectionRule, ...]
    fallback: str
    config_hash: str
    people: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # role → (source, key)
    new_contact_days: int = 0
    renewal_due: RenewalDue = RenewalDue(0, (), False)


@dataclass(frozen=True)
class PlanStep:
    playbook: str
    title: str
    owner_role: str
    due_date: dt.date
    owner: str  # the named person when the data names them ("Dana Reyes (CSM)"), else the role


@dataclass(frozen=True)
class DoneItem:
    """A step or checkpoint of a play that the data already shows as done, and the evidence."""

    playbook: str
    what: str
    evidence: str


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
    tier_reason: str | None  # health's, where it explains an amber tier ("amber, not green: ... not measured")
    score: int | None
    plays: tuple[str, ...]
    play_titles: tuple[str, ...]
    summary: str
    raci: tuple[RaciEntry, ...]
    steps: tuple[PlanStep, ...]
    kpis: tuple[KpiStatus, ...]
    checkpoints: tuple[Checkpoint, ...]
    done: tuple[DoneItem, ...]
    risks: tuple[str, ...]
    library_hash: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: dates as ISO strings, tuples as lists."""
        return _plain(self)

    def play_title(self, play_id: str) -> str:
        """A play of this plan by its title (`collections` → `Collections`)."""
        return self.play_titles[self.plays.index(play_id)]


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
                    s["title"],
                    s["owner"],
                    s["due_days"],
                    s["accountable"],
                    tuple(s["consulted"]),
                    tuple(s["informed"]),
                    s.get("done_when", {}).get("new_contact"),
                )
                for s in item["steps"]
            ),
            kpis=tuple(
                KpiSpec(k["name"], k["metric"], float(k["target"]), k["unit"], k["direction"]) for k in item["kpis"]
            ),
            checkpoints=tuple(
                CheckpointSpec(c["offset_days"], c["what"], c.get("done_when", {}).get("new_contact"))
                for c in item["checkpoints"]
            ),
            risks=tuple(item["risks"]),
            due_by_renewal=item.get("due_by_renewal", False),
        )
    rules = []
    for index, rule in enumerate(raw["selection"]["rules"]):
        if rule["playbook"] not in playbooks:
            fail(f"selection.rules.{index}.playbook", f"unknown playbook {rule['playbook']!r}")
        tiers, codes, unmeasured = rule.get("tiers"), rule.get("codes_any"), rule.get("unmeasured_any")
        for component_index, component in enumerate(unmeasured or ()):
            if component not in COMPONENTS:
                fail(
                    f"selection.rules.{index}.unmeasured_any.{component_index}",
                    f"unknown health component {component!r} (components: {', '.join(COMPONENTS)})",
                )
        if unmeasured and rule.get("unscored"):
            fail(
                f"selection.rules.{index}",
                "unmeasured_any matches only a scored account, so it cannot go with unscored",
            )
        rules.append(
            SelectionRule(
                rule["playbook"],
                tuple(tiers) if tiers else None,
                tuple(codes) if codes else None,
                rule.get("renewal_due", False),
                rule.get("unscored", False),
                tuple(unmeasured) if unmeasured else None,
            )
        )
    fallback = raw["selection"]["fallback"]
    if fallback not in playbooks:
        fail("selection.fallback", f"unknown playbook {fallback!r}")
    for role in sorted(set(raw["people"]) - roles):
        fail(f"people.{role}", f"unknown role {role!r} (not in roles)")
    due = raw["selection"]["renewal_due"]
    return PlaybookLibrary(
        playbooks,
        tuple(rules),
        fallback,
        config_hash(raw),
        people={role: next(iter(source.items())) for role, source in sorted(raw["people"].items())},
        new_contact_days=raw["new_contact_days"],
        renewal_due=RenewalDue(due["window_days"], tuple(due["buckets"]), due["auto_renew_off"]),
    )


def _rule_conditions(library: PlaybookLibrary) -> list[tuple[str, pl.Expr]]:
    """Each rule as (playbook, condition) over `tier`, `renewal_due`, one boolean `has:<code>`
    column per code and one `unmeasured:<component>` per component the rules look at."""
    conditions = []
    for rule in library.rules:
        condition = pl.lit(True)
        if rule.tiers is not None:
            condition &= pl.col("tier").is_in(list(rule.tiers))
        if rule.codes_any is not None:
            condition &= pl.any_horizontal(pl.col(f"has:{code}") for code in rule.codes_any)
        if rule.renewal_due:
            condition &= pl.col("renewal_due")
        if rule.unscored:
            condition &= pl.col("tier").is_null()
        if rule.unmeasured_any is not None:  # a score resting on part of the scorecard
            condition &= pl.col("tier").is_not_null()
            condition &= pl.any_horizontal(pl.col(f"unmeasured:{c}") for c in rule.unmeasured_any)
        conditions.append((rule.playbook, condition.fill_null(False)))
    return conditions


def _rule_codes(library: PlaybookLibrary) -> list[str]:
    return sorted({code for rule in library.rules for code in rule.codes_any or ()})


def measured_columns(library: PlaybookLibrary) -> list[str]:
    """The health frame's `<component>_score` columns the rules look at (null: not measured)."""
    return [f"{c}_score" for c in COMPONENTS if any(c in (rule.unmeasured_any or ()) for rule in library.rules)]


def _with_code_flags(accounts: pl.DataFrame, signals: pl.DataFrame, library: PlaybookLibrary) -> pl.DataFrame:
    """`accounts` (account_id, tier, optional renewal_due) plus `has:<code>` for every code the rules look at."""
    if "renewal_due" not in accounts.columns:
        accounts = accounts.with_columns(renewal_due=pl.lit(False))
    return accounts.with_columns(
        pl.col("account_id").is_in(signals.filter(pl.col("code") == code)["account_id"].implode()).alias(f"has:{code}")
        for code in _rule_codes(library)
    )


def select_playbooks(
    tier: str | None,
    signal_codes: Sequence[str],
    library: PlaybookLibrary,
    renewal_due: bool = False,
    unmeasured: Sequence[str] = (),
) -> list[str]:
    """The playbook ids for one account, highest priority first (never empty); `unmeasured`
    names the health components that had no data."""
    return selected_playbooks([PlaySelection(tier, tuple(signal_codes), renewal_due, tuple(unmeasured))], library)[0]


@dataclass(frozen=True)
class PlaySelection:
    """What the rules look at of one account: its tier, active signal codes, whether a renewal
    is due, and the health components that had no data."""

    tier: str | None
    signal_codes: tuple[str, ...]
    renewal_due: bool = False
    unmeasured: tuple[str, ...] = ()


def selected_playbooks(accounts: Sequence[PlaySelection], library: PlaybookLibrary) -> list[list[str]]:
    """`select_playbooks` of each account, in order, evaluated for all of them in one query
    (Polars' cost is per query, not per row: a batch of accounts' plans pays it once)."""
    ids = [str(index) for index in range(len(accounts))]
    frame = pl.DataFrame(
        {
            "account_id": ids,
            "tier": [one.tier for one in accounts],
            "renewal_due": [one.renewal_due for one in accounts],
        },
        schema={"account_id": pl.Utf8, "tier": pl.Utf8, "renewal_due": pl.Boolean},
    ).with_columns(
        pl.Series(
            _unmeasured_flag(column),
            [column.removesuffix("_score") in one.unmeasured for one in accounts],
            dtype=pl.Boolean,
        )
        for column in measured_columns(library)
    )
    signals = pl.DataFrame(
        {
            "account_id": [key for key, one in zip(ids, accounts, strict=True) for _ in sorted(set(one.signal_codes))],
            "code": [code for one in accounts for code in sorted(set(one.signal_codes))],
        },
        schema={"account_id": pl.Utf8, "code": pl.Utf8},
    )
    conditions = _rule_conditions(library)
    matched = (
        _with_code_flags(frame, signals, library)
        .select(condition.alias(str(index)) for index, (_, condition) in enumerate(conditions))
        .rows()
    )
    return [
        list(dict.fromkeys(playbook for (playbook, _), hit in zip(conditions, hits, strict=True) if hit))
        or [library.fallback]
        for hits in matched
    ]


def _unmeasured_flag(score_column: str) -> str:
    return f"unmeasured:{score_column.removesuffix('_score')}"


def suggested_playbook_ids(health: pl.DataFrame, signals: pl.DataFrame, library: PlaybookLibrary) -> pl.DataFrame:
    """`account_id`, `suggested_playbook` (the top play) for every row of `health` (account_id,
    tier, the `measured_columns` and, when known, renewal_due), columnar."""
    top = pl.coalesce(
        *(pl.when(condition).then(pl.lit(playbook)) for playbook, condition in _rule_conditions(library)),
        pl.lit(library.fallback),
    )
    return (
        _with_code_flags(
            health.select(
                "account_id",
                "tier",
                *(["renewal_due"] if "renewal_due" in health.columns else []),
                *(pl.col(column).is_null().alias(_unmeasured_flag(column)) for column in measured_columns(library)),
            ),
            signals,
            library,
        )
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


def business_day(day: dt.date) -> dt.date:
    """`day`, or the Monday after it when it falls on a weekend: due dates are working days."""
    return day + dt.timedelta(days=max(0, 7 - day.weekday()) if day.weekday() >= 5 else 0)


def business_day_before(day: dt.date) -> dt.date:
    """The last working day before `day`."""
    before = day - dt.timedelta(days=1)
    return before - dt.timedelta(days=max(0, before.weekday() - 4))


def _current_contacts(contacts: Sequence[Mapping[str, Any]], as_of: dt.date) -> dict[str, Mapping[str, Any]]:
    """Per role, the contact in it at as_of; the latest to start wins (ties: by name)."""
    current: dict[str, Mapping[str, Any]] = {}
    in_role = [
        c
        for c in contacts
        if _as_date(c["started_on"]) <= as_of and (c.get("ended_on") is None or _as_date(c["ended_on"]) > as_of)
    ]
    for contact in sorted(in_role, key=lambda c: (_as_date(c["started_on"]), str(c["name"]))):
        current[contact["role"]] = contact
    return current


def _people(
    account: Mapping[str, Any], current: Mapping[str, Mapping[str, Any]], library: PlaybookLibrary
) -> dict[str, str]:
    """Role → "Name (Role)" for the roles the data names (accounts.csv's CSM, contacts by role)."""
    named = {}
    for role, (source, key) in library.people.items():
        name = account.get(key) if source == "account" else (current.get(key) or {}).get("name")
        if name:
            named[role] = f"{name} ({role})"
    return named


def _stand_ins(current: Mapping[str, Mapping[str, Any]], library: PlaybookLibrary) -> dict[str, str | None]:
    """Each customer role the account has no contact in now → the customer role of who is there
    (the first of CONTACT_ROLES' order), or None when the data names no one on their side."""
    roles = {role: key for role, (source, key) in library.people.items() if source == "contact_role"}
    present = sorted(
        (role for role, key in roles.items() if key in current), key=lambda r: CONTACT_ROLES.index(roles[r])
    )
    return {role: present[0] if present else None for role, key in roles.items() if key not in current}


def _for_who_is_there(step: StepSpec, stand_ins: Mapping[str, str | None], library: PlaybookLibrary) -> StepSpec:
    """The step worded for the customer's people on record: a role with no contact is replaced by
    who is there, in the RACI and in the title ("with the champion" → "with the admin"). With no
    customer contact on record at all, no one on their side is invented: the step leaves the
    customer's roles out and says plainly that its owner on our side finds the right person."""

    def phrase(role: str) -> str:
        return f"the {role_words(library.people[role][1])}"

    # No one, or the very role the step is to fill ("Identify and enable a new champion" is not
    # the champion's to do): such a customer role is left out, never stood in for.
    nobody = {
        role
        for role, stand_in in stand_ins.items()
        if stand_in is None or library.people[stand_in][1] == step.done_when
    }

    def some(roles: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stand_ins.get(role) or role for role in roles if role not in nobody))

    title = step.title
    for role, stand_in in stand_ins.items():
        if stand_in is not None and role not in nobody:
            title = title.replace(phrase(role), phrase(stand_in))
    involved = {step.owner, step.accountable, *step.consulted, *step.informed}
    if not any(stand_ins.values()) and (involved & nobody or any(phrase(role) in title for role in nobody)):
        title += f" (no customer contact on record: the {step.owner} finds the right person first)"
    return dataclasses.replace(
        step,
        title=title,
        owner=stand_ins.get(step.owner) or step.owner,
        accountable=stand_ins.get(step.accountable) or step.accountable,
        consulted=some(step.consulted),
        informed=some(step.informed),
    )


def _done_evidence(
    role: str | None, current: Mapping[str, Mapping[str, Any]], library: PlaybookLibrary, as_of: dt.date
) -> str | None:
    """Why a `done_when: {new_contact: role}` item is done (None when it is not)."""
    if role is None:
        return None
    contact = current.get(role)
    if contact is None or _as_date(contact["started_on"]) < as_of - dt.timedelta(days=library.new_contact_days):
        return None
    return f"{contact['name']} is the {role_words(role)} since {fmt_date(contact['started_on'])}"


def _due_renewals(
    renewals: Sequence[Sequence[Mapping[str, Any]]], library: PlaybookLibrary, as_of: dt.date
) -> list[dt.date | None]:
    """Per account (its renewal rows), the earliest renewal due for a play by the library's rule
    (`RenewalDue.expr`, the forecast's own), all accounts in one query."""
    rows = pl.DataFrame(
        [
            {
                "account": index,
                "days_to_renewal": (_as_date(r["renewal_date"]) - as_of).days,
                "bucket": r["bucket"],
                "auto_renew": r.get("auto_renew"),
            }
            for index, account_renewals in enumerate(renewals)
            for r in account_renewals
        ],
        schema={"account": pl.Int64, "days_to_renewal": pl.Int64, "bucket": pl.Utf8, "auto_renew": pl.Boolean},
    )
    earliest = dict(
        rows.filter(library.renewal_due.expr()).group_by("account").agg(pl.col("days_to_renewal").min()).iter_rows()
    )
    return [
        None if index not in earliest else as_of + dt.timedelta(days=earliest[index]) for index in range(len(renewals))
    ]


def _summary(
    name: str,
    health_record: Mapping[str, Any],
    codes: list[str],
    renewals: Sequence[Mapping[str, Any]],
    plays: list[Playbook],
    notes: Sequence[str] = (),
) -> str:
    tier, score = health_record.get("tier"), health_record.get("score")
    if score is None:  # no score is no verdict: say why, never "healthy" by default
        reason = health_record.get("status_reason")
        health = "has no health score" + (f" ({reason})" if reason else "")
    else:
        health = f"is {tier_words(tier, shown_tier_reason(health_record))} with a health score of {score}/100"
    names = ", ".join(signal_name(code) for code in codes)
    fired = f"{plural(len(codes), 'active signal')} ({names})" if codes else "no active signals"
    parts = [f"{name} {health} and has {fired}.", *notes]
    if renewals:
        by_currency: dict[str, float] = {}
        for row in renewals:
            by_currency[row["currency"]] = by_currency.get(row["currency"], 0.0) + float(row["arr"])
        amounts = ", ".join(format_amount(arr, cur) for cur, arr in sorted(by_currency.items()))
        first = min(_as_date(row["renewal_date"]) for row in renewals)
        odds = {row["bucket"]: row.get("probability") for row in renewals}
        forecast = " and ".join(renewal_odds(bucket, odds[bucket]) for bucket in sorted(odds))
        off = [row["subscription_id"] for row in renewals if row.get("auto_renew") is False]
        parts.append(
            f"{plural(len(renewals), 'subscription')} {'renews' if len(renewals) == 1 else 'renew'} "
            f"in the forecast window, the first on "
            f"{fmt_date(first)}, with ARR {amounts} and forecast {forecast}."
            + (f" Auto-renew is off for {', '.join(off)}." if off else "")
        )
    titles = [play.title for play in plays]
    order = titles[0] + (f" first, then {', '.join(titles[1:])}" if len(titles) > 1 else "")
    parts.append(f"Plan: {order}. {plays[0].summary}")
    return " ".join(parts)


def _notes(health_record: Mapping[str, Any], signals: Sequence[Mapping[str, Any]]) -> list[str]:
    """Summary sentences for an overridden tier and for snoozed signals."""
    notes = [f"{override_phrase(health_record)}."] if health_record.get("override") else []
    snoozed = sorted(
        f"{signal_name(signal['code'])} until {fmt_date(signal['snoozed_until'])} ({signal['snooze_reason']})"
        for signal in signals
        if signal.get("snoozed_until")
    )
    if snoozed:
        notes.append(f"Snoozed, so not driving the plan: {'; '.join(snoozed)}.")
    return notes


@dataclass(frozen=True)
class PlanInputs:
    """What one account's plan is made from: its row, health record, signals, renewal rows and contacts."""

    account: Mapping[str, Any]
    health_record: Mapping[str, Any]
    signals: Sequence[Mapping[str, Any]]
    renewals: Sequence[Mapping[str, Any]]
    contacts: Sequence[Mapping[str, Any]] = ()


def build_playbook(
    account: Mapping[str, Any],
    health_record: Mapping[str, Any],
    signals: Sequence[Mapping[str, Any]],
    renewals: Sequence[Mapping[str, Any]],
    library: PlaybookLibrary,
    as_of: dt.date,
    contacts: Sequence[Mapping[str, Any]] = (),
) -> PlaybookResult:
    """The dated success plan of one account from its current state: health row, signals,
    renewal rows and contacts (who is in which role now, who is new)."""
    return build_playbooks([PlanInputs(account, health_record, signals, renewals, contacts)], library, as_of)[0]


def build_playbooks(accounts: Sequence[PlanInputs], library: PlaybookLibrary, as_of: dt.date) -> list[PlaybookResult]:
    """`build_playbook` of each account, in order: the rules pick every account's plays, and
    find its due renewal, in one query for the batch."""
    # A snoozed signal stays visible but does not pick plays (docs/trust.md).
    codes = [sorted({signal["code"] for signal in one.signals if not signal.get("snoozed_until")}) for one in accounts]
    renewal_rows = [
        sorted(one.renewals, key=lambda r: (_as_date(r["renewal_date"]), r["subscription_id"])) for one in accounts
    ]
    due_renewals = _due_renewals(renewal_rows, library, as_of)
    # A component the record says had no data (health.json's `available: false`) is not measured.
    selections = [
        PlaySelection(
            one.health_record.get("tier"),
            tuple(account_codes),
            due is not None,
            tuple(
                c for c, part in (one.health_record.get("components") or {}).items() if part.get("available") is False
            ),
        )
        for one, account_codes, due in zip(accounts, codes, due_renewals, strict=True)
    ]
    play_ids = selected_playbooks(selections, library)
    return [
        _plan(one, account_codes, rows, due, [library.playbooks[pid] for pid in ids], library, as_of)
        for one, account_codes, rows, due, ids in zip(
            accounts, codes, renewal_rows, due_renewals, play_ids, strict=True
        )
    ]


def _plan(
    inputs: PlanInputs,
    codes: list[str],
    renewal_rows: list[Mapping[str, Any]],
    due_renewal: dt.date | None,
    plays: list[Playbook],
    library: PlaybookLibrary,
    as_of: dt.date,
) -> PlaybookResult:
    account, health_record, signals, contacts = inputs.account, inputs.health_record, inputs.signals, inputs.contacts
    tier, score = health_record.get("tier"), health_record.get("score")
    current = _current_contacts(contacts, as_of)
    people = _people(account, current, library)

    def who(role: str) -> str:
        return people.get(role, role)

    def due_on(play: Playbook, offset: int) -> dt.date:
        """as_of + offset on a business day; a `due_by_renewal` play's dates stay before the renewal."""
        day = business_day(as_of + dt.timedelta(days=offset))
        if play.due_by_renewal and due_renewal is not None:
            day = max(min(day, business_day_before(due_renewal)), business_day(as_of))
        return day

    done = [
        DoneItem(play.id, what, evidence)
        for play in plays
        for what, role in [(s.title, s.done_when) for s in play.steps]
        + [(c.what, c.done_when) for c in play.checkpoints]
        if (evidence := _done_evidence(role, current, library, as_of))
    ]
    done_titles = {(item.playbook, item.what) for item in done}
    # Open steps by due date (business days); ties keep priority order (sorted is stable), then the SOP's order.
    dated = sorted(
        (
            (due_on(play, step.due_days), play, step)
            for play in plays
            for step in play.steps
            if (play.id, step.title) not in done_titles
        ),
        key=lambda item: item[0],
    )
    stand_ins = _stand_ins(current, library)
    dated = [(day, play, _for_who_is_there(step, stand_ins, library)) for day, play, step in dated]
    steps = tuple(PlanStep(play.id, step.title, step.owner, day, who(step.owner)) for day, play, step in dated)
    raci = tuple(
        RaciEntry(
            play.id,
            step.title,
            who(step.owner),
            who(step.accountable),
            tuple(map(who, step.consulted)),
            tuple(map(who, step.informed)),
        )
        for _, play, step in dated
    )
    kpis: dict[str, KpiStatus] = {}
    for play in plays:
        for spec in play.kpis:
            if spec.metric not in kpis:  # the highest-priority play sets a shared metric's target
                current_value = _metric(health_record, spec.metric)
                kpis[spec.metric] = KpiStatus(
                    spec.name,
                    spec.metric,
                    current_value,
                    spec.target,
                    spec.unit,
                    spec.direction,
                    _kpi_status(spec, current_value),
                )
    checkpoints = {
        (due_on(play, c.offset_days), f"{play.title}: {c.what}")
        for play in plays
        for c in play.checkpoints
        if (play.id, c.what) not in done_titles
    }
    checkpoints |= {
        (
            _as_date(r["renewal_date"]),
            f"Renewal of {r['product']} ({r['subscription_id']}), forecast {renewal_odds(r['bucket'], r.get('probability'))}",
        )
        for r in renewal_rows
    }
    risks = tuple(dict.fromkeys(risk for play in plays for risk in play.risks))
    name = account.get("name") or account["account_id"]
    return PlaybookResult(
        account_id=account["account_id"],
        account_name=name,
        as_of=as_of,
        tier=tier,
        tier_reason=shown_tier_reason(health_record),
        score=score,
        plays=tuple(play.id for play in plays),
        play_titles=tuple(play.title for play in plays),
        summary=_summary(name, health_record, codes, renewal_rows, plays, _notes(health_record, signals)),
        raci=raci,
        steps=steps,
        kpis=tuple(kpis.values()),
        checkpoints=tuple(Checkpoint(date, what) for date, what in sorted(checkpoints)),
        done=tuple(done),
        risks=risks,
        library_hash=library.config_hash,
    )


def render_playbook_markdown(result: PlaybookResult) -> str:
    """The plan as Markdown: tables of phrases and numbers, the summary in prose."""
    return render_template(TEMPLATE, plan=result)
