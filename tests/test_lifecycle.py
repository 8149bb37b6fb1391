"""Signal lifecycle (stable ids, new/ongoing/resolved) and snoozes, on the bundled fixtures.

Snapshots are point-in-time cuts of the fixtures; which signal fires when is read off the
fixtures by hand (fixtures/customer/README.md). Ids are recomputed here with hashlib, apart
from the DuckDB hashing the code uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.governance.lake import DeltaLake, DuckDBLake
from c360_dagster.domain.governance.lake_tables import signal_rows
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.timetravel import view_as_of
from c360_dagster.domain.renewals import forecast as renewals
from c360_dagster.domain.renewals import playbooks
from c360_dagster.domain.scoring import health, lifecycle, signals

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "customer"
CONTRACTS = REPO / "contracts" / "schemas"
AUG30, SEP20, SEP27 = dt.date(2026, 8, 30), dt.date(2026, 9, 20), dt.date(2026, 9, 27)


def sid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def view():
    return read_customer_360(REPO / "fixtures" / "customer")


@pytest.fixture(scope="module")
def fired(view):
    """Detected signals on each snapshot date."""
    config = signals.load_signals_config(CONFIGS / "signals.yaml")
    lifecycle = health.load_health_config(CONFIGS / "health.yaml").lifecycle
    return {d: signals.detect_signals(view_as_of(view, d), config, lifecycle) for d in (AUG30, SEP20, SEP27)}


def one(frame: pl.DataFrame, account: str, code: str) -> dict:
    return frame.filter(account_id=account, code=code).row(0, named=True)


def test_ids_are_stable_while_the_condition_goes_on(fired) -> None:
    first, _ = lifecycle.track_signals(fired[SEP20], None, SEP20)
    assert set(first["status"]) == {"new"} and set(first["since"]) == {SEP20}
    second, resolved = lifecycle.track_signals(fired[SEP27], first, SEP27, SEP20)
    assert resolved.is_empty()
    # Anchored on the thing itself: the renewing subscription and its date, the overdue invoice.
    renewal = one(second, "ACME-001", "SIG_RENEWAL_SOON")
    assert (renewal["signal_id"], renewal["status"], renewal["since"]) == (
        sid("ACME-001|SIG_RENEWAL_SOON|ACME-S1@2026-11-15"),
        "ongoing",
        SEP20,
    )
    assert (
        one(second, "INITECH-003", "SIG_PAYMENT_OVERDUE")["signal_id"]
        == one(first, "INITECH-003", "SIG_PAYMENT_OVERDUE")["signal_id"]
    )
    # A condition without such a thing is anchored on the first snapshot it fired in.
    slide = one(second, "ACME-001", "SIG_USAGE_SLIDE_4W")
    assert (slide["signal_id"], slide["status"], slide["since"]) == (
        sid("ACME-001|SIG_USAGE_SLIDE_4W|2026-09-20"),
        "ongoing",
        SEP20,
    )
    # SOYLENT-006's invoice became more than 30 days overdue between the two dates.
    soylent = one(second, "SOYLENT-006", "SIG_PAYMENT_OVERDUE")
    assert (soylent["status"], soylent["since"], soylent["signal_id"]) == (
        "new",
        SEP27,
        sid("SOYLENT-006|SIG_PAYMENT_OVERDUE|INV-SOYLENT-03"),
    )
    assert second.filter(status="new").height == 1
    assert second.drop("signal_id", "status", "since").equals(fired[SEP27])


def test_gone_signals_are_resolved_and_a_new_change_is_a_new_signal(fired) -> None:
    first, _ = lifecycle.track_signals(fired[AUG30], None, AUG30)
    second, resolved = lifecycle.track_signals(fired[SEP27], first, SEP27, AUG30)
    # On Aug 30 the latest stakeholder change was C-ACME-1 leaving (Aug 20); by Sep 27 C-ACME-2 started (Sep 7).
    old = sid("ACME-001|SIG_STAKEHOLDER_CHANGE|2026-08-20 left C-ACME-1")
    assert resolved.filter(account_id="ACME-001").select("code", "signal_id", "since", "last_seen").rows() == [
        ("SIG_STAKEHOLDER_CHANGE", old, AUG30, AUG30)
    ]
    change = one(second, "ACME-001", "SIG_STAKEHOLDER_CHANGE")
    assert (change["status"], change["signal_id"]) == (
        "new",
        sid("ACME-001|SIG_STAKEHOLDER_CHANGE|2026-09-07 started C-ACME-2"),
    )
    records = lifecycle.resolved_records(resolved)
    assert records["ACME-001"][0]["status"] == "resolved" and records["ACME-001"][0]["last_seen"] == "2026-08-30"
    assert records["ACME-001"][0]["evidence"]["changes"][0]["contact_id"] == "C-ACME-1"


def test_a_condition_that_comes_back_starts_a_new_run(fired) -> None:
    slide = fired[SEP27].filter(account_id="ACME-001", code="SIG_USAGE_SLIDE_4W")
    before, _ = lifecycle.track_signals(slide, None, SEP20)
    gap, resolved = lifecycle.track_signals(slide.clear(), before, SEP27, SEP20)
    assert gap.is_empty() and resolved["signal_id"].to_list() == [sid("ACME-001|SIG_USAGE_SLIDE_4W|2026-09-20")]
    again, _ = lifecycle.track_signals(slide, gap, dt.date(2026, 10, 4), SEP27)
    assert again.select("status", "since", "signal_id").row(0) == (
        "new",
        dt.date(2026, 10, 4),
        sid("ACME-001|SIG_USAGE_SLIDE_4W|2026-10-04"),
    )


@pytest.mark.parametrize("backend", [DuckDBLake, DeltaLake])
def test_previous_snapshot_comes_from_the_lake(tmp_path: Path, fired, backend) -> None:
    db = backend(str(tmp_path / "lake"), CONTRACTS)
    assert lifecycle.previous_signals(db, SEP27) == (None, None)
    tracked, _ = lifecycle.track_signals(fired[SEP20], None, SEP20)
    stored, _ = lifecycle.apply_snoozes(tracked, (), SEP20, pl.Series(["ACME-001"]))
    db.write_snapshot("customer_signals", signal_rows(stored), SEP20)
    db.write_snapshot("customer_signals", signal_rows(stored), SEP27)  # not "before" itself
    result = lifecycle.signal_lifecycle(fired[SEP27], db, SEP27, (), pl.Series(["ACME-001"]))
    assert result.previous_as_of == SEP20
    assert lifecycle.lifecycle_summary(result) == {
        "previous_as_of": "2026-09-20",
        "new": 1,
        "ongoing": 17,
        "resolved": 0,
        "snoozed": 0,
    }


def write_snoozes(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "snoozes.yaml"
    path.write_text("snoozes:\n" + "\n".join("  " + line for line in text.splitlines()) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {account: A, code: SIG_SUPPORT_SPIKE, until: 2026-10-31}", r"snoozes\.0\.reason: missing required key"),
        ("- {account: A, code: SIG_SUPPORT_SPIKE, reason: r}", r"snoozes\.0\.until: missing required key"),
        ("- {account: A, code: SIG_SUPPORT_SPIKE, until: someday, reason: r}", r"snoozes\.0\.until: expected a date"),
        ("- {account: A, code: SIG_NOPE, until: 2026-10-31, reason: r}", r"snoozes\.0\.code"),
        (
            (
                "- {account: A, code: SIG_SUPPORT_SPIKE, until: 2026-10-31, reason: r}\n"
                "- {account: A, code: SIG_SUPPORT_SPIKE, until: 2026-11-30, reason: r}"
            ),
            r"snoozes\.1\.code: SIG_SUPPORT_SPIKE of 'A' is snoozed twice",
        ),
    ],
)
def test_bad_snoozes_are_config_errors_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lifecycle.load_snoozes(write_snoozes(tmp_path, text))


def test_snoozed_signals_stay_visible_but_do_not_drive_plays_or_risk(tmp_path: Path, view, fired) -> None:
    assert lifecycle.load_snoozes(CONFIGS / "snoozes.yaml") == ()
    snoozes = lifecycle.load_snoozes(
        write_snoozes(
            tmp_path,
            """- {account: INITECH-003, code: SIG_PAYMENT_OVERDUE, until: 2026-10-31, reason: paid by wire}
- {account: INITECH-003, code: SIG_SUPPORT_SPIKE, until: 2026-09-27, reason: outage fixed}
- {account: WAYNE-009, code: SIG_SUPPORT_SPIKE, until: 2026-09-26, reason: old}""",
        )
    )
    tracked, _ = lifecycle.track_signals(fired[SEP27], None, SEP27)
    frame, warnings = lifecycle.apply_snoozes(tracked, snoozes, SEP27, view.accounts["account_id"])
    assert frame.height == fired[SEP27].height  # still visible
    assert one(frame, "INITECH-003", "SIG_PAYMENT_OVERDUE")["snoozed_until"] == dt.date(2026, 10, 31)
    assert one(frame, "INITECH-003", "SIG_SUPPORT_SPIKE")["snooze_reason"] == "outage fixed"  # until as_of: still on
    assert one(frame, "WAYNE-009", "SIG_SUPPORT_SPIKE")["snoozed_until"] is None
    assert warnings == (
        "snooze of SIG_SUPPORT_SPIKE for WAYNE-009 (snoozes.2) ended on 2026-09-26, before as_of 2026-09-27: the signal drives plays again",
    )
    assert lifecycle.driving_signals(frame).filter(account_id="INITECH-003")["code"].to_list() == ["SIG_RENEWAL_SOON"]

    # INITECH-003 is red; overdue (2) + spike (1) is "several" -> Low. Both snoozed: none -> Medium.
    config = renewals.load_renewals_config(CONFIGS / "renewals.yaml")
    scored = health.score_health(view, health.load_health_config(CONFIGS / "health.yaml"))
    row = renewals.forecast_renewals(view, scored, frame, config).filter(account_id="INITECH-003").row(0, named=True)
    assert (row["bucket"], row["risk_signal_count"], json.loads(row["risk_reasons"])) == ("Medium", 0, [])
    # Not collections: the overdue signal is snoozed; INITECH-S1 renews in 65 days with auto-renew off.
    assert row["suggested_playbook"] == "renewal"
    baseline = (
        renewals.forecast_renewals(view, scored, fired[SEP27], config)
        .filter(account_id="INITECH-003")
        .row(0, named=True)
    )
    assert (baseline["bucket"], baseline["suggested_playbook"]) == ("Low", "collections")

    records = signals.signals_by_account(frame)["INITECH-003"]
    record = dict(health.health_records(scored))["INITECH-003"]
    account = view.accounts.filter(account_id="INITECH-003").row(0, named=True)
    plan = playbooks.build_playbook(account, record, records, [], config.library, SEP27)
    assert "collections" not in plan.plays and "support_recovery" not in plan.plays
    assert "Snoozed, so not driving the plan: Payment overdue until 31 Oct 2026 (paid by wire); " in plan.summary


def test_snooze_for_an_unknown_account_is_an_error(tmp_path: Path, view, fired) -> None:
    snoozes = lifecycle.load_snoozes(
        write_snoozes(tmp_path, "- {account: NOPE-1, code: SIG_SUPPORT_SPIKE, until: 2026-10-31, reason: r}")
    )
    with pytest.raises(
        ConfigError, match=r"snoozes\.0\.account: expected an account_id of the input accounts, got 'NOPE-1'"
    ):
        lifecycle.apply_snoozes(fired[SEP27], snoozes, SEP27, view.accounts["account_id"])
