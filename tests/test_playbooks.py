"""Playbooks: library content and RACI, selection rules and priority, dated plans, escaping.

Expected values are read by hand off configs/customer/playbooks.yaml.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.text import _escaped, close_matches, md_escape, safe_filename
from c360_dagster.domain.qbr.pack import QbrSettings
from c360_dagster.domain.renewals.playbooks import (
    PlanInputs,
    PlaySelection,
    SelectionRule,
    build_playbook,
    build_playbooks,
    load_playbook_library,
    render_playbook_markdown,
    select_playbooks,
    selected_playbooks,
    suggested_playbook_ids,
)

LIBRARY_PATH = Path(__file__).resolve().parents[1] / "configs" / "customer" / "playbooks.yaml"
AS_OF = dt.date(2024, 1, 1)
CODES = (
    "SIG_USAGE_SLIDE_4W",
    "SIG_SUPPORT_SPIKE",
    "SIG_PAYMENT_OVERDUE",
    "SIG_FEATURE_ADOPTION_LOW",
    "SIG_STAKEHOLDER_CHANGE",
    "SIG_RENEWAL_SOON",
    "SIG_EXPANSION_TRAIL",
)


@pytest.fixture(scope="module")
def library():
    return load_playbook_library(LIBRARY_PATH)


def test_library_covers_the_required_sops(library):
    assert set(library.playbooks) == {
        "outreach_cadence",
        "stakeholder_mapping",
        "adoption_plan",
        "training_bundle",
        "exec_sponsor_ask",
        "collections",
        "support_recovery",
        "expansion",
        "light_touch",
        "renewal",
        "get_measured",
        "connect_usage",
        "hear_from_customer",
    }
    for playbook in library.playbooks.values():
        assert playbook.steps and playbook.kpis and playbook.checkpoints and playbook.risks


# (playbook, step index) → (responsible, accountable, consulted, informed), by hand from the YAML.
RACI = {
    ("collections", 0): ("Finance (AR)", "CS Manager", ("CSM",), ("Account Executive",)),
    ("collections", 2): ("Account Executive", "VP Customer Success", ("Finance (AR)", "CSM"), ("CS Manager",)),
    ("exec_sponsor_ask", 2): (
        "VP Customer Success",
        "VP Customer Success",
        ("CSM", "Account Executive", "Customer Executive Sponsor"),
        ("CS Manager",),
    ),
    ("support_recovery", 0): ("Support Lead", "CS Manager", ("CSM",), ("Account Executive",)),
    ("stakeholder_mapping", 0): ("CSM", "CS Manager", ("Account Executive",), ()),
    ("adoption_plan", 1): ("CSM", "CS Manager", ("Customer Champion",), ("Account Executive",)),
    ("training_bundle", 1): ("Enablement", "CS Manager", ("CSM", "Customer Administrator"), ("Customer Champion",)),
    ("outreach_cadence", 2): ("CS Manager", "VP Customer Success", ("CSM",), ("Account Executive",)),
    ("expansion", 2): (
        "Account Executive",
        "VP Customer Success",
        ("CSM", "Solutions Engineer"),
        ("Customer Executive Sponsor",),
    ),
    ("light_touch", 0): ("CSM", "CS Manager", (), ("Account Executive",)),
    ("get_measured", 0): (
        "CSM",
        "CS Manager",
        ("Customer Administrator", "Solutions Engineer"),
        ("Account Executive",),
    ),
    ("hear_from_customer", 1): ("CSM", "CS Manager", ("Customer Champion",), ("Product Manager",)),
    ("renewal", 1): (
        "Account Executive",
        "VP Customer Success",
        ("CSM", "Customer Executive Sponsor"),
        ("CS Manager",),
    ),
}


@pytest.mark.parametrize(("playbook_id", "index"), sorted(RACI))
def test_raci_content_per_playbook(library, playbook_id, index):
    result = build_playbook(
        {"account_id": "A1", "name": "Acme"},
        health_record("amber", 55),
        [],
        [],
        _forced(library, playbook_id),
        AS_OF,
        contacts=EVERYONE,
    )
    step = library.playbooks[playbook_id].steps[index]
    entry = next(e for e in result.raci if e.step == step.title)
    assert (entry.responsible, entry.accountable, entry.consulted, entry.informed) == RACI[(playbook_id, index)]
    assert entry.responsible == step.owner


def _forced(library, playbook_id):
    """The library with one rule that always picks `playbook_id`."""
    return dataclasses.replace(library, rules=(SelectionRule(playbook_id, None, None),))


@pytest.mark.parametrize(
    ("tier", "codes", "expected"),
    [
        ("green", [], ["light_touch"]),
        ("green", ["SIG_RENEWAL_SOON"], ["light_touch"]),  # no rule uses it
        ("amber", [], ["outreach_cadence"]),
        ("red", [], ["exec_sponsor_ask", "outreach_cadence"]),
        ("green", ["SIG_EXPANSION_TRAIL"], ["expansion"]),
        ("amber", ["SIG_EXPANSION_TRAIL"], ["outreach_cadence"]),  # no upsell to a troubled account
        ("green", ["SIG_FEATURE_ADOPTION_LOW", "SIG_EXPANSION_TRAIL"], ["training_bundle", "expansion"]),
        (
            "red",
            ["SIG_USAGE_SLIDE_4W", "SIG_STAKEHOLDER_CHANGE", "SIG_SUPPORT_SPIKE", "SIG_PAYMENT_OVERDUE"],
            [
                "collections",
                "exec_sponsor_ask",
                "support_recovery",
                "stakeholder_mapping",
                "adoption_plan",
                "outreach_cadence",
            ],
        ),
        ("green", ["SIG_PAYMENT_OVERDUE"], ["collections"]),
        # No score yet: measure first; tier rules never match, signal rules still do.
        (None, [], ["get_measured"]),
        (None, ["SIG_SUPPORT_SPIKE"], ["get_measured", "support_recovery"]),
        (None, ["SIG_PAYMENT_OVERDUE", "SIG_EXPANSION_TRAIL"], ["collections", "get_measured"]),
    ],
)
def test_selection_rules_and_priority(library, tier, codes, expected):
    assert select_playbooks(tier, codes, library) == expected


@pytest.mark.parametrize(
    ("tier", "codes", "unmeasured", "expected"),
    [
        # SOYLENT-006 in the fixtures: amber, an overdue invoice, no usage rows.
        ("amber", ["SIG_PAYMENT_OVERDUE"], ["adoption", "value"], ["collections", "connect_usage", "outreach_cadence"]),
        ("green", [], ["value"], ["connect_usage"]),  # any of the listed components
        ("red", [], ["adoption"], ["exec_sponsor_ask", "connect_usage", "outreach_cadence"]),
        # HOOLI-007 in the fixtures: green, room to expand, no survey answer: expansion, then ask.
        ("green", ["SIG_EXPANSION_TRAIL"], ["sentiment"], ["expansion", "hear_from_customer"]),
        ("green", [], ["sentiment"], ["hear_from_customer"]),  # not the light touch that assumes all is well
        ("amber", [], ["adoption", "sentiment"], ["connect_usage", "outreach_cadence", "hear_from_customer"]),
        (None, [], ["adoption", "value"], ["get_measured"]),  # no score at all: get measured, once
    ],
)
def test_a_score_without_usage_data_gets_the_play_that_connects_it(library, tier, codes, unmeasured, expected):
    assert select_playbooks(tier, codes, library, unmeasured=unmeasured) == expected


def test_a_due_renewal_adds_the_renewal_play_after_collections(library):
    assert select_playbooks("amber", [], library, renewal_due=True) == ["renewal", "outreach_cadence"]
    assert select_playbooks("green", [], library, renewal_due=True) == ["renewal"]
    assert select_playbooks("red", ["SIG_PAYMENT_OVERDUE"], library, renewal_due=True) == [
        "collections",
        "renewal",
        "exec_sponsor_ask",
        "outreach_cadence",
    ]


@pytest.mark.untraced
def test_columnar_selection_agrees_with_select_playbooks_on_every_combination(library):
    combos = [
        (tier, codes, due, unmeasured)
        for tier in ("red", "amber", "green", None)
        for size in range(len(CODES) + 1)
        for codes in itertools.combinations(CODES, size)
        for due in (False, True)
        for unmeasured in ((), ("value",), ("sentiment",))
    ]
    ids = [f"A{i:04d}" for i in range(len(combos))]
    health = pl.DataFrame(
        {
            "account_id": ids,
            "tier": [t for t, _, _, _ in combos],
            "renewal_due": [d for _, _, d, _ in combos],
            "adoption_score": [50.0] * len(combos),
            "value_score": [None if "value" in u else 50.0 for _, _, _, u in combos],
            "sentiment_score": [None if "sentiment" in u else 50.0 for _, _, _, u in combos],
        },
        schema={
            "account_id": pl.Utf8,
            "tier": pl.Utf8,
            "renewal_due": pl.Boolean,
            "adoption_score": pl.Float64,
            "value_score": pl.Float64,
            "sentiment_score": pl.Float64,
        },
    )
    signals = pl.DataFrame(
        [{"account_id": i, "code": c} for i, (_, codes, _, _) in zip(ids, combos, strict=True) for c in codes],
        schema={"account_id": pl.Utf8, "code": pl.Utf8},
    )
    columnar = dict(suggested_playbook_ids(health, signals, library).iter_rows())
    assert len(columnar) == 4 * 2 ** len(CODES) * 2 * 3
    by_hand = [_rules_read_one_by_one(library, *combo) for combo in combos]
    for account_id, combo, plays in zip(ids, combos, by_hand, strict=True):
        assert columnar[account_id] == plays[0], combo
    # A batch's plans pick every account's plays in one query: each as the rules say, and as when
    # picked alone (one account of each tier, renewal and unmeasured component, with no signal and
    # with every signal: a query of one row, a null tier among them).
    assert selected_playbooks([PlaySelection(t, c, d, u) for t, c, d, u in combos], library) == by_hand
    for (tier, codes, due, unmeasured), plays in zip(combos, by_hand, strict=True):
        if len(codes) in (0, len(CODES)):
            assert select_playbooks(tier, codes, library, renewal_due=due, unmeasured=unmeasured) == plays


def _rules_read_one_by_one(library, tier, codes, due, unmeasured) -> list[str]:
    """The library's rules as docs/renewals.md ("Selection rules and priority") states them, read in order for one account: every
    rule whose conditions all hold adds its play once; none holds, the fallback."""
    plays: list[str] = []
    for rule in library.rules:
        holds = (
            (rule.tiers is None or tier in rule.tiers)
            and (rule.codes_any is None or any(code in codes for code in rule.codes_any))
            and (due or not rule.renewal_due)
            and (tier is None or not rule.unscored)
            and (
                rule.unmeasured_any is None or (tier is not None and any(c in unmeasured for c in rule.unmeasured_any))
            )
        )
        if holds and rule.playbook not in plays:
            plays.append(rule.playbook)
    return plays or [library.fallback]


# A customer with a contact (unnamed) in each role the library names: its steps keep the
# library's words and roles.
EVERYONE = [
    {"name": None, "role": role, "started_on": dt.date(2020, 1, 1), "ended_on": None}
    for role in ("champion", "exec_sponsor", "admin")
]


def health_record(tier, score, **components):
    """A health record shaped like health.json: `components.<name>.{score, evidence}`."""
    return {"tier": tier, "score": score, "total": 100, "components": components}


GREEN = health_record("green", 88, adoption={"score": 90.0, "evidence": {"utilisation_pct": 75.5}})


def test_green_account_without_signals_gets_a_dated_light_touch_plan(library):
    result = build_playbook({"account_id": "A1", "name": "Acme"}, GREEN, [], [], library, AS_OF, contacts=EVERYONE)
    assert result.plays == ("light_touch",)
    # due_days 14 and 45 in the YAML: 2024-01-15 and 2024-02-15.
    assert [(s.title, s.owner_role, s.due_date) for s in result.steps] == [
        ("Send a summary of the value delivered so far to the champion", "CSM", dt.date(2024, 1, 15)),
        ("Quarterly check-in with the champion", "CSM", dt.date(2024, 2, 15)),
    ]
    # +90 is Sunday 2024-03-31: rolled to Monday.
    assert [(c.date, c.what) for c in result.checkpoints] == [
        (dt.date(2024, 4, 1), "Light-touch plan: Quarterly review of the health score")
    ]
    assert "no active signals" in result.summary
    assert result.summary.startswith("Acme is green with a health score of 88/100 and has no active signals.")


HELD = "amber, not green: adoption and value (45% of the scorecard's weight) are not measured; green needs at least 70% measured"


def test_a_plan_held_at_amber_says_too_little_was_measured_wherever_it_shows_the_tier(library):
    # SOYLENT-006 in the fixtures: 84 points, amber only because too little of it was measured.
    held = health_record("amber", 84) | {"tier_reason": HELD}
    result = build_playbook({"account_id": "S1", "name": "Soylent"}, held, [], [], library, AS_OF, EVERYONE)
    assert result.to_dict()["tier_reason"] == HELD
    assert result.summary.startswith("Soylent is amber (too little measured) with a health score of 84/100 and ")
    markdown = render_playbook_markdown(result)
    assert "Account S1 · as of 1 Jan 2024 · tier amber (too little measured) · " in markdown
    # Plays by title, in priority order; their ids are the JSON's (config keys, not words).
    assert "| # | Play |\n|---|---|\n| 1 | Outreach cadence |\n" in markdown and "outreach_cadence" not in markdown
    # A person's override to red makes the computed amber's reason moot: the plan says red alone.
    red = build_playbook({"account_id": "S1", "name": "Soylent"}, held | {"tier": "red"}, [], [], library, AS_OF)
    assert red.tier_reason is None and red.summary.startswith("Soylent is red with a health score of 84/100 and ")
    assert "· tier red · " in render_playbook_markdown(red)


def test_a_scored_account_without_usage_data_gets_a_step_to_connect_it(library):
    # SOYLENT-006 in the fixtures: scored on billing, support and surveys; no usage rows, so
    # health.json says adoption and value are not available.
    unmeasured = {"available": False, "score": None, "evidence": {"avg_active_users": None}}
    held = health_record("amber", 84, adoption=unmeasured, value=unmeasured) | {"tier_reason": HELD}
    signals = [{"code": "SIG_PAYMENT_OVERDUE"}]
    result = build_playbook({"account_id": "S1", "name": "Soylent"}, held, signals, [], library, AS_OF, EVERYONE)
    assert result.plays == ("collections", "connect_usage", "outreach_cadence")
    # due_days 5 and 21 from Monday 2024-01-01: Saturday 6 Jan rolls to Monday 8 Jan; 22 Jan.
    assert [(s.due_date, s.title) for s in result.steps if s.playbook == "connect_usage"] == [
        (dt.date(2024, 1, 8), "Connect the weekly usage export together with the administrator"),
        (dt.date(2024, 1, 22), "Check that the first weeks of usage arrived complete and count in the health score"),
    ]
    assert ("Weekly active users", None, "no data") in [(k.name, k.current, k.status) for k in result.kpis]
    # The same account with usage measured gets no such play.
    measured = build_playbook(
        {"account_id": "S1", "name": "Soylent"}, health_record("amber", 84), signals, [], library, AS_OF
    )
    assert "connect_usage" not in measured.plays


def test_an_account_without_a_score_gets_a_plan_to_get_measured_never_a_healthy_one(library):
    # No score is no verdict: the plan says why there is none and its steps are about getting the
    # data that scores the account (NEWCO-011 in the fixtures), not about keeping it healthy.
    reason = "not enough data yet: 0 of 5 components have data, the scorecard needs 3"
    unscored = health_record(None, None) | {"status_reason": reason}
    result = build_playbook({"account_id": "N1", "name": "NewCo"}, unscored, [], [], library, AS_OF, contacts=EVERYONE)
    assert result.plays == ("get_measured",)
    assert result.summary.startswith(f"NewCo has no health score ({reason}) and has no active signals. Plan: Getting")
    assert "unscored" not in result.summary
    # due_days 5, 10, 14 and 30 from Monday 2024-01-01; +5 is Saturday 6 Jan: Monday 8 Jan.
    assert [(s.due_date, s.title) for s in result.steps] == [
        (dt.date(2024, 1, 8), "Connect the weekly usage export together with the administrator"),
        (dt.date(2024, 1, 11), "Hold the onboarding kick-off and agree the first goals with the champion"),
        (dt.date(2024, 1, 15), "Walk the administrator through opening support cases and the agreed response times"),
        (dt.date(2024, 1, 31), "Send the first satisfaction survey to the champion"),
    ]
    assert [(k.name, k.status) for k in result.kpis] == [
        ("Weekly active users", "no data"),
        ("Latest NPS answer", "no data"),
    ]


def test_steps_are_dated_from_as_of_and_ordered_by_due_date(library):
    health = health_record("red", 31)
    result = build_playbook(
        {"account_id": "A1", "name": "Acme"}, health, [{"code": "SIG_PAYMENT_OVERDUE"}], [], library, AS_OF, EVERYONE
    )
    assert result.plays == ("collections", "exec_sponsor_ask", "outreach_cadence")
    # collections 2,5,10,21; exec 3,7,21,24; outreach 7,10,30 from Monday 2024-01-01 → sorted,
    # ties in priority order; +5 is Saturday 2024-01-06, due the Monday after (+7).
    assert [(s.playbook, (s.due_date - AS_OF).days) for s in result.steps] == [
        ("collections", 2),
        ("exec_sponsor_ask", 3),
        ("collections", 7),
        ("exec_sponsor_ask", 7),
        ("outreach_cadence", 7),
        ("collections", 10),
        ("outreach_cadence", 10),
        ("collections", 21),
        ("exec_sponsor_ask", 21),
        ("exec_sponsor_ask", 24),
        ("outreach_cadence", 30),
    ]
    assert [e.step for e in result.raci] == [s.title for s in result.steps]
    assert all(s.due_date.weekday() < 5 for s in result.steps)


@pytest.mark.parametrize("as_of", [dt.date(2024, 1, 5) + dt.timedelta(days=n) for n in range(7)])
def test_every_due_date_is_a_business_day(library, as_of):
    codes = [{"code": c} for c in CODES]
    result = build_playbook(
        {"account_id": "A1", "name": "Acme"}, health_record("red", 20), codes, [], library, as_of, EVERYONE
    )
    dates = [s.due_date for s in result.steps] + [c.date for c in result.checkpoints]
    assert dates and all(day.weekday() < 5 for day in dates)
    # Rolled forward, never back, and never more than two days.
    assert all(0 <= (s.due_date - as_of).days - step_days(library, s) <= 2 for s in result.steps)


def step_days(library, step):
    return next(spec.due_days for spec in library.playbooks[step.playbook].steps if spec.title == step.title)


# ACME-001 in the fixtures: its champion left on 2026-08-20, a new one started on 2026-09-07.
ACME = {"account_id": "ACME-001", "name": "Acme Corporation", "csm_owner": "Dana Reyes"}
ACME_CONTACTS = [
    {"name": "Jordan Miles", "role": "champion", "started_on": dt.date(2023, 1, 10), "ended_on": dt.date(2026, 8, 20)},
    {"name": "Sam Ortiz", "role": "champion", "started_on": dt.date(2026, 9, 7), "ended_on": None},
    {"name": "Alex Kim", "role": "exec_sponsor", "started_on": dt.date(2022, 5, 1), "ended_on": None},
    {"name": "Robin Park", "role": "admin", "started_on": dt.date(2023, 1, 10), "ended_on": None},
]
ACME_RENEWAL = {  # 49 days out, forecast Low, auto-renew off
    "subscription_id": "ACME-S1",
    "product": "Platform",
    "renewal_date": dt.date(2026, 11, 15),
    "arr": 240000.0,
    "currency": "USD",
    "bucket": "Low",
    "auto_renew": False,
}
SEP27 = dt.date(2026, 9, 27)


def acme_plan(library, renewals=(ACME_RENEWAL,), contacts=ACME_CONTACTS):
    signals = [{"code": "SIG_STAKEHOLDER_CHANGE"}, {"code": "SIG_USAGE_SLIDE_4W"}]
    return build_playbook(ACME, health_record("amber", 68), signals, list(renewals), library, SEP27, contacts=contacts)


def test_a_step_the_data_shows_as_done_is_left_out_and_listed_as_done(library):
    plan = acme_plan(library)
    titles = [s.title for s in plan.steps]
    assert "Identify and enable a new champion" not in titles
    assert "Map current contacts by role, influence and sentiment" in titles  # not shown done by the data
    assert [(d.playbook, d.what, d.evidence) for d in plan.done] == [
        ("stakeholder_mapping", "Identify and enable a new champion", "Sam Ortiz is the champion since 7 Sep 2026"),
        ("stakeholder_mapping", "New champion named", "Sam Ortiz is the champion since 7 Sep 2026"),
    ]
    assert not any("New champion named" in c.what for c in plan.checkpoints)
    text = render_playbook_markdown(plan)
    assert (
        "## Already done" in text
        and "- Identify and enable a new champion (Stakeholder mapping): Sam Ortiz is the champion since 7 Sep 2026."
        in text
    )
    # A champion who started long ago is not new: the step stays open.
    old = [{**c, "started_on": dt.date(2025, 1, 1)} if c["name"] == "Sam Ortiz" else c for c in ACME_CONTACTS]
    assert "Identify and enable a new champion" in [s.title for s in acme_plan(library, contacts=old).steps]
    assert acme_plan(library, contacts=old).done == ()


def test_a_due_renewal_adds_the_renewal_play(library):
    plan = acme_plan(library)
    assert plan.plays == ("renewal", "stakeholder_mapping", "adoption_plan", "outreach_cadence")
    assert "Auto-renew is off for ACME-S1." in plan.summary
    # No probability given: the bucket alone.
    assert "15 Nov 2026, with ARR USD 240,000 and forecast Low." in plan.summary
    known = acme_plan(library, [{**ACME_RENEWAL, "probability": 0.25}])
    assert "the first on 15 Nov 2026, with ARR USD 240,000 and forecast Low (25% likely to renew)." in known.summary
    assert (ACME_RENEWAL["renewal_date"], "Renewal of Platform (ACME-S1), forecast Low (25% likely to renew)") in [
        (c.date, c.what) for c in known.checkpoints
    ]
    medium_off = {**ACME_RENEWAL, "bucket": "Medium"}  # auto-renew off alone is enough
    assert acme_plan(library, [medium_off]).plays[0] == "renewal"
    medium_on = {**medium_off, "auto_renew": True}
    assert "renewal" not in acme_plan(library, [medium_on]).plays
    far = {**ACME_RENEWAL, "renewal_date": SEP27 + dt.timedelta(days=91)}  # outside the 90-day window
    assert "renewal" not in acme_plan(library, [far]).plays
    edge = {**ACME_RENEWAL, "renewal_date": SEP27 + dt.timedelta(days=90)}
    assert acme_plan(library, [edge]).plays[0] == "renewal"


def test_a_batch_of_plans_gives_each_account_the_plan_it_gets_alone(library):
    # A batch's plays and due renewals are worked out in one query each: accounts with and
    # without signals, due renewals, contacts and measured components side by side.
    not_due = {**ACME_RENEWAL, "bucket": "Medium", "auto_renew": True}
    far = {**ACME_RENEWAL, "renewal_date": SEP27 + dt.timedelta(days=91)}
    sooner = {**ACME_RENEWAL, "subscription_id": "ACME-S2", "renewal_date": dt.date(2026, 10, 20)}
    unmeasured = health_record("green", 80, sentiment={"score": None, "available": False})
    accounts = [
        PlanInputs(
            ACME, health_record("amber", 68), [{"code": "SIG_STAKEHOLDER_CHANGE"}], [ACME_RENEWAL], ACME_CONTACTS
        ),
        PlanInputs(
            {"account_id": "B1", "name": "Beta"}, health_record("red", 31), [{"code": "SIG_PAYMENT_OVERDUE"}], []
        ),
        PlanInputs({"account_id": "C1", "name": "Gamma"}, GREEN, [], [not_due, far], EVERYONE),
        PlanInputs({"account_id": "D1", "name": "Delta"}, unmeasured, [], [far, sooner, ACME_RENEWAL]),
    ]
    batch = build_playbooks(accounts, library, SEP27)
    assert batch == [
        build_playbook(one.account, one.health_record, one.signals, one.renewals, library, SEP27, one.contacts)
        for one in accounts
    ]
    assert [plan.plays for plan in batch] == [
        ("renewal", "stakeholder_mapping", "outreach_cadence"),
        ("collections", "exec_sponsor_ask", "outreach_cadence"),
        ("light_touch",),
        ("renewal", "hear_from_customer"),
    ]
    # Delta's plan keeps its steps before its first due renewal (20 Oct), not the later one.
    assert max(step.due_date for step in batch[3].steps if step.playbook == "renewal") < dt.date(2026, 10, 20)
    assert build_playbooks([], library, SEP27) == []


def test_owners_are_the_people_the_data_names(library):
    plan = acme_plan(library)
    owners = {s.title: s.owner for s in plan.steps}
    assert owners["Map current contacts by role, influence and sentiment"] == "Dana Reyes (CSM)"
    assert (
        owners["Agree the renewal date and the scope of the next term with the executive sponsor"]
        == "Account Executive"
    )
    raci = {e.step: e for e in plan.raci}
    assert raci["Agree the renewal date and the scope of the next term with the executive sponsor"].consulted == (
        "Dana Reyes (CSM)",
        "Alex Kim (Customer Executive Sponsor)",
    )
    # The current champion, not the one who left.
    assert (
        "Sam Ortiz (Customer Champion)"
        in raci["Agree an adoption plan with per-team targets with the champion"].consulted
    )
    assert all(s.owner_role in library_roles(library) for s in plan.steps)
    unnamed = build_playbook({"account_id": "A1", "name": "Acme"}, GREEN, [], [], library, AS_OF)
    assert {s.owner for s in unnamed.steps} == {"CSM"}


def library_roles(library):
    return {step.owner for play in library.playbooks.values() for step in play.steps}


def test_kpis_take_current_values_from_health_and_first_play_sets_shared_targets(library):
    health = health_record(
        "red", 31, commercial={"score": 85.0, "evidence": {"max_days_overdue": 45, "overdue_amount": 10.0}}
    )
    result = build_playbook(
        {"account_id": "A1", "name": "Acme"}, health, [{"code": "SIG_PAYMENT_OVERDUE"}], [], library, AS_OF, EVERYONE
    )
    kpis = [(k.metric, k.current, k.target, k.status) for k in result.kpis]
    # 45 days > 0: not met; commercial 85 ≥ 80: met; score from exec_sponsor_ask (60), not outreach (70).
    assert kpis == [
        ("components.commercial.evidence.max_days_overdue", 45.0, 0.0, "not met"),
        ("components.commercial.score", 85.0, 80.0, "met"),
        ("score", 31.0, 60.0, "not met"),
    ]
    missing = build_playbook(
        {"account_id": "A1", "name": "Acme"},
        health_record("green", None),
        [{"code": "SIG_EXPANSION_TRAIL"}],
        [],
        library,
        AS_OF,
    )
    assert [(k.metric, k.current, k.status) for k in missing.kpis] == [
        ("components.adoption.evidence.utilisation_pct", None, "no data")
    ]
    green = build_playbook(
        {"account_id": "A1", "name": "Acme"}, GREEN, [{"code": "SIG_EXPANSION_TRAIL"}], [], library, AS_OF
    )
    assert [(k.current, k.status) for k in green.kpis] == [(75.5, "not met")]  # 75.5 < 90


def test_renewals_become_checkpoints_and_enter_the_summary(library):
    renewals = [
        {
            "subscription_id": "S2",
            "product": "Core",
            "renewal_date": "2024-03-01",
            "arr": 1000.0,
            "currency": "USD",
            "bucket": "Low",
        },
        {
            "subscription_id": "S1",
            "product": "Add-on",
            "renewal_date": dt.date(2024, 2, 1),
            "arr": 500.0,
            "currency": "USD",
            "bucket": "Low",
        },
    ]
    result = build_playbook({"account_id": "A1", "name": "Acme"}, GREEN, [], renewals, library, AS_OF)
    assert (dt.date(2024, 2, 1), "Renewal of Add-on (S1), forecast Low") in [
        (c.date, c.what) for c in result.checkpoints
    ]
    assert (
        "2 subscriptions renew in the forecast window, the first on 1 Feb 2024, with ARR USD 1,500 and forecast Low."
        in result.summary
    )


HOSTILE = "Evil | Corp\n# <script>alert(1)</script>"


def hostile_plan(library):
    renewals = [
        {
            "subscription_id": "S1",
            "product": '=HYPERLINK("http://x")',
            "renewal_date": "2024-02-01",
            "arr": 10.0,
            "currency": "USD",
            "bucket": "Low",
        },
    ]
    return build_playbook({"account_id": "A1", "name": HOSTILE}, GREEN, [], renewals, library, AS_OF)


def test_markdown_escapes_a_hostile_account_name(library):
    text = render_playbook_markdown(hostile_plan(library))
    assert "<script>" not in text
    assert text.startswith("# Success plan: Evil \\| Corp # &lt;script&gt;alert(1)&lt;/script&gt;\n")
    assert '| 1 Feb 2024 | Renewal of =HYPERLINK("http://x") (S1), forecast Low |' in text


def test_markdown_and_json_are_byte_identical_on_rerun(library):
    first = hostile_plan(library)
    again = hostile_plan(load_playbook_library(LIBRARY_PATH))
    assert render_playbook_markdown(first) == render_playbook_markdown(again)
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(again.to_dict(), sort_keys=True)
    # Its Low renewal 31 days out picks the renewal play.
    assert first.to_dict()["steps"][0] == {
        "playbook": "renewal",
        "title": "Review the renewal's risks, open invoices and terms with the account team",
        "owner_role": "CSM",
        "owner": "CSM",
        "due_date": "2024-01-03",
    }


def test_joint_steps_are_worded_for_the_customer_who_reads_them(library):
    # A step with a customer role in its RACI is a joint step: it reaches the customer's QBR
    # deck and roadmap, so it never speaks of "the customer" in the third person.
    customer_roles = set(QbrSettings().customer_roles)
    joint = [
        step.title
        for play in library.playbooks.values()
        for step in play.steps
        if customer_roles & {step.owner, step.accountable, *step.consulted, *step.informed}
    ]
    assert len(joint) > 10
    assert [title for title in joint if "the customer" in title or "customer's" in title] == []
    # Nor in the seller's words, our judgement of the account or our jargon: the customer is a
    # partner in the step, not the target of a sale or a rescue, and never hears of "signals".
    assert [title for title in joint if re.search(SELLER_WORDS, title, re.IGNORECASE)] == []


SELLER_WORDS = (
    r"\bproposals?\b|decision process|\bsign(ed)?\b|\bblocks?\b|\brecovery\b|\brescue\b|\bsave\b|upsell|"
    r"\bdeal\b|\bclose\b|negotiat|business case|\bpitch|\bat risk\b|\bchurn|\bquota\b|\bpipeline\b|\bsignals?\b"
)


def test_escaping_helpers():
    assert md_escape("a|b\nc") == "a\\|b c"
    assert md_escape("=SUM(A1)") == "'=SUM(A1)"
    assert md_escape("@cmd") == "'@cmd" and md_escape("-1+1") == "'-1+1" and md_escape("+x") == "'+x"
    # A plain number is no formula, and our own signed figures print as they are.
    assert md_escape("-5") == "-5" and md_escape("+3.5%") == "+3.5%" and md_escape("-1,200.5") == "-1,200.5"
    assert md_escape(-5) == "-5" and md_escape(None) == ""
    assert md_escape("<b>[x](y) *z* _w_ `c`</b>") == "&lt;b&gt;\\[x\\](y) \\*z\\* \\_w\\_ \\`c\\`&lt;/b&gt;"
    assert md_escape("# title\r\n- item") == "\\# title - item"
    # An underscore inside a word is never emphasis in Markdown: it stays as written.
    assert md_escape("mid_market outreach_cadence") == "mid_market outreach_cadence"
    assert md_escape("_x a__b c_") == "\\_x a\\_\\_b c\\_"
    assert md_escape("  -x") == " '-x" and md_escape(" #x") == " \\#x" and md_escape("a  b\tc") == "a b c"
    assert safe_filename("../etc/pass wd") == "_etc_pass_wd"
    assert safe_filename("...") == "_" and safe_filename("ACME-001") == "ACME-001"
    assert len(safe_filename("x" * 100)) == 64


@pytest.mark.untraced
def test_ascii_text_skips_escaping_only_when_every_rule_would_leave_it_as_it_is():
    # md_escape returns ASCII text untouched when none of its characters needs escaping; every
    # string of up to two ASCII characters, and of up to three of the characters the rules look
    # at, must come out as the full escaping makes it.
    everything = [chr(code) for code in range(128)]
    looked_at = list(" \t\n\x0b\x1c#=+-@_a1&<>\\`*[]|~.,%")
    strings = [
        "".join(chars)
        for alphabet, longest in ((everything, 2), (looked_at, 3))
        for length in range(longest + 1)
        for chars in itertools.product(alphabet, repeat=length)
    ]
    assert [md_escape(text) for text in strings] == [_escaped(text) for text in strings]
    plain = "ACC-0000010 renews 2026-10-01, USD 1,200 (84%)"
    assert md_escape(plain) is plain


def test_close_matches_suggest_known_ids():
    known = ["ACME-001", "ACME-002", "BETA-001", "Globex"]
    assert close_matches("acme-01", known) == ["ACME-001", "ACME-002"]
    assert close_matches("globex", known) == ["Globex"]
    assert close_matches("zzzz", known) == []


def write_library(tmp_path: Path, edit) -> Path:
    raw = yaml.load(LIBRARY_PATH.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    edit(raw)
    path = tmp_path / "playbooks.yaml"
    path.write_text(yaml.dump(raw, Dumper=yaml.CSafeDumper), encoding="utf-8")  # libyaml: 22 KB in C, not Python
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda r: r["playbooks"][0]["steps"][0].update(owner="Janitor"), "playbooks.0.steps.0.owner"),
        (lambda r: r["playbooks"][1]["steps"][2]["consulted"].append("Intern"), "playbooks.1.steps.2.consulted.3"),
        (lambda r: r["selection"]["rules"][3].update(playbook="nope"), "selection.rules.3.playbook"),
        (lambda r: r["selection"].update(fallback="nope"), "selection.fallback"),
        (lambda r: r["playbooks"][2].update(id="collections"), "playbooks.2.id"),
        (lambda r: r["playbooks"][0]["steps"][0].update(due_days=-1), "playbooks.0.steps.0.due_days"),
        (lambda r: r["playbooks"][0]["kpis"][0].pop("target"), "playbooks.0.kpis.0.target"),
        (lambda r: r["selection"]["rules"][1].update(tiers=["purple"]), "selection.rules.1.tiers.0"),
        (lambda r: r["playbooks"][0].update(owner="x"), "playbooks.0.owner"),
        (lambda r: r["people"].update(Janitor={"account": "csm_owner"}), "people.Janitor"),
        (lambda r: r["people"].update(CSM={"contact_role": "boss"}), "people.CSM"),
        (lambda r: r["selection"]["renewal_due"].update(buckets=["Doubtful"]), "selection.renewal_due.buckets.0"),
        (lambda r: r["selection"]["rules"][1].update(renewal_due=False), "selection.rules.1.renewal_due"),
        (lambda r: r["selection"]["rules"][2].update(tiers=["green"]), "selection.rules.2"),  # unscored and a tier
        (lambda r: r["selection"]["rules"][4].update(unmeasured_any=["usage"]), "selection.rules.4.unmeasured_any.0"),
        (lambda r: r["selection"]["rules"][2].update(unmeasured_any=["adoption"]), "selection.rules.2"),  # and unscored
        (lambda r: r["selection"]["rules"][4].update(unmeasured_any=[]), "selection.rules.4.unmeasured_any"),
        (
            lambda r: r["playbooks"][3]["steps"][2].update(done_when={"new_contact": "boss"}),
            "playbooks.3.steps.2.done_when.new_contact",
        ),
    ],
)
def test_library_errors_name_the_key(tmp_path, edit, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_playbook_library(write_library(tmp_path, edit))


def test_an_unknown_component_is_a_clear_config_error(tmp_path):
    path = write_library(tmp_path, lambda r: r["selection"]["rules"][4].update(unmeasured_any=["adoption", "usage"]))
    with pytest.raises(ConfigError) as error:
        load_playbook_library(path)
    assert str(error.value) == (
        f"{path}: selection.rules.4.unmeasured_any.1: unknown health component 'usage' "
        "(components: adoption, value, support, commercial, sentiment)"
    )


def test_a_hostile_csm_name_stays_one_visible_table_cell(library):
    account = {**ACME, "csm_owner": "Eve | \u202eliam\n# x"}
    text = render_playbook_markdown(acme_plan_for(library, account))
    assert "| Eve \\| &lt;U+202E&gt;liam # x (CSM) |" in text


def acme_plan_for(library, account):
    return build_playbook(
        account, health_record("amber", 68), [], [ACME_RENEWAL], library, SEP27, contacts=ACME_CONTACTS
    )


def test_renewal_play_dates_stay_before_the_renewal(library):
    soon = {**ACME_RENEWAL, "renewal_date": dt.date(2026, 10, 7)}  # Wednesday, 10 days after Sunday 2026-09-27
    plan = acme_plan(library, [soon])
    renewal_steps = [(s.title[:20], s.due_date) for s in plan.steps if s.playbook == "renewal"]
    # +2, +5 as usual; +14 (Monday 2026-10-12) and +30 capped at Tuesday 2026-10-06, the last business day before.
    assert renewal_steps == [
        ("Review the renewal's", dt.date(2026, 9, 29)),
        ("Agree the renewal da", dt.date(2026, 10, 2)),
        ("Share the value deli", dt.date(2026, 10, 6)),
        ("Complete the renewal", dt.date(2026, 10, 6)),
    ]
    assert (dt.date(2026, 10, 6), "Renewal plan: Renewal completed or its open points written down") in [
        (c.date, c.what) for c in plan.checkpoints
    ]
    other = [s.due_date for s in plan.steps if s.title == "Meet the new or remaining decision makers"]
    assert other == [dt.date(2026, 10, 12)]  # other plays keep their own dates
    # A renewal on a Monday: the Friday before.
    monday = acme_plan(library, [{**ACME_RENEWAL, "renewal_date": dt.date(2026, 10, 12)}])
    assert max(s.due_date for s in monday.steps if s.playbook == "renewal") == dt.date(2026, 10, 9)


def test_a_step_names_only_the_customer_people_on_record(library):
    # NEWCO-011 in the fixtures: green, no champion and no sponsor on record, an admin since
    # 2026-09-15 (Olu Ade). The light-touch plan's "with the champion" steps go to who is there.
    newco = {"account_id": "NEWCO-011", "name": "NewCo", "csm_owner": "Ines Ford"}
    admin = {"name": "Olu Ade", "role": "admin", "started_on": dt.date(2026, 9, 15), "ended_on": None}
    plan = build_playbook(newco, health_record("green", 80), [], [], library, SEP27, contacts=[admin])
    titles = [step.title for step in plan.steps]
    assert "Quarterly check-in with the administrator" in titles
    assert "Send a summary of the value delivered so far to the administrator" in titles
    assert not [title for title in titles if "champion" in title]
    check_in = next(entry for entry in plan.raci if entry.step == "Quarterly check-in with the administrator")
    assert check_in.consulted == ("Olu Ade (Customer Administrator)",)
    assert not [
        e for e in plan.raci for who in (e.responsible, e.accountable, *e.consulted, *e.informed) if "Champion" in who
    ]


def test_with_no_customer_contact_on_record_a_step_says_so_and_names_who_acts(library):
    # An account with no contact at all: no champion, sponsor or admin is invented. A step that
    # involved one keeps its owner on our side (the CSM), says no contact is on record, and is no
    # longer a joint step (no customer role in its RACI), so no customer deck shows it.
    newco = {"account_id": "NEWCO-011", "name": "NewCo", "csm_owner": "Ines Ford"}
    alone = build_playbook(newco, health_record("green", 80), [], [], library, SEP27)
    note = " (no customer contact on record: the CSM finds the right person first)"
    assert [(step.title, step.owner) for step in alone.steps] == [
        ("Send a summary of the value delivered so far to the champion" + note, "Ines Ford (CSM)"),
        ("Quarterly check-in with the champion" + note, "Ines Ford (CSM)"),
    ]
    people = {who for e in alone.raci for who in (e.responsible, e.accountable, *e.consulted, *e.informed)}
    assert not [who for who in people if who.startswith("Customer ")]
    # A renewal step with the executive sponsor, red and due: the same for its Account Executive.
    renewal = build_playbook(newco, health_record("red", 20), [], [ACME_RENEWAL], library, SEP27)
    agree = next(s for s in renewal.steps if s.title.startswith("Agree the renewal date"))
    assert agree.title.endswith("(no customer contact on record: the Account Executive finds the right person first)")
    # One contact on record: the others' steps go to who is there, without the note.
    admin = {"name": "Olu Ade", "role": "admin", "started_on": dt.date(2026, 9, 15), "ended_on": None}
    renewal = build_playbook(newco, health_record("red", 20), [], [ACME_RENEWAL], library, SEP27, contacts=[admin])
    titles = [step.title for step in renewal.steps]
    assert "Agree the renewal date and the scope of the next term with the administrator" in titles
    assert not [title for title in titles if "on record" in title]


def test_a_step_to_fill_a_role_is_never_given_to_who_holds_that_role(library):
    # KV-010 in the fixtures: a new executive sponsor (14 Sep), a champion since 2025 and no admin.
    # "Identify and enable a new champion" consults the admin; standing in the champion would ask
    # the champion to find a new champion (and show it to the customer as theirs). The admin is
    # left out instead, so the step stays ours.
    kv = {"account_id": "KV-010", "name": "Key=Value Analytics", "csm_owner": "Mei Tanaka"}
    contacts = [
        {"name": "Ravi Shah", "role": "exec_sponsor", "started_on": dt.date(2026, 9, 14), "ended_on": None},
        {"name": "Mia Chen", "role": "champion", "started_on": dt.date(2025, 2, 1), "ended_on": None},
    ]
    signals = [{"code": "SIG_STAKEHOLDER_CHANGE"}]
    plan = build_playbook(kv, health_record("green", 99), signals, [], library, SEP27, contacts=contacts)
    entry = next(e for e in plan.raci if e.step == "Identify and enable a new champion")
    people = (entry.responsible, entry.accountable, *entry.consulted, *entry.informed)
    assert not [who for who in people if "Customer" in who]
