"""The input contract of docs/inputs.md as data, plus the typed entity classes.

`ENTITIES` drives the loader's validation, the generator's output and the Polars schema of
every table in the Customer 360 view, so the contract is written down exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Literal

import polars as pl

FieldType = Literal["str", "date", "int", "decimal", "bool", "enum"]

POLARS_TYPES: dict[str, pl.DataType] = {
    "str": pl.Utf8(),
    "enum": pl.Utf8(),
    "date": pl.Date(),
    "int": pl.Int64(),
    "decimal": pl.Float64(),
    "bool": pl.Boolean(),
}

ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"


@dataclass(frozen=True)
class FieldSpec:
    """One column of an input file and the rule it must follow."""

    name: str
    type: FieldType
    optional: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    unique: bool = False
    references: str | None = None  # "entity.field" that must exist
    not_before: str | None = None  # a date field of the same row this one may not precede
    after: str | None = None  # a date field of the same row this one must be strictly after
    at_most: str | None = None  # a number field of the same row this one may not exceed
    non_empty: bool = False


@dataclass(frozen=True)
class EntitySpec:
    """One input file: its name, whether it is required, its fields and its primary key."""

    file: str
    entity: str
    required: bool
    fields: tuple[FieldSpec, ...]
    key: tuple[str, ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {f.name: POLARS_TYPES[f.type] for f in self.fields}


def _id(name: str, **kw) -> FieldSpec:
    return FieldSpec(name, "str", unique=True, non_empty=True, **kw)


def _account_ref() -> FieldSpec:
    return FieldSpec("account_id", "str", references="accounts.account_id")


def _currency(name: str = "currency") -> FieldSpec:
    return FieldSpec(name, "str", pattern=CURRENCY_PATTERN)


ENTITIES: dict[str, EntitySpec] = {
    spec.file: spec
    for spec in (
        EntitySpec(
            "accounts",
            "Account",
            True,
            (
                _id("account_id", pattern=ACCOUNT_ID_PATTERN),
                FieldSpec("name", "str", non_empty=True),
                FieldSpec("segment", "enum", choices=("enterprise", "mid_market", "smb")),
                FieldSpec("industry", "str", optional=True),
                FieldSpec("region", "str", optional=True),
                FieldSpec("csm_owner", "str", optional=True),
                FieldSpec("created_on", "date"),
            ),
            ("account_id",),
        ),
        EntitySpec(
            "contacts",
            "Contact",
            False,
            (
                _id("contact_id"),
                _account_ref(),
                FieldSpec("name", "str"),
                FieldSpec("email", "str", optional=True),
                FieldSpec(
                    "role",
                    "enum",
                    choices=("champion", "exec_sponsor", "economic_buyer", "admin", "user"),
                ),
                FieldSpec("started_on", "date"),
                FieldSpec("ended_on", "date", optional=True, not_before="started_on"),
            ),
            ("contact_id",),
        ),
        EntitySpec(
            "subs",
            "Subscription",
            True,
            (
                _id("subscription_id"),
                _account_ref(),
                FieldSpec("product", "str"),
                FieldSpec("plan", "str"),
                FieldSpec("seats", "int", minimum=0),
                FieldSpec("arr", "decimal", minimum=0),
                _currency(),
                FieldSpec("start_date", "date"),
                FieldSpec("renewal_date", "date", after="start_date"),
                FieldSpec("status", "enum", choices=("active", "cancelled", "churned")),
                FieldSpec("auto_renew", "bool"),
                FieldSpec("discount_pct", "decimal", optional=True, minimum=0, maximum=100),
            ),
            ("subscription_id",),
        ),
        EntitySpec(
            "usage",
            "UsageWindow",
            False,
            (
                _account_ref(),
                FieldSpec("window_start", "date"),
                FieldSpec("window_end", "date", not_before="window_start"),
                FieldSpec("active_users", "int", minimum=0),
                FieldSpec("events", "int", minimum=0),
                FieldSpec("features_used", "int", minimum=0),
                FieldSpec("release_features_used", "int", minimum=0, at_most="features_used"),
            ),
            ("account_id", "window_start"),
        ),
        EntitySpec(
            "cases",
            "SupportCase",
            False,
            (
                _id("case_id"),
                _account_ref(),
                FieldSpec("opened_on", "date"),
                FieldSpec("closed_on", "date", optional=True, not_before="opened_on"),
                FieldSpec("severity", "int", minimum=1, maximum=4),
                FieldSpec("sla_breached", "bool"),
                FieldSpec("category", "str", optional=True),
            ),
            ("case_id",),
        ),
        EntitySpec(
            "nps",
            "NPSResponse",
            False,
            (
                _id("response_id"),
                _account_ref(),
                FieldSpec("contact_id", "str", optional=True, references="contacts.contact_id"),
                FieldSpec("responded_on", "date"),
                FieldSpec("score", "int", minimum=0, maximum=10),
                FieldSpec("comment", "str", optional=True),
            ),
            ("response_id",),
        ),
        EntitySpec(
            "invoices",
            "Invoice",
            False,
            (
                _id("invoice_id"),
                _account_ref(),
                FieldSpec(
                    "subscription_id",
                    "str",
                    optional=True,
                    references="subs.subscription_id",
                ),
                FieldSpec("issued_on", "date"),
                FieldSpec("due_on", "date", not_before="issued_on"),
                FieldSpec("paid_on", "date", optional=True),
                FieldSpec("amount", "decimal", minimum=0),
                FieldSpec("credit_amount", "decimal", optional=True, minimum=0),
                _currency(),
            ),
            ("invoice_id",),
        ),
        EntitySpec(
            "crm_opps",
            "Opportunity",
            False,
            (
                _id("opp_id"),
                _account_ref(),
                FieldSpec("name", "str"),
                FieldSpec("type", "enum", choices=("renewal", "expansion", "new_business")),
                FieldSpec("stage", "enum", choices=("open", "won", "lost")),
                FieldSpec("amount", "decimal", minimum=0),
                _currency(),
                FieldSpec("close_date", "date"),
            ),
            ("opp_id",),
        ),
    )
}


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    segment: str
    created_on: dt.date
    industry: str | None = None
    region: str | None = None
    csm_owner: str | None = None


@dataclass(frozen=True)
class Contact:
    contact_id: str
    account_id: str
    name: str
    role: str
    started_on: dt.date
    email: str | None = None
    ended_on: dt.date | None = None


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    account_id: str
    product: str
    plan: str
    seats: int
    arr: float
    currency: str
    start_date: dt.date
    renewal_date: dt.date
    status: str
    auto_renew: bool
    discount_pct: float | None = None


@dataclass(frozen=True)
class UsageWindow:
    account_id: str
    window_start: dt.date
    window_end: dt.date
    active_users: int
    events: int
    features_used: int
    release_features_used: int


@dataclass(frozen=True)
class SupportCase:
    case_id: str
    account_id: str
    opened_on: dt.date
    severity: int
    sla_breached: bool
    closed_on: dt.date | None = None
    category: str | None = None


@dataclass(frozen=True)
class NPSResponse:
    response_id: str
    account_id: str
    responded_on: dt.date
    score: int
    contact_id: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    account_id: str
    issued_on: dt.date
    due_on: dt.date
    amount: float
    currency: str
    subscription_id: str | None = None
    paid_on: dt.date | None = None
    credit_amount: float | None = None


@dataclass(frozen=True)
class Opportunity:
    opp_id: str
    account_id: str
    name: str
    type: str
    stage: str
    amount: float
    currency: str
    close_date: dt.date


ENTITY_CLASSES: dict[str, type] = {
    "accounts": Account,
    "contacts": Contact,
    "subs": Subscription,
    "usage": UsageWindow,
    "cases": SupportCase,
    "nps": NPSResponse,
    "invoices": Invoice,
    "crm_opps": Opportunity,
}

assert all(
    {f.name for f in dataclasses.fields(ENTITY_CLASSES[name])} == set(spec.field_names)
    for name, spec in ENTITIES.items()
), "entity classes and ENTITIES disagree"
