"""Manual overrides: validation, columnar application, and how health, renewals and playbooks show them.

Computed values of the fixtures are those of fixtures/customer/README.md (ACME-001 68 amber,
PIPE-004 67 amber, INITECH-003 28 red).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.io import ITEM_SEPARATOR, entry_text
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.renewals import forecast as renewals
from c360_dagster.domain.renewals import playbooks
from c360_dagster.domain.scoring import health, overrides, signals

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "customer"
AS_OF = dt.date(2026, 9, 27)


@pytest.fixture(scope="module")
def view():
    return read_customer_360(REPO / "fixtures" / "customer")


@pytest.fixture(scope="module")
def computed(view):
    return health.score_health(view, health.load_health_config(CONFIGS / "health.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overrides.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def entry(account: str, expires_on: str = "2026-12-31", **fields) -> overrides.Override:
    return overrides.Override(
        "overrides.0",
        account,
        fields.get("tier"),
        fields.get("score"),
        "sponsor confirmed",
        "Dana",
        dt.date.fromisoformat(expires_on),
    )


def apply(computed, *entries: overrides.Override):
    return overrides.apply_overrides(computed, entries, AS_OF, red_below=50, green_from=70)


def test_default_file_is_empty_and_entries_load(tmp_path: Path) -> None:
    assert overrides.load_overrides(CONFIGS / "overrides.yaml") == ()
    path = write(
        tmp_path,
        """overrides:
  - {account: ACME-001, tier: red, reason: champion gone, author: Dana, expires_on: 2026-12-31}
  - {account: PIPE-004, score: 80, reason: "pilot won", author: Lee, expires_on: "2027-01-15"}
""",
    )
    loaded = overrides.load_overrides(path)
    assert loaded[0] == overrides.Override(
        "overrides.0", "ACME-001", "red", None, "champion gone", "Dana", dt.date(2026, 12, 31)
    )
    assert (loaded[1].tier, loaded[1].score, loaded[1].expires_on) == (None, 80, dt.date(2027, 1, 15))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {account: A, tier: red, author: D, expires_on: 2026-12-31}", r"overrides\.0\.reason: missing required key"),
        ("- {account: A, tier: red, reason: r, author: D}", r"overrides\.0\.expires_on: missing required key"),
        (
            "- {account: A, reason: r, author: D, expires_on: 2026-12-31}",
            r"overrides\.0: needs a tier, a score or both",
        ),
        ("- {account: A, tier: pink, reason: r, author: D, expires_on: 2026-12-31}", r"overrides\.0\.tier"),
        ("- {account: A, score: 101, reason: r, author: D, expires_on: 2026-12-31}", r"overrides\.0\.score"),
        (
            "- {account: A, tier: red, reason: r, author: D, expires_on: soon}",
            r"overrides\.0\.expires_on: expected a date",
        ),
        (
            "- {account: A, tier: red, reason: r, author: D, expires_on: 2026-12-31, by: x}",
            r"overrides\.0\.by: unknown key",
        ),
        (
            (
                "- {account: A, tier: red, reason: r, author: D, expires_on: 2026-12-31}\n"
                "- {account: A, tier: green, reason: r, author: D, expires_on: 2026-12-31}"
            ),
            r"overrides\.1\.account: a second override for 'A'",
        ),
    ],
)
def test_bad_entries_are_config_errors_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "overrides:\n" + "\n".join("  " + line for line in text.splitlines()) + "\n")
    with pytest.raises(ConfigError, match=message):
        overrides.load_overrides(path)


def test_tier_override_keeps_the_computed_values_beside_it(computed) -> None:
    outcome = apply(computed, entry("ACME-001", tier="red"))
    acme = outcome.frame.filter(account_id="ACME-001").row(0, named=True)
    assert (acme["score"], acme["tier"], acme["computed_score"], acme["computed_tier"]) == (68, "red", 68, "amber")
    assert (acme["override_author"], acme["override_expires_on"]) == ("Dana", dt.date(2026, 12, 31))
    others = outcome.frame.filter(pl.col("account_id") != "ACME-001")
    assert (others["score"] == others["computed_score"]).all() and (others["tier"] == others["computed_tier"]).all()
    assert others["override_author"].null_count() == others.height
    assert outcome.frame["account_id"].to_list() == computed["account_id"].to_list()
    cols = outcome.frame.columns
    assert cols[cols.index("config_hash") + 1 : cols.index("config_hash") + 6] == list(overrides.OVERRIDE_COLUMNS)
    assert outcome.applied == (
        {
            "account": "ACME-001",
            "computed": {"score": 68, "tier": "amber"},
            "overridden": {"score": 68, "tier": "red"},
            "reason": "sponsor confirmed",
            "author": "Dana",
            "expires_on": "2026-12-31",
        },
    )
    assert outcome.warnings == ()


def test_score_only_override_takes_its_tier_and_expired_ones_are_ignored(computed) -> None:
    outcome = apply(computed, entry("PIPE-004", score=45), entry("INITECH-003", "2026-09-26", tier="green"))
    pipe = outcome.frame.filter(account_id="PIPE-004").row(0, named=True)
    assert (pipe["score"], pipe["tier"], pipe["computed_tier"]) == (45, "red", "amber")  # 45 < red_below 50
    initech = outcome.frame.filter(account_id="INITECH-003").row(0, named=True)
    assert (initech["score"], initech["tier"], initech["override_author"]) == (28, "red", None)
    assert outcome.warnings == (
        "override of INITECH-003 (overrides.0) expired on 2026-09-26, before as_of 2026-09-27: ignored",
    )
    # Expiring on as_of itself still applies (the last day it applies).
    assert (
        apply(computed, entry("INITECH-003", "2026-09-27", tier="green"))
        .frame.filter(account_id="INITECH-003")["tier"]
        .item()
        == "green"
    )


def test_unknown_account_is_a_clear_error(computed) -> None:
    with pytest.raises(
        ConfigError,
        match=r"overrides\.0\.account: expected an account_id of the input accounts, got 'ACME-01'; did you mean ACME-001",
    ):
        apply(computed, entry("ACME-01", tier="red"))


def test_health_json_and_explanation_show_both_values(computed) -> None:
    frame = apply(computed, entry("ACME-001", tier="red")).frame
    records = dict(health.health_records(frame))
    acme = records["ACME-001"]
    assert (acme["score"], acme["tier"], acme["computed_score"], acme["computed_tier"]) == (68, "red", 68, "amber")
    assert acme["override"] == {"author": "Dana", "reason": "sponsor confirmed", "expires_on": "2026-12-31"}
    assert records["PIPE-004"]["override"] is None
    text = health.explain_health(acme)
    assert text.splitlines()[0] == "Health score 68/100: red (scored, lifecycle active, default scorecard)."
    assert text.splitlines()[1] == (
        "Tier overridden from amber to red by Dana: sponsor confirmed, until 31 Dec 2026 "
        "(computed: 68/100 amber; the components below add up to the computed score)."
    )
    # The columnar health.json encoder writes the same bytes as the records.
    columnar = ITEM_SEPARATOR.encode().join(health.health_json_entries(frame)).decode()
    by_python = ITEM_SEPARATOR.join(entry_text(key, record) for key, record in records.items())
    assert columnar == by_python


def test_an_override_wins_over_the_measured_evidence_line(computed) -> None:
    # SOYLENT-006 scores 84 on 55% of its weight: computed amber. A person's green wins and shows
    # as an override; tier_reason keeps saying why the scorecard said amber.
    frame = apply(computed, entry("SOYLENT-006", tier="green")).frame
    soylent = dict(health.health_records(frame))["SOYLENT-006"]
    assert (soylent["score"], soylent["tier"], soylent["computed_tier"]) == (84, "green", "amber")
    assert soylent["tier_reason"].startswith("amber, not green: adoption and value (45% of the scorecard's weight)")
    lines = health.explain_health(soylent).splitlines()
    assert lines[1].startswith("Tier overridden from amber to green by Dana: sponsor confirmed")
    assert lines[2] == f"Computed tier {soylent['tier_reason']}."
    # A score-only override takes the tier its score falls in (the person vouches for the score).
    scored = apply(computed, entry("SOYLENT-006", score=90)).frame.filter(account_id="SOYLENT-006").row(0, named=True)
    assert (scored["score"], scored["tier"], scored["computed_tier"]) == (90, "green", "amber")


def test_renewals_and_playbooks_use_the_overridden_tier_and_say_so(view, computed) -> None:
    config = renewals.load_renewals_config(CONFIGS / "renewals.yaml")
    lifecycle = health.load_health_config(CONFIGS / "health.yaml").lifecycle
    fired = signals.detect_signals(view, signals.load_signals_config(CONFIGS / "signals.yaml"), lifecycle)
    frame = apply(computed, entry("PIPE-004", tier="green")).frame
    forecast = renewals.forecast_renewals(view, frame, fired, config).filter(account_id="PIPE-004").row(0, named=True)
    # PIPE-004 counts one risk (SIG_FEATURE_ADOPTION_LOW): amber x one = Medium, green x one = High.
    assert (forecast["tier"], forecast["bucket"], forecast["risk_signal_count"]) == ("green", "High", 1)
    reasons = json.loads(forecast["risk_reasons"])
    assert reasons[0] == {
        "code": "TIER_OVERRIDE",
        "text": "Tier overridden from amber to green by Dana: sponsor confirmed, until 31 Dec 2026",
    }
    assert [r["code"] for r in reasons[1:]] == ["SIG_FEATURE_ADOPTION_LOW"]
    untouched = (
        renewals.forecast_renewals(view, computed, fired, config).filter(account_id="PIPE-004").row(0, named=True)
    )
    assert untouched["bucket"] == "Medium" and "TIER_OVERRIDE" not in untouched["risk_reasons"]

    record = dict(health.health_records(frame))["PIPE-004"]
    account = view.accounts.filter(account_id="PIPE-004").row(0, named=True)
    plan = playbooks.build_playbook(
        account, record, [], [], playbooks.load_playbook_library(CONFIGS / "playbooks.yaml"), AS_OF
    )
    assert plan.tier == "green"
    assert "Tier overridden from amber to green by Dana: sponsor confirmed, until 31 Dec 2026." in plan.summary


def test_accounts_without_a_score_cannot_be_overridden(computed) -> None:
    # OLDCO-012 churned and NEWCO-011 has too little data: a person's tier cannot stand in for
    # a customer who is not there or not yet measured; the override is ignored and said so.
    outcome = apply(computed, entry("OLDCO-012", tier="green"), entry("NEWCO-011", score=90))
    rows = {
        r["account_id"]: r
        for r in outcome.frame.filter(pl.col("account_id").is_in(["OLDCO-012", "NEWCO-011"])).iter_rows(named=True)
    }
    assert [(rows[a]["score"], rows[a]["tier"], rows[a]["override_author"]) for a in ("OLDCO-012", "NEWCO-011")] == [
        (None, None, None),
        (None, None, None),
    ]
    assert outcome.applied == ()
    assert outcome.warnings == (
        "override of OLDCO-012 (overrides.0) ignored: the account has no score to override (status churned)",
        "override of NEWCO-011 (overrides.0) ignored: the account has no score to override (status insufficient_data)",
    )
