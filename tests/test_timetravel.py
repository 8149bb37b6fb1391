"""Point-in-time views: nothing dated after the cut survives, later outcomes are rolled back.

Expected rows and dates are worked out by hand from the rules in docs/backtest.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.timetravel import view_as_of
from c360_dagster.domain.ingest.view import Customer360, empty_table
from c360_dagster.domain.scoring.health import load_health_config, score_health
from c360_dagster.domain.scoring.signals import detect_signals, load_signals_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "customer"
DATA_AS_OF = dt.date(2026, 6, 30)
CUT = dt.date(2026, 3, 31)
D = dt.date

# Event dates that must never lie after the cut, per table.
EVENT_DATES = {
    "accounts": ("created_on",),
    "contacts": ("started_on", "ended_on"),
    "subs": ("start_date",),
    "usage": ("window_end",),
    "cases": ("opened_on", "closed_on"),
    "nps": ("responded_on",),
    "invoices": ("issued_on", "paid_on"),
}


def make_view(as_of: dt.date, **rows: list[dict]) -> Customer360:
    """A view from row dicts per entity (missing fields None, missing entities empty)."""
    tables = {}
    for name, spec in ENTITIES.items():
        given = rows.get(name, [])
        full = [{f: row.get(f) for f in spec.field_names} for row in given]
        frame = pl.DataFrame(full, schema=spec.polars_schema, orient="row") if full else empty_table(name)
        tables[name] = frame.sort(list(spec.key))
    return Customer360(as_of=as_of, tables=tables)


def account(account_id: str, created_on: dt.date = D(2020, 1, 1)) -> dict:
    return {
        "account_id": account_id,
        "name": f"Account {account_id}",
        "segment": "enterprise",
        "created_on": created_on,
    }


def sub(
    subscription_id: str,
    start: dt.date,
    renewal: dt.date,
    status: str = "active",
    account_id: str = "A",
    seats: int = 50,
) -> dict:
    return {
        "subscription_id": subscription_id, "account_id": account_id, "product": "Core", "plan": "growth",
        "seats": seats, "arr": 50000.0, "currency": "USD", "start_date": start, "renewal_date": renewal,
        "status": status, "auto_renew": True,
    }  # fmt: skip


def contact(contact_id: str, started: dt.date, ended: dt.date | None = None, account_id: str = "A") -> dict:
    return {
        "contact_id": contact_id, "account_id": account_id, "name": contact_id, "role": "champion",
        "started_on": started, "ended_on": ended,
    }  # fmt: skip


def week(end: dt.date, users: int) -> dict:
    return {
        "account_id": "A", "window_start": end - dt.timedelta(days=6), "window_end": end,
        "active_users": users, "events": users * 10, "features_used": 12, "release_features_used": 3,
    }  # fmt: skip


def case(case_id: str, opened: dt.date, closed: dt.date | None, severity: int = 1) -> dict:
    return {
        "case_id": case_id, "account_id": "A", "opened_on": opened, "closed_on": closed,
        "severity": severity, "sla_breached": False,
    }  # fmt: skip


def nps(response_id: str, on: dt.date, score: int, contact_id: str | None = None) -> dict:
    return {"response_id": response_id, "account_id": "A", "contact_id": contact_id, "responded_on": on, "score": score}


def invoice(invoice_id: str, issued: dt.date, paid: dt.date | None, subscription_id: str | None = None) -> dict:
    return {
        "invoice_id": invoice_id, "account_id": "A", "subscription_id": subscription_id, "issued_on": issued,
        "due_on": issued + dt.timedelta(days=30), "paid_on": paid, "amount": 10000.0, "currency": "USD",
    }  # fmt: skip


def opp(opp_id: str, kind: str, stage: str, close: dt.date) -> dict:
    return {
        "opp_id": opp_id, "account_id": "A", "name": opp_id, "type": kind, "stage": stage,
        "amount": 5000.0, "currency": "USD", "close_date": close,
    }  # fmt: skip


# The rows dated on or before CUT, shared by the full view and the hand-built past view.
WEEKS_BEFORE = [week(D(2026, 3, 1) + dt.timedelta(days=7 * i), users) for i, users in enumerate((40, 40, 38, 20, 18))]


def full_view() -> Customer360:
    """Rows on both sides of CUT (the comments say what the cut must do with each)."""
    return make_view(
        DATA_AS_OF,
        accounts=[account("A"), account("B", created_on=D(2026, 4, 15))],  # B: created after the cut
        contacts=[
            contact("C1", D(2024, 1, 1), ended=D(2026, 5, 1)),  # left after the cut: still in role then
            contact("C2", D(2026, 4, 10)),  # started after the cut
            contact("C3", D(2024, 1, 1), ended=D(2026, 2, 1)),  # left before the cut: kept as is
            contact("C4", D(2026, 4, 20), account_id="B"),
        ],
        subs=[
            sub("S1", D(2023, 5, 10), D(2027, 5, 10)),  # active: then renewing on 2026-05-10
            sub("S2", D(2024, 6, 1), D(2026, 6, 1), "churned"),  # churned after the cut: active then
            sub("S3", D(2024, 1, 15), D(2026, 1, 15), "cancelled"),  # cancelled before the cut
            sub("S4", D(2026, 4, 1), D(2027, 4, 1), seats=10),  # started after the cut
            sub("S5", D(2026, 4, 15), D(2027, 4, 15), account_id="B"),
        ],
        usage=[*WEEKS_BEFORE, week(D(2026, 4, 5), 5), week(D(2026, 4, 12), 5)],  # the 04-05 week straddles the cut
        cases=[
            case("K1", D(2026, 3, 1), D(2026, 4, 10)),  # closed after the cut: open then
            case("K2", D(2026, 4, 2), None),
            case("K3", D(2026, 1, 1), D(2026, 1, 5), severity=3),
        ],
        nps=[nps("N1", D(2026, 2, 1), 9, "C1"), nps("N2", D(2026, 5, 1), 1, "C2")],
        invoices=[
            invoice("I1", D(2026, 1, 1), D(2026, 4, 20), "S1"),  # paid after the cut: overdue then
            invoice("I2", D(2026, 5, 1), None, "S4"),
        ],
        crm_opps=[
            opp("O1", "expansion", "won", D(2026, 2, 1)),  # closed before the cut: as recorded
            opp("O2", "renewal", "lost", D(2026, 6, 1)),  # closed after the cut: open then
            opp("O3", "expansion", "open", D(2026, 9, 1)),
        ],
    )


def past_view() -> Customer360:
    """By hand: the view as it stood on CUT, as if the later rows had never existed."""
    return make_view(
        CUT,
        accounts=[account("A")],
        contacts=[contact("C1", D(2024, 1, 1)), contact("C3", D(2024, 1, 1), ended=D(2026, 2, 1))],
        subs=[
            sub("S1", D(2023, 5, 10), D(2026, 5, 10)),
            sub("S2", D(2024, 6, 1), D(2026, 6, 1)),
            sub("S3", D(2024, 1, 15), D(2026, 1, 15), "cancelled"),
        ],
        usage=WEEKS_BEFORE,
        cases=[case("K1", D(2026, 3, 1), None), case("K3", D(2026, 1, 1), D(2026, 1, 5), severity=3)],
        nps=[nps("N1", D(2026, 2, 1), 9, "C1")],
        invoices=[invoice("I1", D(2026, 1, 1), None, "S1")],
        crm_opps=[
            opp("O1", "expansion", "won", D(2026, 2, 1)),
            opp("O2", "renewal", "open", D(2026, 6, 1)),
            opp("O3", "expansion", "open", D(2026, 9, 1)),
        ],
    )


def test_nothing_dated_after_the_cut_survives():
    cut = view_as_of(full_view(), CUT)
    assert cut.as_of == CUT
    for name, columns in EVENT_DATES.items():
        for column in columns:
            assert cut.tables[name].filter(pl.col(column) > CUT).is_empty(), f"{name}.{column} leaks"
    ended = cut.subs.filter(pl.col("status") != "active")
    assert (ended["renewal_date"] <= CUT).all()
    assert cut.crm_opps.filter(pl.col("close_date") > CUT)["stage"].to_list() == ["open", "open"]
    assert cut.accounts["account_id"].to_list() == ["A"]


def test_cut_equals_a_view_that_never_had_the_later_rows():
    cut, past = view_as_of(full_view(), CUT), past_view()
    for name in ENTITIES:
        assert_frame_equal(cut.tables[name], past.tables[name], check_row_order=True)


def test_scores_and_signals_on_the_cut_equal_those_on_the_past_view():
    health_config = load_health_config(CONFIGS / "health.yaml")
    signals_config = load_signals_config(CONFIGS / "signals.yaml")
    cut, past = view_as_of(full_view(), CUT), past_view()
    assert_frame_equal(score_health(cut, health_config), score_health(past, health_config))
    lifecycle = health_config.lifecycle
    assert_frame_equal(detect_signals(cut, signals_config, lifecycle), detect_signals(past, signals_config, lifecycle))
    # Moving as_of back without the cut is not enough: S1 and S2 would not renew soon, and the
    # seats of S4 (started later) would replace those of S2 (churned later) in utilisation.
    naive = Customer360(CUT, full_view().tables)
    assert "SIG_RENEWAL_SOON" in detect_signals(cut, signals_config, lifecycle)["code"].to_list()
    assert "SIG_RENEWAL_SOON" not in detect_signals(naive, signals_config, lifecycle)["code"].to_list()
    assert (
        not score_health(naive, health_config)
        .filter(pl.col("account_id") == "A")
        .equals(score_health(cut, health_config))
    )


@pytest.mark.parametrize(
    ("start", "renewal", "status", "as_of", "expected_status", "expected_renewal"),
    [
        # The first anniversary strictly after as_of; one on as_of itself is already past.
        (D(2023, 5, 10), D(2027, 5, 10), "active", D(2026, 5, 9), "active", D(2026, 5, 10)),
        (D(2023, 5, 10), D(2027, 5, 10), "active", D(2026, 5, 10), "active", D(2027, 5, 10)),
        (D(2026, 5, 10), D(2027, 5, 10), "active", D(2026, 5, 10), "active", D(2027, 5, 10)),
        # A Feb 29 start renews on Feb 28 in other years.
        (D(2024, 2, 29), D(2027, 2, 28), "active", D(2025, 3, 1), "active", D(2026, 2, 28)),
        # Churned at its third anniversary: a year before, it was active and renewed on the second.
        (D(2023, 6, 1), D(2026, 6, 1), "churned", D(2025, 1, 1), "active", D(2025, 6, 1)),
        # Churned on the cut day itself: the outcome is known that day.
        (D(2023, 6, 1), D(2026, 6, 1), "churned", D(2026, 6, 1), "churned", D(2026, 6, 1)),
        # A six-month term: never later than the recorded renewal date.
        (D(2026, 1, 1), D(2026, 7, 1), "cancelled", D(2026, 3, 1), "active", D(2026, 7, 1)),
    ],
)
def test_subscription_status_and_renewal_date_at_the_cut(
    start, renewal, status, as_of, expected_status, expected_renewal
):
    view = make_view(D(2026, 9, 30), accounts=[account("A")], subs=[sub("S", start, renewal, status)])
    row = view_as_of(view, as_of).subs.row(0, named=True)
    assert (row["status"], row["renewal_date"]) == (expected_status, expected_renewal)


def test_references_to_rows_not_yet_there_become_null():
    view = make_view(
        DATA_AS_OF,
        accounts=[account("A")],
        contacts=[contact("C9", D(2026, 4, 1))],
        subs=[sub("S9", D(2026, 4, 1), D(2027, 4, 1))],
        nps=[nps("N9", D(2026, 3, 1), 7, "C9")],
        invoices=[invoice("I9", D(2026, 3, 1), None, "S9")],
    )
    cut = view_as_of(view, CUT)
    assert cut.nps["contact_id"].to_list() == [None]
    assert cut.invoices["subscription_id"].to_list() == [None]


def test_cutting_at_the_data_as_of_changes_nothing():
    view = read_customer_360(ROOT / "fixtures" / "customer")
    same = view_as_of(view, view.as_of)
    for name in ENTITIES:
        assert_frame_equal(same.tables[name], view.tables[name])


def test_a_cut_after_the_data_is_refused():
    with pytest.raises(C360Error, match="after the data's as_of"):
        view_as_of(full_view(), DATA_AS_OF + dt.timedelta(days=1))
