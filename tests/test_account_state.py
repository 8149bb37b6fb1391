"""The account lifecycle and the renewal succession rule (domain/scoring/account_state.py), by hand.

Each expected value is worked out from the rows written here or in fixtures/customer/subs.csv.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from test_health_score import account, days_ago, make_view, sub

from c360_dagster.bench.generator import generate_dataset
from c360_dagster.console import main
from c360_dagster.domain.core.errors import GateError
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.scoring.account_state import (
    LifecycleConfig,
    account_states,
    lifecycle_counts,
    refuse_not_live,
    succession,
)
from c360_dagster.domain.scoring.health import load_health_config, score_health
from c360_dagster.domain.scoring.signals import detect_signals, load_signals_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "customer"
CONFIG = LifecycleConfig(onboarding_days=90, renewal_grace_days=30)


def ended(sid: str, renewal: dt.date, arr: float = 100.0, product: str = "Core", status: str = "cancelled") -> dict:
    return sub(subscription_id=sid, product=product, arr=arr, start_date=renewal - dt.timedelta(days=365),
               renewal_date=renewal, status=status)  # fmt: skip


def starting(sid: str, start: dt.date, arr: float = 100.0, product: str = "Core") -> dict:
    return sub(
        subscription_id=sid, product=product, arr=arr, start_date=start, renewal_date=start + dt.timedelta(days=365)
    )


def outcomes(subs: list[dict], grace_days: int = 30) -> dict[str, tuple]:
    frame = succession(make_view(accounts=[account()], subs=subs).subs, grace_days)
    return {
        r["subscription_id"]: (r["outcome"], r["successor_id"], r["successor_arr"]) for r in frame.iter_rows(named=True)
    }


# ---- the succession rule -------------------------------------------------------------------


def test_the_bundled_renewals_recorded_as_new_contracts_are_renewals():
    # subs.csv: ACME-S0 (180,000) -> ACME-S1 (240,000) on 2025-11-15, GLOBEX-S0 (300,000) ->
    # GLOBEX-S1 (330,000) on 2026-02-01, UMBRELLA-S0 (430,000) -> UMBRELLA-S1 (450,000) on
    # 2026-06-30: each successor starts on the old renewal_date. STARK-S0 (Analytics add-on) and
    # OLDCO-S1 have no subscription of the same product after them.
    frame = succession(read_customer_360(FIXTURES).subs, grace_days=30)
    got = {
        r["subscription_id"]: (r["outcome"], r["successor_id"], r["successor_arr"]) for r in frame.iter_rows(named=True)
    }
    assert got == {
        "OLDCO-S1": ("churned", None, None),
        "ACME-S0": ("renewed", "ACME-S1", 240000.0),
        "GLOBEX-S0": ("renewed", "GLOBEX-S1", 330000.0),
        "STARK-S0": ("churned", None, None),
        "UMBRELLA-S0": ("renewed", "UMBRELLA-S1", 450000.0),
    }
    assert frame["subscription_id"].to_list() == ["OLDCO-S1", "ACME-S0", "GLOBEX-S0", "STARK-S0", "UMBRELLA-S0"]


def test_grace_period_bounds_and_product_and_lower_arr():
    renewal = dt.date(2026, 3, 1)
    # 30 days after (the grace's last day) renews; 31 days after does not.
    assert outcomes([ended("OLD", renewal), starting("NEW", renewal + dt.timedelta(days=30))])["OLD"][0] == "renewed"
    assert outcomes([ended("OLD", renewal), starting("NEW", renewal + dt.timedelta(days=31))])["OLD"] == (
        "churned",
        None,
        None,
    )
    # Signed early, 30 days before the renewal date, also counts; the grace is configurable.
    assert outcomes([ended("OLD", renewal), starting("NEW", renewal - dt.timedelta(days=30))])["OLD"][0] == "renewed"
    assert (
        outcomes([ended("OLD", renewal), starting("NEW", renewal + dt.timedelta(days=45))], grace_days=45)["OLD"][0]
        == "renewed"
    )
    # Another product is not a successor.
    assert outcomes([ended("OLD", renewal), starting("NEW", renewal, product="Other")])["OLD"][0] == "churned"
    # Lower ARR is a downsell (99.99 < 100), equal ARR a renewal.
    assert outcomes([ended("OLD", renewal), starting("NEW", renewal, arr=99.99)])["OLD"] == ("downsold", "NEW", 99.99)
    assert outcomes([ended("OLD", renewal), starting("NEW", renewal, arr=100.0)])["OLD"][0] == "renewed"
    # `churned` status is ended too: its successor still makes it a renewal.
    assert outcomes([ended("OLD", renewal, status="churned"), starting("NEW", renewal)])["OLD"][0] == "renewed"


def test_the_closest_successor_wins_and_a_consolidation_splits_its_arr():
    renewal = dt.date(2026, 3, 1)
    near, far = (
        starting("NEAR", renewal + dt.timedelta(days=2), arr=50.0),
        starting("FAR", renewal - dt.timedelta(days=10)),
    )
    assert outcomes([ended("OLD", renewal), near, far])["OLD"] == ("downsold", "NEAR", 50.0)
    # Two contracts (100 + 300) merged into one of 360: shares 90 and 270, both downsells;
    # a merge into 400 is two renewals (100 and 300), so no revenue is counted twice.
    merged = outcomes([ended("A1", renewal, 100.0), ended("A2", renewal, 300.0), starting("M", renewal, arr=360.0)])
    assert merged == {"A1": ("downsold", "M", 90.0), "A2": ("downsold", "M", 270.0)}
    merged = outcomes([ended("A1", renewal, 100.0), ended("A2", renewal, 300.0), starting("M", renewal, arr=400.0)])
    assert merged == {"A1": ("renewed", "M", 100.0), "A2": ("renewed", "M", 300.0)}


# ---- the lifecycle -------------------------------------------------------------------------


def states(subs_by_account: dict[str, list[dict]], config: LifecycleConfig = CONFIG) -> dict[str, str]:
    view = make_view(
        accounts=[account(a) for a in subs_by_account],
        subs=[
            {**s, "account_id": a, "subscription_id": f"{a}-{s['subscription_id']}"}
            for a, subs in subs_by_account.items()
            for s in subs
        ],
    )
    return dict(account_states(view, config).select("account_id", "lifecycle").iter_rows())


def test_each_lifecycle_state_from_the_subscriptions():
    assert states(
        {
            "NONE": [],
            "LATER": [sub(start_date=days_ago(-10), renewal_date=days_ago(-375))],  # starts in 10 days
            "NEW": [sub(start_date=days_ago(89))],  # 89 < 90 days: onboarding
            "SETTLED": [sub(start_date=days_ago(90))],  # 90 days: active
            "GONE": [ended("S0", days_ago(100), status="churned")],
            # Ended 5 days ago, its renewal recorded as a contract starting in 10 days (within
            # the grace): between two contracts, not churned; the tenure counts from the first.
            "GAP": [ended("S0", days_ago(5)), starting("S1", days_ago(-10))],
            # The same, but the next contract starts in 31 days: churned until it starts.
            "WINBACK": [ended("S0", days_ago(5)), starting("S1", days_ago(-31))],
        }
    ) == {
        "NONE": "not_started", "LATER": "not_started", "NEW": "onboarding", "SETTLED": "active",
        "GONE": "churned", "GAP": "active", "WINBACK": "churned",
    }  # fmt: skip


def test_the_bundled_fixtures_lifecycle():
    # OLDCO-012's only subscription churned in 2025; NEWCO-011 signed 2026-09-15, 12 days
    # before as_of (onboarding window 90 days in health.yaml); all others are active.
    config = load_health_config(ROOT / "configs" / "customer" / "health.yaml").lifecycle
    assert config == LifecycleConfig(onboarding_days=90, renewal_grace_days=30)
    frame = account_states(read_customer_360(FIXTURES), config)
    got = dict(frame.select("account_id", "lifecycle").iter_rows())
    assert {a: s for a, s in got.items() if s != "active"} == {"NEWCO-011": "onboarding", "OLDCO-012": "churned"}
    assert lifecycle_counts(frame["lifecycle"]) == {"not_started": 0, "onboarding": 1, "active": 10, "churned": 1}
    assert frame.filter(pl.col("account_id") == "ACME-001")["customer_since"].to_list() == [dt.date(2024, 11, 15)]


def test_on_generated_data_no_account_that_left_is_scored_or_signalled(tmp_path):
    # The issue: on generated data most accounts whose subscriptions had all ended scored green.
    # Here every account with started subscriptions but none active is churned: no score, no
    # tier, and no signal but an overdue invoice.
    generate_dataset(tmp_path / "generated", 200, seed=1)
    view = read_customer_360(tmp_path / "generated")
    health_config = load_health_config(ROOT / "configs" / "customer" / "health.yaml")
    frame = score_health(view, health_config)
    active = view.subs.filter(pl.col("status") == "active")["account_id"].unique()
    left = view.subs.filter(~pl.col("account_id").is_in(active.implode()))["account_id"].unique()
    assert left.len() > 10
    gone = frame.filter(pl.col("account_id").is_in(left.implode()))
    assert set(gone["status"]) == {"churned"} and gone["score"].null_count() == gone["tier"].null_count() == gone.height
    fired = detect_signals(
        view, load_signals_config(ROOT / "configs" / "customer" / "signals.yaml"), health_config.lifecycle
    )
    assert set(fired.filter(pl.col("account_id").is_in(left.implode()))["code"]) <= {"SIG_PAYMENT_OVERDUE"}


def test_a_churned_or_not_started_account_gets_no_playbook_or_qbr():
    refuse_not_live({"A": "active", "B": "onboarding"}, "QBR pack")  # live customers pass
    with pytest.raises(GateError) as refused:
        refuse_not_live({"A": "active", "OLD": "churned", "NEW": "not_started"}, "success playbook")
    assert refused.value.code == "ACCOUNT_CHURNED"
    assert str(refused.value) == (
        "account OLD has churned (no active subscription): it gets no success playbook; "
        "account NEW has not started (no subscription has started yet): it gets no success playbook"
    )
    with pytest.raises(GateError) as refused:
        refuse_not_live({"NEW": "not_started"}, "QBR pack")
    assert refused.value.code == "ACCOUNT_NOT_STARTED"


def test_the_cli_refuses_a_churned_account_cleanly_and_writes_nothing(project, capsys):
    for stage in ("c360:load", "c360:health", "c360:signals", "c360:renewals"):
        assert main([stage, "--quiet", *project.args]) == 0
    capsys.readouterr()
    for command, what in (("c360:playbook", "success playbook"), ("c360:qbr", "QBR pack")):
        assert main([command, "--account", "OLDCO-012", "--quiet", *project.args]) == 2
        err = capsys.readouterr().err
        # The user's line is the last one (in-process, Dagster's own step log may precede it).
        assert (
            err.splitlines()[-1]
            == f"c360: ACCOUNT_CHURNED: account OLDCO-012 has churned (no active subscription): it gets no {what}"
        )
        assert "Traceback" not in err
    assert not (project.customer / "playbooks").exists()
    assert not list(project.customer.glob("qbr_*"))
    # health.json says why there is no score instead of a number.
    records = json.loads((project.customer / "health.json").read_text(encoding="utf-8"))["accounts"]
    assert {k: records["OLDCO-012"][k] for k in ("score", "tier", "status", "lifecycle")} == {
        "score": None, "tier": None, "status": "churned", "lifecycle": "churned",
    }  # fmt: skip
    assert {k: records["NEWCO-011"][k] for k in ("score", "tier", "status", "status_reason")} == {
        "score": None, "tier": None, "status": "insufficient_data",
        "status_reason": "not enough data yet: 0 of 5 components have data, the scorecard needs 3",
    }  # fmt: skip
