"""The words people read: one vocabulary (dates, roles, signal names) and, on the bundled
fixtures, no code, ISO date or internal judgement where it does not belong."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
import yaml
from pptx import Presentation

from c360_dagster.domain.core import words
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.scoring.health import explain_health
from c360_dagster.domain.scoring.signals import SIGNAL_CATALOG

ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


def test_dates_read_as_words_from_a_date_or_iso_text():
    assert [words.fmt_date(dt.date(2026, 11, 15)), words.fmt_date("2026-08-01"), words.fmt_date(None)] == [
        "15 Nov 2026",
        "1 Aug 2026",
        "n/a",
    ]


def test_every_contact_role_of_the_contract_has_its_words_and_label():
    roles = next(field.choices for field in ENTITIES["contacts"].fields if field.name == "role")
    assert sorted(words.CONTACT_ROLES) == sorted(roles)
    assert [(words.role_words(role), words.role_label(role)) for role in words.CONTACT_ROLES] == [
        ("champion", "Champion"),
        ("executive sponsor", "Executive Sponsor"),
        ("economic buyer", "Economic Buyer"),
        ("administrator", "Administrator"),
        ("user", "User"),
    ]


def test_every_segment_of_the_contract_has_its_label():
    segments = next(field.choices for field in ENTITIES["accounts"].fields if field.name == "segment")
    assert [words.segment_label(segment) for segment in segments] == ["Enterprise", "Mid-Market", "SMB"]
    # One wording for an amber account held back from green for want of measured data.
    held = "amber, not green: adoption and value (45% of the scorecard's weight) are not measured"
    assert [words.tier_words("amber", held), words.tier_words("amber"), words.tier_words(None)] == [
        "amber (too little measured)",
        "amber",
        "unscored",
    ]
    # The reason explains the computed amber: a person's override to red makes it moot.
    assert words.tier_words("red", held) == "red"


def test_every_signal_has_a_name_and_a_forecast_says_what_it_means():
    assert sorted(words.SIGNAL_NAMES) == sorted(SIGNAL_CATALOG)
    assert words.signal_name("SIG_NEW_THING") == "New Thing"  # a code outside the registry, in words
    assert [words.renewal_odds("Low", 0.25), words.renewal_odds("High", None)] == [
        "Low (25% likely to renew)",
        "High",
    ]


# --- on the bundled fixtures ---------------------------------------------------------------------


def _deck_texts(path: Path) -> list[str]:
    texts = []
    for slide in Presentation(io.BytesIO(path.read_bytes())).slides:
        for shape in slide.shapes:
            if shape.has_text_frame:
                texts.append(shape.text_frame.text)
            if shape.has_table:
                texts += [cell.text for row in shape.table.rows for cell in row.cells]
            if shape.has_chart and shape.chart.has_title:
                texts.append(shape.chart.chart_title.text_frame.text)
    return texts


def _people_files(customer: Path) -> dict[str, str]:
    """Every Markdown file of the run written for a person to read, by name."""
    paths = [*customer.glob("playbooks/*.md"), *customer.glob("review_*.md"), *customer.glob("qbr_*/*.md")]
    return {str(path.relative_to(customer)): path.read_text(encoding="utf-8") for path in sorted(paths)}


@pytest.mark.untraced
def test_what_people_read_names_signals_and_dates_in_words(ran_fixtures):
    customer = ran_fixtures.customer
    files = {**_people_files(customer), "summary.md": (customer / "summary.md").read_text(encoding="utf-8")}
    assert len([name for name in files if name.startswith("playbooks/")]) == 11
    assert [name for name, text in files.items() if "SIG_" in text] == []
    assert [(name, date) for name, text in files.items() for date in ISO_DATE.findall(text)] == []
    for path in [*customer.glob("review_*.pptx"), *customer.glob("qbr_*.pptx")]:
        text = "\n".join(_deck_texts(path))
        assert "SIG_" not in text and not ISO_DATE.search(text), path.name
    # The machine files keep the codes and ISO dates: there they are data.
    renewals = json.loads(next(customer.glob("renewals_*.json")).read_text(encoding="utf-8"))
    assert {reason["code"] for row in renewals["renewals"] for reason in row["risk_reasons"]} >= {"SIG_PAYMENT_OVERDUE"}
    assert all(ISO_DATE.fullmatch(row["renewal_date"]) for row in renewals["renewals"])


def test_an_explanation_says_its_dates_and_scorecard_in_words(ran_fixtures):
    # `c360:health --account` prints these; health.json keeps the ISO dates and scorecard codes.
    records = json.loads((ran_fixtures.customer / "health.json").read_text(encoding="utf-8"))["accounts"]
    texts = {account: explain_health(record) for account, record in records.items()}
    assert [(account, date) for account, text in texts.items() for date in ISO_DATE.findall(text)] == []
    assert [account for account, text in texts.items() if "segment:" in text] == []
    # By hand from nps.json: ACME-001's latest answer (6) came on 2026-09-01.
    assert "latest nps 6, latest on 1 Sep 2026," in texts["ACME-001"]
    assert records["ACME-001"]["components"]["sentiment"]["evidence"]["latest_on"] == "2026-09-01"
    assert "(lifecycle onboarding, SMB segment's scorecard)" in texts["NEWCO-011"]
    assert records["NEWCO-011"]["scorecard"] == "segment:smb"


def test_the_review_says_what_besides_overdue_invoices_cost_commercial_points(ran_fixtures):
    # STARK-008 by hand from subs.csv and invoices.json: discount 35% (penalty 16.67 of 20) and
    # credits USD 30,000 on USD 600,000 ARR, 5% (penalty 10 of 20), beside its overdue invoice:
    # without them a reader cannot see why Billing and Contract is only 32.67.
    review = (ran_fixtures.customer / "review_STARK-008.md").read_text(encoding="utf-8")
    assert (
        "| Billing and Contract | 32.67 | 20 | 6.53 | 1 invoice is open past the due date on 27 Sep 2026; "
        "a 35% discount and credits worth 5% of ARR also cost points |"
    ) in review
    # HOOLI-007 pays on time at list price: nothing more to say.
    hooli = (ran_fixtures.customer / "review_HOOLI-007.md").read_text(encoding="utf-8")
    assert "also cost points" not in hooli
    # The customer's pages and deck keep to the invoices: points are the account team's.
    customer = "\n".join(_deck_texts(ran_fixtures.customer / "qbr_STARK-008.pptx"))
    customer += (ran_fixtures.customer / "qbr_STARK-008" / "scorecard.md").read_text(encoding="utf-8")
    assert "cost points" not in customer and "discount" not in customer


def test_a_plan_says_its_signals_plays_and_forecast_in_words(ran_fixtures):
    plan = (ran_fixtures.customer / "playbooks" / "INITECH-003.md").read_text(encoding="utf-8")
    # By hand from the fixtures: INITECH-003 fired these three signals; INITECH-S1 renews on
    # 2026-12-01 in the Low bucket (25% in renewals.yaml).
    assert (
        "has 3 active signals (Payment overdue, Renewal coming up, Support cases up). 1 subscription renews in "
        "the forecast window, the first on 1 Dec 2026, with ARR USD 96,000 and forecast Low (25% likely to renew)."
    ) in plan
    assert "| 28 Sep 2026 | Support recovery | Review every open case" in plan  # the play by title, not its id
    assert "| 1 Dec 2026 | Renewal of Platform (INITECH-S1), forecast Low (25% likely to renew) |" in plan
    review = (ran_fixtures.customer / "review_INITECH-003.md").read_text(encoding="utf-8")
    assert (
        "- INITECH-S1: Invoice INV-INITECH-03 (USD 24,000) is 45 days past its due date of 13 Aug 2026; "
        "overdue invoices in all: 1; 5 cases opened since 29 Aug 2026, against 3 in the period before; "
        "critical cases (severity 1) open: 1 (suggested play: Collections)"
    ) in review
    assert "(plays: Collections, Renewal plan, Executive sponsor ask, Support recovery, Outreach cadence)" in review


def test_a_stand_in_is_named_in_the_words_the_customer_deck_uses(ran_fixtures):
    # NEWCO-011 has only an administrator on record: the champion's steps go to them, said the
    # way the stakeholder table names them.
    plan = (ran_fixtures.customer / "playbooks" / "NEWCO-011.md").read_text(encoding="utf-8")
    roadmap = (ran_fixtures.customer / "qbr_NEWCO-011" / "roadmap.md").read_text(encoding="utf-8")
    step = "Hold the onboarding kick-off and agree the first goals with the administrator"
    assert step in plan and "Olu Ade (Customer Administrator)" in plan
    assert f"| {step} | Tom Becker (CSM) | Administrator |" in roadmap
    assert not re.search(r"\badmin\b", plan + roadmap)


# Words of the account team's judgement and instructions that never reach the customer.
INTERNAL_WORDS = [
    r"SIG_",
    r"\brisks?\b",
    r"[Cc]hurn",
    r"(?i)\b(red|amber|green)\b",
    r"[Ff]orecast",
    r"likely to renew",
    r"[Pp]robability",
    r"[Ii]nternal",
    r"on record",
    r"[Pp]laybook",
    r"Finance \(AR\)",
    r"CS Manager",
    r"Support Lead",
    r"[Ee]scalat",
    *[re.escape(name) for name in words.SIGNAL_NAMES.values()],
]


@pytest.mark.untraced
def test_the_customer_pack_shows_nothing_of_the_account_teams_judgement(ran_fixtures):
    packs = sorted(path.stem.removeprefix("qbr_") for path in ran_fixtures.customer.glob("qbr_*.pptx"))
    assert len(packs) == 11
    assert sum(_shows_nothing_internal(ran_fixtures, account_id) for account_id in packs) > 0


def _shows_nothing_internal(ran_fixtures, account_id: str) -> int:
    """Checks one account's pack; returns how many of its plan's steps are ours alone."""
    customer = ran_fixtures.customer
    text = "\n".join(
        [path.read_text(encoding="utf-8") for path in sorted((customer / f"qbr_{account_id}").glob("*.md"))]
        + _deck_texts(customer / f"qbr_{account_id}.pptx")
    )
    assert [pattern for pattern in INTERNAL_WORDS if re.search(pattern, text)] == [], account_id
    plan = json.loads((customer / "playbooks" / f"{account_id}.json").read_text(encoding="utf-8"))
    library = yaml.safe_load((Path(ran_fixtures.configs) / "playbooks.yaml").read_text(encoding="utf-8"))
    customer_roles = yaml.safe_load((Path(ran_fixtures.configs) / "qbr.yaml").read_text(encoding="utf-8"))[
        "customer_roles"
    ]
    # Steps no customer person takes part in stay ours; so do checkpoints, plan risks and the
    # plays' names and purposes.
    ours = [
        entry["step"]
        for entry in plan["raci"]
        if not any(
            role in who
            for role in customer_roles
            for who in [entry["responsible"], entry["accountable"], *entry["consulted"], *entry["informed"]]
        )
    ]
    internal = ours + plan["risks"] + [point["what"] for point in plan["checkpoints"]]
    internal += [play[key] for play in library["playbooks"] for key in ("title", "summary")]
    internal += [play["id"] for play in library["playbooks"] if "_" in play["id"]]  # `renewal` is also a word
    assert [phrase for phrase in internal if phrase in text] == [], account_id
    return len(ours)


def test_an_account_held_at_amber_says_why_to_each_reader(ran_fixtures):
    # SOYLENT-006: green's score (84) but no usage data, so amber (docs/customer-360.md). The
    # customer reads it in their words, the account team reads the rule; HOOLI-007 stays green.
    customer = ran_fixtures.customer
    deck = "\n".join(_deck_texts(customer / "qbr_SOYLENT-006.pptx"))
    page = (customer / "qbr_SOYLENT-006" / "scorecard.md").read_text(encoding="utf-8")
    for text in (deck, page):
        assert (
            "Not measured yet: Adoption, Value From Features. We do not yet see product usage data, "
            "so this review does not show the whole picture yet." in text
        )
        assert not re.search(r"(?i)\b(amber|green)\b|scorecard's weight", text)
    reason = (
        "amber, not green: adoption and value (45% of the scorecard's weight) are not measured; "
        "green needs at least 70% measured"
    )
    review = (customer / "review_SOYLENT-006.md").read_text(encoding="utf-8")
    assert f"| Tier | {reason} |" in review
    assert f"Health: 84/100, {reason}; no earlier snapshot" in " ".join(
        _deck_texts(customer / "review_SOYLENT-006.pptx")
    )
    assert "We do not yet see" not in "\n".join(_deck_texts(customer / "qbr_HOOLI-007.pptx"))
