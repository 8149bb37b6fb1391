"""Point-in-time views: the Customer 360 as it could have been seen on an earlier date.

A row survives only when the event that created it is dated on or before the cut; a later
event on a surviving row (a contact leaving, a case closing, an invoice being paid, a
subscription churning) is rolled back to "not yet known". Planned dates (an invoice's
`due_on`, a subscription's `renewal_date`, an open opportunity's `close_date`) may lie after
the cut, because they were known in advance. The rules are documented in docs/backtest.md.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.ingest.view import Customer360

ACTIVE = "active"


def anniversary(start: pl.Expr, years: pl.Expr) -> pl.Expr:
    """`start` moved by `years` whole years (a Feb 29 start falls on Feb 28 in other years)."""
    return start.dt.offset_by(pl.format("{}y", years))


def next_anniversary(start: pl.Expr, as_of: dt.date) -> pl.Expr:
    """The first anniversary of `start` (one year or more after it) strictly after `as_of`."""
    years = pl.lit(as_of.year) - start.dt.year()
    same_year = anniversary(start, years)
    return pl.when(same_year > as_of).then(same_year).otherwise(anniversary(start, years + 1))


def _unknown_after(column: str, as_of: dt.date) -> pl.Expr:
    """`column`, or null when it is dated after `as_of` (the event had not happened yet)."""
    return pl.when(pl.col(column) <= as_of).then(pl.col(column)).otherwise(None).alias(column)


def _known_reference(column: str, ids: pl.Series) -> pl.Expr:
    """`column`, or null when it names a row that did not exist yet."""
    return pl.when(pl.col(column).is_in(ids.implode())).then(pl.col(column)).otherwise(None).alias(column)


def _subscriptions_as_of(subs: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Started subscriptions, with status and renewal date as they stood on `as_of`.

    A recorded outcome (churn, cancellation, or the renewal date itself) dated after `as_of`
    was still ahead: the subscription was `active`, renewing on its first anniversary after
    `as_of`, never later than the recorded `renewal_date`.
    """
    outcome_ahead = pl.col("renewal_date") > as_of
    return subs.filter(pl.col("start_date") <= as_of).with_columns(
        pl.when(outcome_ahead).then(pl.lit(ACTIVE)).otherwise(pl.col("status")).alias("status"),
        pl.when(outcome_ahead)
        .then(pl.min_horizontal(next_anniversary(pl.col("start_date"), as_of), pl.col("renewal_date")))
        .otherwise(pl.col("renewal_date"))
        .alias("renewal_date"),
    )


def view_as_of(view: Customer360, as_of: dt.date) -> Customer360:
    """The view as it could have been seen on `as_of`, from data dated on or before it."""
    if as_of > view.as_of:
        raise C360Error(
            f"cannot cut the view at {as_of.isoformat()}: it is after the data's as_of ({view.as_of.isoformat()})",
            code="AS_OF_INVALID",
        )
    accounts = view.accounts.filter(pl.col("created_on") <= as_of)
    account_ids = accounts["account_id"]

    def of_known_accounts(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("account_id").is_in(account_ids.implode()))

    contacts = of_known_accounts(view.contacts.filter(pl.col("started_on") <= as_of)).with_columns(
        _unknown_after("ended_on", as_of)
    )
    subs = of_known_accounts(_subscriptions_as_of(view.subs, as_of))
    closing_later = pl.col("close_date") > as_of
    tables = {
        "accounts": accounts,
        "contacts": contacts,
        "subs": subs,
        "usage": of_known_accounts(view.usage.filter(pl.col("window_end") <= as_of)),
        "cases": of_known_accounts(view.cases.filter(pl.col("opened_on") <= as_of)).with_columns(
            _unknown_after("closed_on", as_of)
        ),
        "nps": of_known_accounts(view.nps.filter(pl.col("responded_on") <= as_of)).with_columns(
            _known_reference("contact_id", contacts["contact_id"])
        ),
        "invoices": of_known_accounts(view.invoices.filter(pl.col("issued_on") <= as_of)).with_columns(
            _unknown_after("paid_on", as_of), _known_reference("subscription_id", subs["subscription_id"])
        ),
        # The contract has no creation date for opportunities: one closing after the cut is
        # shown as open (its outcome was not yet known), one closing on or before it as recorded.
        "crm_opps": of_known_accounts(view.crm_opps).with_columns(
            pl.when(closing_later).then(pl.lit("open")).otherwise(pl.col("stage")).alias("stage")
        ),
    }
    return Customer360(
        as_of=as_of,
        tables={name: tables[name].select(view.tables[name].columns) for name in view.tables},
        source_hashes=view.source_hashes,
        warnings=view.warnings,
    )
