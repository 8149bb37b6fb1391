"""Integrity rules of the input contract, as columnar rules and as Dagster-ready check results.

`contract_rules` is the single statement of every value-level rule of docs/inputs.md: the loader
evaluates it on freshly parsed rows to reject bad input, and `run_integrity_checks` reports
it as the ERROR checks (evaluating it on views that did not come straight from the loader),
beside softer WARN findings about the data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from c360_dagster.domain.ingest.entities import (
    ACCOUNT_ID_PATTERN,
    CURRENCY_PATTERN,
    ENTITIES,
    FieldSpec,
)
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.quality import SAMPLE_ROWS, Finding, finding

Severity = Literal["ERROR", "WARN"]
# A fixed four weeks of weekly usage, not health.yaml's `windows.usage_days`: this check judges
# the input feed when it is loaded, before and whatever the scorecard (docs/inputs.md).
RECENT_USAGE_DAYS = 28

CHECKS: tuple[tuple[str, Severity, str], ...] = (
    ("unique_ids", "ERROR", "Every id is unique; account ids are unique even ignoring case."),
    (
        "references_resolve",
        "ERROR",
        "Every reference names an existing row (invoice subscriptions: of the same account).",
    ),
    ("dates_ordered", "ERROR", "End dates are not before start dates; renewals are after the start."),
    ("usage_windows_disjoint", "ERROR", "Usage windows of one account do not overlap."),
    ("values_in_range", "ERROR", "Required values are present, in range, in their allowed set and well formed."),
    ("has_subscription", "WARN", "Every account has at least one subscription."),
    ("has_active_subscription", "WARN", "Every account with subscriptions has an active one."),
    (
        "has_recent_usage",
        "WARN",
        f"Every account that should be using the product has usage in the {RECENT_USAGE_DAYS} days up to"
        f" the as-of date (the day the data is read for); left out: accounts without an active"
        f" subscription (churned or not started) and accounts whose first subscription started fewer"
        f" than {RECENT_USAGE_DAYS} days before that date (too new to judge).",
    ),
    (
        "active_renewals_not_past",
        "WARN",
        "No active subscription has its renewal date before the as-of date (the day the data is read for).",
    ),
    ("invoice_currency_matches", "WARN", "An invoice's currency is its subscription's currency."),
)
_DESCRIPTIONS = {name: text for name, _, text in CHECKS}
# The column each WARN check orders its offenders by (`_warn_offenders`), for merging shards' samples.
WARN_ORDER = {
    "has_subscription": "account_id",
    "has_active_subscription": "account_id",
    "has_recent_usage": "account_id",
    "active_renewals_not_past": "subscription_id",  # the subs table's key order
    "invoice_currency_matches": "invoice_id",
}

# docs/inputs.md asks only this reference to stay within the row's own account.
SAME_ACCOUNT_REFERENCES = frozenset({("invoices", "subscription_id")})
# entity -> (owner, start, end) of windows that must not overlap per owner.
DISJOINT_WINDOWS = {"usage": ("account_id", "window_start", "window_end")}
# The checks that compare a row with other rows (`Rule.beyond_row`): the rest judge a row alone.
_BEYOND_ROW = frozenset({"unique_ids", "references_resolve", "usage_windows_disjoint"})
# The offender rows of a contract check: entity, row key, column and the value found.
_NO_OFFENDERS = pl.DataFrame(schema={"entity": pl.Utf8, "key": pl.Utf8, "column": pl.Utf8, "value": pl.Utf8})


@dataclass(frozen=True)
class Rule:
    """One contract rule on one column: which rows break it and what was expected instead."""

    check: str
    column: str
    failing: pl.Expr  # True on offending rows, never null
    expected: str  # the phrase after "expected"
    shows: tuple[str, ...] = ()  # other columns whose value the message quotes

    @property
    def beyond_row(self) -> bool:
        """Whether it judges a row against other rows (of its file or another), not by the row
        alone: the loader checks such rules once the whole file is typed."""
        return self.check in _BEYOND_ROW


def contract_rules(name: str, frame: pl.DataFrame, tables: Mapping[str, pl.DataFrame]) -> list[Rule]:
    """Value rules of entity `name` over its typed `frame`; `tables` holds the referenced entities."""
    rules: list[Rule] = []
    for spec in ENTITIES[name].fields:
        rules += _field_rules(name, spec, tables)
    if name in DISJOINT_WINDOWS:
        owner, start, end = DISJOINT_WINDOWS[name]
        rules.append(
            Rule(
                "usage_windows_disjoint",
                start,
                pl.lit(overlapping_windows(frame, owner, start, end)),
                f"a {start} after the end of the previous window of the same {owner}",
                (owner,),
            )
        )
    return rules


def referenced_columns() -> dict[str, tuple[str, ...]]:
    """The columns of each entity that `contract_rules` of other entities look up in `tables`."""
    columns: dict[str, set[str]] = {}
    for name, entity in ENTITIES.items():
        for spec in entity.fields:
            if spec.references:
                target_name, target_field = spec.references.split(".")
                columns.setdefault(target_name, set()).add(target_field)
                if (name, spec.name) in SAME_ACCOUNT_REFERENCES:
                    columns[target_name].add("account_id")
    return {name: tuple(sorted(found)) for name, found in sorted(columns.items())}


def overlapping_windows(frame: pl.DataFrame, owner: str, start: str, end: str) -> pl.Series:
    """True on each window that starts before the previous window (by start) of its owner ends.

    Sorted by start, an owner's windows overlap somewhere exactly when two neighbours do, so
    one comparison per row suffices; equal starts flag the later row of the file.
    """
    rows = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("index"), owner, start, end).drop_nulls()
    same_owner = pl.col(owner) == pl.col(owner).shift(1)
    runs, owners, starts_ordered = rows.select(
        (~same_owner).fill_null(True).sum(),
        pl.col(owner).n_unique().alias("owners"),
        (~same_owner | (pl.col(start) >= pl.col(start).shift(1))).fill_null(True).all().alias("ordered"),
    ).row(0)
    if not (runs == owners and starts_ordered):
        # Sorting hashes is several times faster than sorting text; equal counts rule out collisions.
        owner_hash = pl.col(owner).hash(seed=0)
        hash_groups = owners == rows.select(owner_hash.n_unique()).item()
        rows = rows.sort(owner_hash if hash_groups else pl.col(owner), start, "index")
    hits = rows.filter(same_owner & (pl.col(start) <= pl.col(end).shift(1)))["index"]
    return pl.zeros(frame.height, pl.Boolean, eager=True).scatter(hits, True)


def _field_rules(name: str, spec: FieldSpec, tables: Mapping[str, pl.DataFrame]) -> list[Rule]:
    column = pl.col(spec.name)
    rules = []

    def rule(check: str, failing: pl.Expr, expected: str, shows: tuple[str, ...] = ()) -> None:
        rules.append(Rule(check, spec.name, _flag(failing), expected, shows))

    if not spec.optional:
        rule("values_in_range", column.is_null(), "a value (this field is not optional)")
    if spec.non_empty:
        rule("values_in_range", column.str.strip_chars() == "", "a non-empty text")
    if spec.choices:
        rule("values_in_range", ~column.is_in(spec.choices), "one of " + ", ".join(spec.choices))
    if spec.pattern:
        text = {
            ACCOUNT_ID_PATTERN: f"an id matching {spec.pattern} (it becomes a file name)",
            CURRENCY_PATTERN: f"an ISO 4217 currency code matching {spec.pattern}",
        }.get(spec.pattern, f"a value matching {spec.pattern}")
        rule("values_in_range", ~column.str.contains(spec.pattern), text)
    if spec.minimum is not None or spec.maximum is not None:
        rule("values_in_range", _out_of_range(column, spec), _range_text(spec))
    if spec.unique:
        # Account ids become file names, so ids differing only in case would collide.
        ignore_case = spec.pattern == ACCOUNT_ID_PATTERN
        key = column.str.to_lowercase() if ignore_case else column
        text = f"a unique {spec.name}" + (" (ignoring case)" if ignore_case else "")
        rule("unique_ids", column.is_not_null() & ~key.is_first_distinct(), text)
    if spec.references:
        target_name, target_field = spec.references.split(".")
        target = tables[target_name]
        exists = column.is_in(target[target_field].implode())
        noun = f"{'an' if spec.name[0] in 'aeiou' else 'a'} {spec.name}"
        rule("references_resolve", column.is_not_null() & ~exists, f"{noun} that exists in {target_name}")
        if (name, spec.name) in SAME_ACCOUNT_REFERENCES:
            owner = column.replace_strict(target[target_field], target["account_id"], default=None)
            expected = f"{noun} in {target_name} of this row's account_id"
            rule("references_resolve", exists & (owner != pl.col("account_id")), expected, ("account_id",))
    if spec.at_most:
        rule("values_in_range", column > pl.col(spec.at_most), f"at most {spec.at_most}", (spec.at_most,))
    if spec.not_before:
        expected = f"a date on or after {spec.not_before}"
        rule("dates_ordered", column < pl.col(spec.not_before), expected, (spec.not_before,))
    if spec.after:
        rule("dates_ordered", column <= pl.col(spec.after), f"a date after {spec.after}", (spec.after,))
    return rules


def _flag(expr: pl.Expr) -> pl.Expr:
    """A rule is only broken where it can be judged: a null comparison is not a failure."""
    return expr.fill_null(False)


def _out_of_range(column: pl.Expr, spec: FieldSpec) -> pl.Expr:
    below = column < spec.minimum if spec.minimum is not None else pl.lit(False)
    above = column > spec.maximum if spec.maximum is not None else pl.lit(False)
    return below | above


def _range_text(spec: FieldSpec) -> str:
    if spec.minimum is not None and spec.maximum is not None:
        return f"a value from {spec.minimum:g} to {spec.maximum:g}"
    if spec.minimum is not None:
        return f"a value of at least {spec.minimum:g}"
    return f"a value of at most {spec.maximum:g}"


def run_integrity_checks(view: Customer360, *, contract_enforced: bool = False) -> list[Finding]:
    """Evaluate every check of `CHECKS` on the view, in that order.

    `contract_enforced`: the view comes straight from the loader, which refuses input with
    any row breaking a `contract_rules` rule, so the ERROR checks are known to pass and are
    reported without evaluating every rule a second time (18 s at a million accounts); the
    view then needs only `WARN_TABLES`.
    """
    if contract_enforced:
        offending = {name: _NO_OFFENDERS for name, severity, _ in CHECKS if severity == "ERROR"}
    else:
        offending = _contract_offenders(view)
    offending.update(_warn_offenders(view))
    return [_check(name, severity, offending[name]) for name, severity, _ in CHECKS]


def _contract_offenders(view: Customer360) -> dict[str, pl.DataFrame]:
    """For each ERROR check, one row per broken (row, rule): entity, key, column and value."""
    found: dict[str, list[pl.DataFrame]] = {name: [] for name, severity, _ in CHECKS if severity == "ERROR"}
    for name, spec in ENTITIES.items():
        frame = view.tables[name]
        key = ", ".join(f"{k}={{}}" for k in spec.key)
        for rule in contract_rules(name, frame, view.tables):
            found[rule.check].append(
                frame.filter(rule.failing).select(
                    entity=pl.lit(name),
                    key=pl.format(key, *(pl.col(k).cast(pl.Utf8) for k in spec.key)),
                    column=pl.lit(rule.column),
                    value=pl.col(rule.column).cast(pl.Utf8),
                )
            )
    return {check: pl.concat(parts) for check, parts in found.items()}


# The view's tables the WARN checks read: all that `contract_enforced` checks need of a view.
WARN_TABLES = ("accounts", "subs", "usage", "invoices")


def _warn_offenders(view: Customer360) -> dict[str, pl.DataFrame]:
    accounts = view.accounts.select("account_id")
    subs, usage = view.subs, view.usage
    recent_from = view.as_of - dt.timedelta(days=RECENT_USAGE_DAYS)
    active_accounts = subs.filter(pl.col("status") == "active").select("account_id").unique()
    # Usage is expected only from a live customer that has had the whole window to use the product.
    expecting_usage = (
        subs.group_by("account_id")
        .agg(first_start=pl.col("start_date").min())
        .filter(pl.col("first_start") <= recent_from)
        .join(active_accounts, on="account_id", how="semi")
        .select("account_id")
    )
    recent = usage.filter((pl.col("window_end") > recent_from) & (pl.col("window_start") <= view.as_of))
    last_usage = usage.group_by("account_id").agg(last_window_end=pl.col("window_end").max())
    sub_currency = subs.select("subscription_id", subscription_currency="currency")
    return {
        "has_subscription": accounts.join(subs, on="account_id", how="anti").sort("account_id"),
        "has_active_subscription": accounts.join(subs, on="account_id", how="semi")
        .join(active_accounts, on="account_id", how="anti")
        .sort("account_id"),
        "has_recent_usage": expecting_usage.join(recent, on="account_id", how="anti")
        .join(last_usage, on="account_id", how="left")
        .sort("account_id"),
        "active_renewals_not_past": subs.filter(
            (pl.col("status") == "active") & (pl.col("renewal_date") < view.as_of)
        ).select("subscription_id", "account_id", "renewal_date"),
        "invoice_currency_matches": view.invoices.join(sub_currency, on="subscription_id", how="inner")
        .filter(pl.col("currency") != pl.col("subscription_currency"))
        .select("invoice_id", "subscription_id", "currency", "subscription_currency")
        .sort("invoice_id"),
    }


def _check(name: str, severity: Severity, offending: pl.DataFrame) -> Finding:
    return finding(name, offending, _DESCRIPTIONS[name], severity)


def merge_findings(shard_findings: Sequence[Sequence[Finding]]) -> list[Finding]:
    """The whole book's findings from its shards' (each `run_integrity_checks(..., contract_enforced=True)`).

    No check needs rows of two shards: each judges rows of one account (an invoice's
    subscription must be of the invoice's account), and all rows naming an account are in its
    shard, so the book's offenders are the union of the shards'. The ERROR checks, ids unique
    across the whole book included, held before the split: the loader refused any input
    breaking them. A sample is a check's first offenders in its order, so the book's first
    ones are among the shards' samples.
    """
    merged = []
    for position, (name, severity, description) in enumerate(CHECKS):
        found = [findings[position] for findings in shard_findings]
        if any(one.name != name for one in found):
            raise ValueError(f"shard findings are not in CHECKS order at {name}")
        if name not in WARN_ORDER and not all(one.passed for one in found):
            raise ValueError(f"{name}: only findings of views whose contract was enforced can be merged")
        samples = sorted((row for one in found for row in one.sample), key=lambda row: row[WARN_ORDER[name]])
        merged.append(
            Finding(
                name,
                all(one.passed for one in found),
                sum(one.count for one in found),
                samples[:SAMPLE_ROWS],
                description,
                severity,
            )
        )
    return merged
