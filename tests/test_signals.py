"""Signals: for each code an input that fires it and one exactly at its threshold that does not.

Thresholds are those of configs/customer/signals.yaml (4-week windows; slide > 25%; spike
> 2 cases and > 2x the prior rate, or an open sev-1; overdue > 30 days; breadth < 20% of 40
features; stakeholder change in the last 60 days; renewal within 90 days; expansion with
utilisation > 90% or growth > 20%). Expected values are computed by hand.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from test_health_score import (
    AS_OF,
    account,
    case,
    days_ago,
    invoice,
    make_view,
    sub,
    week,
)

from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.io import canonical_json
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.health import load_health_config
from c360_dagster.domain.scoring.signals import (
    SIGNAL_CATALOG,
    VIEW_TABLES,
    detect_signals,
    load_signals_config,
    signals_by_account,
    signals_config_from_dict,
    signals_summary,
)

ROOT = Path(__file__).resolve().parents[1]
SIGNALS_YAML = ROOT / "configs" / "customer" / "signals.yaml"
FIXTURES = ROOT / "fixtures" / "customer"
LIFECYCLE = load_health_config(ROOT / "configs" / "customer" / "health.yaml").lifecycle


@pytest.fixture(scope="module")
def config():
    return load_signals_config(SIGNALS_YAML)


def customer_view(**rows: list[dict]) -> Customer360:
    """A view whose accounts are live customers: one active subscription each, unless `subs` is given."""
    subs = rows.pop("subs", None) or [sub(a["account_id"]) for a in rows["accounts"]]
    return make_view(subs=subs, **rows)


def fired(view: Customer360, config, code: str) -> list[dict]:
    """The evidence of every `code` signal, decoded."""
    frame = detect_signals(view, config, LIFECYCLE).filter(pl.col("code") == code)
    return [json.loads(e) for e in frame["evidence"]]


def four_weeks(account_id: str, users: int, first_ago: int = 0, **kw) -> list[dict]:
    return [week(account_id, first_ago + d, users, **kw) for d in (0, 7, 14, 21)]


# ---- one rule at a time ------------------------------------------------------------------


def test_usage_slide(config):
    # Prior 4 weeks 100 users, recent 74: (100-74)/100 = 26% > 25 fires; 75 (exactly 25%) does not.
    slide = customer_view(accounts=[account()], usage=four_weeks("A", 100, 28) + four_weeks("A", 74))
    assert fired(slide, config, "SIG_USAGE_SLIDE_4W") == [
        {
            "drop_pct": 26.0, "prior_avg_active_users": 100.0, "recent_avg_active_users": 74.0,
            "recent_from": "2026-08-31", "recent_to": "2026-09-27", "prior_from": "2026-08-03", "prior_to": "2026-08-30",
        }
    ]  # fmt: skip
    at = customer_view(accounts=[account()], usage=four_weeks("A", 100, 28) + four_weeks("A", 75))
    assert fired(at, config, "SIG_USAGE_SLIDE_4W") == []
    no_prior = customer_view(accounts=[account()], usage=four_weeks("A", 10))
    assert fired(no_prior, config, "SIG_USAGE_SLIDE_4W") == []


def test_usage_slide_when_the_recent_weeks_are_missing(config):
    # Usage stopped: no recent windows counts as 0 users, a 100% drop.
    stopped = customer_view(accounts=[account()], usage=four_weeks("A", 40, 28))
    assert fired(stopped, config, "SIG_USAGE_SLIDE_4W")[0]["drop_pct"] == 100.0


def test_support_spike_by_volume(config):
    # No prior cases: 3 recent > 2 fires (rate 0); 2 recent (at cases_over) does not.
    three = customer_view(accounts=[account()], cases=[case(f"C{i}", i, 3, closed_days_ago=0) for i in (1, 2, 3)])
    assert fired(three, config, "SIG_SUPPORT_SPIKE") == [
        {
            "recent_cases": 3, "prior_cases": 0, "prior_rate_per_recent_period": 0.0, "ratio": None,
            "open_sev1_cases": 0, "oldest_open_sev1_opened_on": None, "recent_from": "2026-08-29",
        }
    ]  # fmt: skip
    two = customer_view(accounts=[account()], cases=[case(f"C{i}", i, 3, closed_days_ago=0) for i in (1, 2)])
    assert fired(two, config, "SIG_SUPPORT_SPIKE") == []


def test_support_spike_by_ratio(config):
    # 6 cases in the prior 90 days = 2 per 30 days; 4 recent = exactly 2x: no. 5 recent: 2.5x: fires.
    # A case opened exactly 30 days ago belongs to the prior period.
    prior = [case(f"P{i}", 30 + 10 * i, 3, closed_days_ago=0) for i in range(6)]
    recent = [case(f"R{i}", 1 + i, 3, closed_days_ago=0) for i in range(5)]
    at = customer_view(accounts=[account()], cases=prior + recent[:4])
    assert fired(at, config, "SIG_SUPPORT_SPIKE") == []
    over = customer_view(accounts=[account()], cases=prior + recent)
    assert fired(over, config, "SIG_SUPPORT_SPIKE") == [ {
        "recent_cases": 5, "prior_cases": 6, "prior_rate_per_recent_period": 2.0, "ratio": 2.5,
        "open_sev1_cases": 0, "oldest_open_sev1_opened_on": None, "recent_from": "2026-08-29",
    }]  # fmt: skip


def test_support_spike_by_open_sev1(config):
    # One open sev-1 (opened 200 days ago) fires on its own; one closed on as_of does not.
    open_sev1 = customer_view(accounts=[account()], cases=[case("C1", 200, 1)])
    evidence = fired(open_sev1, config, "SIG_SUPPORT_SPIKE")
    assert [(e["open_sev1_cases"], e["oldest_open_sev1_opened_on"]) for e in evidence] == [
        (1, days_ago(200).isoformat())
    ]
    closed = customer_view(accounts=[account()], cases=[case("C1", 200, 1, closed_days_ago=0), case("C2", 5, 2)])
    assert fired(closed, config, "SIG_SUPPORT_SPIKE") == []


def test_payment_overdue(config):
    # Unpaid 31 days past due fires with the worst invoice; exactly 30 days does not.
    view = customer_view(
        accounts=[account("A"), account("B")],
        invoices=[
            invoice("I1", 31, 500.0, account_id="A"),
            invoice("I2", 5, 250.0, account_id="A"),
            invoice("I3", 30, 900.0, account_id="B"),
            invoice("I4", 90, 900.0, paid_days_ago=60, account_id="B"),
        ],
    )
    assert detect_signals(view, config, LIFECYCLE).filter(pl.col("code") == "SIG_PAYMENT_OVERDUE")[
        "account_id"
    ].to_list() == ["A"]
    assert fired(view, config, "SIG_PAYMENT_OVERDUE") == [
        {
            "invoice_id": "I1", "due_on": days_ago(31).isoformat(), "days_overdue": 31, "amount": 500.0,
            "currency": "USD", "overdue_invoices": 2, "overdue_amount": 750.0,
        }
    ]  # fmt: skip
    # A EUR invoice beside them is counted but its amount is not added to USD ones: 750 stays 750.
    mixed = customer_view(
        accounts=[account("A")],
        invoices=[invoice("I1", 31, 500.0), invoice("I2", 5, 250.0), {**invoice("I5", 10, 4000.0), "currency": "EUR"}],
    )
    evidence = fired(mixed, config, "SIG_PAYMENT_OVERDUE")[0]
    assert (evidence["currency"], evidence["overdue_invoices"], evidence["overdue_amount"]) == ("USD", 3, 750.0)
    paid_late = customer_view(accounts=[account()], invoices=[invoice("I1", 40, 100.0, paid_days_ago=-2)])
    assert fired(paid_late, config, "SIG_PAYMENT_OVERDUE")[0]["days_overdue"] == 40


def test_feature_adoption_low(config):
    # 7 of 40 features = 17.5% < 20 fires; 8 of 40 = exactly 20% does not; no usage: nothing to judge.
    low = customer_view(accounts=[account()], usage=four_weeks("A", 10, features=7))
    assert fired(low, config, "SIG_FEATURE_ADOPTION_LOW") == [
        {
            "avg_features_used": 7.0,
            "feature_catalog_size": 40,
            "breadth_pct": 17.5,
            "recent_windows": 4,
            "recent_from": "2026-08-31",
        }
    ]
    at = customer_view(accounts=[account()], usage=four_weeks("A", 10, features=8))
    assert fired(at, config, "SIG_FEATURE_ADOPTION_LOW") == []
    assert fired(customer_view(accounts=[account()]), config, "SIG_FEATURE_ADOPTION_LOW") == []


def contact(contact_id, role, started_ago, ended_ago=None):
    return {
        "contact_id": contact_id, "account_id": "A", "name": contact_id, "role": role,
        "started_on": days_ago(started_ago), "ended_on": None if ended_ago is None else days_ago(ended_ago),
    }  # fmt: skip


def test_stakeholder_change(config):
    # A champion who left 59 days ago and a sponsor who started today fire; a champion who left
    # exactly 60 days ago, an admin who left yesterday and a buyer who started 61 days ago do not.
    view = customer_view(
        accounts=[account()],
        contacts=[
            contact("K1", "champion", 900, 59),
            contact("K2", "exec_sponsor", 0),
            contact("K3", "champion", 900, 60),
            contact("K4", "admin", 900, 1),
            contact("K5", "economic_buyer", 61),
        ],
    )
    assert fired(view, config, "SIG_STAKEHOLDER_CHANGE") == [
        {
            "changes": [
                {"change": "left", "contact_id": "K1", "on": days_ago(59).isoformat(), "role": "champion"},
                {"change": "started", "contact_id": "K2", "on": AS_OF.isoformat(), "role": "exec_sponsor"},
            ],
            "since": "2026-07-30",
        }
    ]
    quiet = customer_view(
        accounts=[account()], contacts=[contact("K3", "champion", 900, 60), contact("K4", "admin", 900, 1)]
    )
    assert fired(quiet, config, "SIG_STAKEHOLDER_CHANGE") == []


def test_renewal_soon(config):
    # Renewal in 90 days (the window's last day) fires, in 91 does not; a cancelled one in 10
    # days and an active one whose date has passed do not either.
    def renewing(sid, days, status="active", account_id="A"):
        return sub(account_id, subscription_id=sid, renewal_date=AS_OF + dt.timedelta(days=days), status=status)

    view = customer_view(
        accounts=[account("A"), account("B")],
        subs=[renewing("S1", 90), renewing("S2", 120), renewing("S3", 91, account_id="B"),
              renewing("S4", 10, "cancelled", "B"), renewing("S5", -1, account_id="B")],
    )  # fmt: skip
    signals = detect_signals(view, config, LIFECYCLE).filter(pl.col("code") == "SIG_RENEWAL_SOON")
    assert signals["account_id"].to_list() == ["A"]
    assert json.loads(signals["evidence"][0]) == {
        "subscription_id": "S1", "renewal_date": "2026-12-26", "days_to_renewal": 90, "arr": 100000.0,
        "currency": "USD", "auto_renew": True, "renewing_subscriptions": 1,
    }  # fmt: skip


def expansion_opp(stage="open", opp_type="expansion"):
    return {
        "opp_id": "O1", "account_id": "A", "name": "More seats", "type": opp_type, "stage": stage,
        "amount": 5000.0, "currency": "USD", "close_date": days_ago(-30),
    }  # fmt: skip


def test_expansion_trail_by_utilisation(config):
    # 91 of 100 seats used with an open expansion opp fires; 90 (exactly) does not; 95 with the
    # opp already won does not.
    def view(users, stage="open"):
        return customer_view(accounts=[account()], subs=[sub()], usage=four_weeks("A", users, 28) + four_weeks("A", users),
                         crm_opps=[expansion_opp(stage)])  # fmt: skip

    assert fired(view(91), config, "SIG_EXPANSION_TRAIL") == [
        {
            "utilisation_pct": 91.0, "growth_pct": 0.0, "seats": 100, "recent_avg_active_users": 91.0,
            "prior_avg_active_users": 91.0, "open_expansion_opps": 1, "opp_id": "O1", "opp_amount": 5000.0,
            "opp_currency": "USD", "opp_close_date": days_ago(-30).isoformat(),
        }
    ]  # fmt: skip
    assert fired(view(90), config, "SIG_EXPANSION_TRAIL") == []
    assert fired(view(95, "won"), config, "SIG_EXPANSION_TRAIL") == []


def test_expansion_trail_by_growth(config):
    # 50 -> 61 users (22% growth) on 100 seats fires; 50 -> 60 (exactly 20%) does not.
    def view(recent):
        return customer_view(accounts=[account()], subs=[sub()], usage=four_weeks("A", 50, 28) + four_weeks("A", recent),
                         crm_opps=[expansion_opp()])  # fmt: skip

    assert [e["growth_pct"] for e in fired(view(61), config, "SIG_EXPANSION_TRAIL")] == [22.0]
    assert fired(view(60), config, "SIG_EXPANSION_TRAIL") == []


# ---- the frame, config, fixtures ---------------------------------------------------------


def test_frame_shape_and_canonical_evidence(config):
    frame = detect_signals(read_customer_360(FIXTURES), config, LIFECYCLE)
    assert frame.schema == pl.Schema({"account_id": pl.Utf8, "code": pl.Utf8, "kind": pl.Utf8, "evidence": pl.Utf8})
    assert frame.equals(frame.sort("account_id", "code"))
    assert all(e == canonical_json(json.loads(e)) for e in frame["evidence"])
    assert set(frame["code"]) <= set(SIGNAL_CATALOG)
    assert all(SIGNAL_CATALOG[c].kind == k for c, k in zip(frame["code"], frame["kind"], strict=True))


def test_the_view_tables_it_names_are_all_it_reads(config):
    view = read_customer_360(FIXTURES)
    assert set(VIEW_TABLES) < set(view.tables)
    only = Customer360(as_of=view.as_of, tables={name: view.tables[name] for name in VIEW_TABLES})
    assert detect_signals(only, config, LIFECYCLE).equals(detect_signals(view, config, LIFECYCLE))


def test_empty_view_gives_an_empty_frame(config):
    frame = detect_signals(customer_view(accounts=[account()]), config, LIFECYCLE)
    assert frame.is_empty() and frame.columns == ["account_id", "code", "kind", "evidence"]
    assert signals_by_account(frame) == {}


def test_catalog_kinds():
    assert {code: spec.kind for code, spec in SIGNAL_CATALOG.items() if spec.kind == "expansion"} == {
        "SIG_EXPANSION_TRAIL": "expansion"
    }
    assert SIGNAL_CATALOG["SIG_RENEWAL_SOON"].kind == "risk"
    assert len(SIGNAL_CATALOG) == 7 and all(spec.meaning for spec in SIGNAL_CATALOG.values())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(surprise=1), "surprise: unknown key"),
        (lambda d: d["renewal_soon"].update(day=5), "renewal_soon.day: unknown key"),
        (lambda d: d["support_spike"].pop("ratio_over"), "support_spike.ratio_over: missing required key"),
        (lambda d: d["stakeholder_change"].update(roles=["ceo"]), "stakeholder_change.roles.0:"),
        (lambda d: d["payment_overdue"].update(days_overdue_over=-1), "payment_overdue.days_overdue_over:"),
        (lambda d: d["usage_slide_4w"].update(drop_pct_over=100), "usage_slide_4w.drop_pct_over:"),
    ],
)
def test_config_errors_name_the_key(edit, message):
    data = copy.deepcopy(yaml.safe_load(SIGNALS_YAML.read_text(encoding="utf-8")))
    edit(data)
    with pytest.raises(ConfigError, match="signals config: " + message.replace(".", r"\.")):
        signals_config_from_dict(data)


EXPECTED_FIXTURE_CODES = {  # the story of fixtures/customer/README.md
    "ACME-001": ["SIG_RENEWAL_SOON", "SIG_STAKEHOLDER_CHANGE", "SIG_USAGE_SLIDE_4W"],
    "GLOBEX-002": ["SIG_EXPANSION_TRAIL"],
    "HOOLI-007": ["SIG_EXPANSION_TRAIL"],
    "INITECH-003": ["SIG_PAYMENT_OVERDUE", "SIG_RENEWAL_SOON", "SIG_SUPPORT_SPIKE"],
    "KV-010": ["SIG_STAKEHOLDER_CHANGE"],
    "PIPE-004": ["SIG_FEATURE_ADOPTION_LOW", "SIG_RENEWAL_SOON"],
    "SOYLENT-006": ["SIG_PAYMENT_OVERDUE"],
    "STARK-008": [
        "SIG_FEATURE_ADOPTION_LOW", "SIG_PAYMENT_OVERDUE", "SIG_RENEWAL_SOON", "SIG_STAKEHOLDER_CHANGE",
        "SIG_USAGE_SLIDE_4W",
    ],
    "WAYNE-009": ["SIG_SUPPORT_SPIKE"],
}  # fmt: skip


def test_fixture_codes_per_account(config):
    by_account = signals_by_account(detect_signals(read_customer_360(FIXTURES), config, LIFECYCLE))
    assert {a: [s["code"] for s in signals] for a, signals in by_account.items()} == EXPECTED_FIXTURE_CODES
    # UMBRELLA-005 (green, an admin left), NEWCO-011 and OLDCO-012 have none.
    assert by_account["ACME-001"][2] == {
        "code": "SIG_USAGE_SLIDE_4W",
        "kind": "risk",
        "evidence": {
            "drop_pct": 31.17, "prior_avg_active_users": 154.0, "recent_avg_active_users": 106.0,
            "recent_from": "2026-08-31", "recent_to": "2026-09-27", "prior_from": "2026-08-03", "prior_to": "2026-08-30",
        },
    }  # fmt: skip


def test_every_code_occurs_in_the_fixtures(config):
    summary = signals_summary(detect_signals(read_customer_360(FIXTURES), config, LIFECYCLE))
    assert summary == {
        "signals": 18,
        "accounts_with_signals": 9,
        "by_code": {
            "SIG_EXPANSION_TRAIL": 2, "SIG_FEATURE_ADOPTION_LOW": 2, "SIG_PAYMENT_OVERDUE": 3, "SIG_RENEWAL_SOON": 4,
            "SIG_STAKEHOLDER_CHANGE": 3, "SIG_SUPPORT_SPIKE": 2, "SIG_USAGE_SLIDE_4W": 2,
        },
        "by_kind": {"risk": 16, "expansion": 2},
    }  # fmt: skip


def test_deterministic_and_independent_of_row_order(config):
    view = read_customer_360(FIXTURES)
    first = detect_signals(view, config, LIFECYCLE)
    assert first.equals(detect_signals(view, config, LIFECYCLE))
    shuffled = Customer360(
        as_of=view.as_of,
        tables={name: table.sample(fraction=1.0, shuffle=True, seed=11) for name, table in view.tables.items()},
    )
    assert detect_signals(shuffled, config, LIFECYCLE).equals(first)


def test_a_churned_or_not_started_account_fires_only_money_owed(config):
    # Both accounts have a stakeholder change, a usage slide and an invoice 31 days overdue.
    # "GONE" churned in 2025 and "NEW" starts next month: neither is a customer today, so only
    # SIG_PAYMENT_OVERDUE (money owed is owed after churn) fires; "LIVE" fires all three.
    subs = [
        sub("GONE", status="churned", start_date=dt.date(2024, 1, 1), renewal_date=dt.date(2025, 1, 1)),
        sub("NEW", start_date=days_ago(-30), renewal_date=days_ago(-395)),
        sub("LIVE"),
    ]
    rows: dict[str, list[dict]] = {"usage": [], "contacts": [], "invoices": []}
    for a in ("GONE", "NEW", "LIVE"):
        rows["usage"] += four_weeks(a, 100, 28, features=10) + four_weeks(a, 50, features=10)
        rows["contacts"].append({**contact(f"K-{a}", "champion", 900, 10), "account_id": a})
        rows["invoices"].append(invoice(f"I-{a}", 31, 500.0, account_id=a))
    view = make_view(accounts=[account(a) for a in ("GONE", "NEW", "LIVE")], subs=subs, **rows)
    fired = detect_signals(view, config, LIFECYCLE)
    assert fired.select("account_id", "code").rows() == [
        ("GONE", "SIG_PAYMENT_OVERDUE"),
        ("LIVE", "SIG_PAYMENT_OVERDUE"),
        ("LIVE", "SIG_STAKEHOLDER_CHANGE"),
        ("LIVE", "SIG_USAGE_SLIDE_4W"),
        ("NEW", "SIG_PAYMENT_OVERDUE"),
    ]
    assert not SIGNAL_CATALOG["SIG_PAYMENT_OVERDUE"].live_only
    assert all(spec.live_only for code, spec in SIGNAL_CATALOG.items() if code != "SIG_PAYMENT_OVERDUE")


def test_a_renewal_already_booked_is_not_a_renewal_soon(config):
    # S1 renews in 30 days, but its successor S2 (same product) is already recorded, starting
    # on that day: the renewal is done, no SIG_RENEWAL_SOON. B's S3 has no successor: it fires.
    renewal = AS_OF + dt.timedelta(days=30)
    subs = [
        sub("A", subscription_id="S1", renewal_date=renewal),
        sub("A", subscription_id="S2", start_date=renewal, renewal_date=renewal + dt.timedelta(days=365)),
        sub("B", subscription_id="S3", renewal_date=renewal),
    ]
    view = make_view(accounts=[account("A"), account("B")], subs=subs)
    renewing = detect_signals(view, config, LIFECYCLE).filter(pl.col("code") == "SIG_RENEWAL_SOON")
    assert renewing["account_id"].to_list() == ["B"]
