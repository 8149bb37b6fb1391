"""The console prints each summary from what its run already knows, never by re-reading a stage's
whole output document (at a million accounts health.json alone is hundreds of MB)."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import dagster as dg
import pytest

from c360_dagster import reports
from c360_dagster.console import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "customer"
STAGE_DOCUMENTS = ("360.json", "health.json", "signals.json", "renewals_")


@pytest.fixture
def documents_unreadable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Opening a stage's JSON document for reading fails (and is recorded); writing it is fine."""
    attempts: list[str] = []
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        name = Path(file).name if isinstance(file, str | Path) else ""
        if "r" in mode and "+" not in mode and name.endswith(".json") and name.startswith(STAGE_DOCUMENTS):
            attempts.append(name)
            raise AssertionError(f"the console read {file} to print a summary")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # what Path.read_text and read_bytes call
    return attempts


def c360(capsys, *argv: str) -> str:
    assert main([*argv, "--quiet"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_stage_summaries_come_from_the_run_not_the_documents(project, capsys, documents_unreadable, monkeypatch):
    loaded = c360(capsys, "c360:load", "--dir", str(FIXTURES), *project.args)
    scored = c360(capsys, "c360:health", *project.args)
    explained = c360(capsys, "c360:health", "--account", "ACME-001", *project.args)
    fired = c360(capsys, "c360:signals", *project.args)
    renewing = c360(capsys, "c360:renewals", "--window-days", "120", *project.args)
    summary = c360(capsys, "c360:summary", *project.args)
    assert documents_unreadable == []
    # The figures the README's demo shows for the fixtures (tests/test_readme.py keeps the whole text).
    assert "  Enterprise   USD 1,350,000  (4 subscriptions)\n" in loaded
    assert (
        "Health of 12 accounts: 10 scored (as_of 2026-09-27)\nTiers: amber 4 (1 not green: too little measured), green 4, red 2; no score: churned 1, insufficient data 1\n"
        in scored
    )
    assert "Scores of scored accounts: max 100, mean 73.7, median 76.0, min 28\n" in scored
    assert explained.startswith("Health score 68/100: amber")
    # Amounts in the explanation carry their currency in the one report format (USD 15,000 unpaid).
    assert "(by currency (USD: arr USD 300,000, credits USD 3,000, credits pct of arr 1, discount pct 16, " in explained
    assert "overdue amount USD 15,000, overdue pct of arr 5)" in explained and "300000" not in explained
    assert "Signals fired (as_of 2026-09-27): 18\n" in fired
    assert "  SIG_RENEWAL_SOON           Renewal coming up      4\n" in fired  # the code, its name, the count
    assert "6 subscriptions of 6 accounts" in renewing and "artifacts/customer/renewals_202609.json" in renewing
    # SOYLENT-006 is amber only because too little was measured: the table says so, as summary.md does.
    held = (
        "  10 Jan 2027  SOYLENT-S1   amber (too little measured) Low      USD 72,000  Payment overdue → Collections\n"
    )
    assert held in renewing and "  15 Nov 2026  ACME-S1      amber                       Low " in renewing
    table = (project.customer / "summary.md").read_text(encoding="utf-8")
    assert "| Soylent Foods | SOYLENT-S1 | 10 Jan 2027 | amber (too little measured) | Low |" in table
    assert "| Acme Corporation | ACME-S1 | 15 Nov 2026 | amber | Low |" in table
    assert (
        "Health tiers: amber 4 (1 not green: too little measured), green 4, red 2; no score: churned 1, insufficient data 1\n"
        in summary
    )
    # People read segments by their names; the codes of accounts.csv stay in --json.
    for text in (loaded, summary):
        assert (
            "  Mid-Market     USD 168,000  (2 subscriptions)\n  SMB             GBP 39,000  (2 subscriptions)\n" in text
        )
        assert "mid_market" not in text and "smb " not in text

    # A known account is checked with one lookup, not by reading every registered account.
    def every_account(*args, **kwargs):
        raise AssertionError("read every account partition to check one")

    monkeypatch.setattr(dg.DagsterInstance, "get_dynamic_partitions", every_account)
    assert c360(capsys, "c360:playbook", "--account", "ACME-001", *project.args).startswith("Playbook for ACME-001:\n")
    # The plan of an account held at amber says why, as the renewals table does.
    soylent = c360(capsys, "c360:playbook", "--account", "SOYLENT-006", *project.args).splitlines()
    assert soylent[1].startswith("  tier amber (too little measured), score 84; plays: Collections, ")


@pytest.mark.untraced
def test_the_summaries_agree_with_the_documents_written(ran_project, capsys):
    project = ran_project  # loaded; each stage below runs again and writes its document anew
    report = json.loads(c360(capsys, "c360:health", "--json", *project.args))
    document = json.loads((project.customer / "health.json").read_text(encoding="utf-8"))
    assert {key: report[key] for key in document["summary"]} == document["summary"]
    assert report["as_of"] == document["as_of"]
    # Every account's record rebuilt from its row of the health frame is its health.json record.
    assert {account: reports.health_record(project.customer, account) for account in document["accounts"]} == document[
        "accounts"
    ]
    signals = json.loads(c360(capsys, "c360:signals", "--json", *project.args))
    fired = json.loads((project.customer / "signals.json").read_text(encoding="utf-8"))
    codes = [signal["code"] for listed in fired["accounts"].values() for signal in listed]
    assert signals["counts"] == {code: codes.count(code) for code in sorted(set(codes))}
    assert signals["lifecycle"] == fired["lifecycle"]
    renewals = json.loads(c360(capsys, "c360:renewals", "--json", *project.args))
    forecast = json.loads((project.customer / "renewals_202609.json").read_text(encoding="utf-8"))
    assert renewals["summary"] == forecast["summary"]
    summary = json.loads(c360(capsys, "c360:summary", "--json", *project.args))
    assert [row["segment"] for row in summary["view"]["arr_by_segment"]] == [
        "enterprise",
        "enterprise",
        "mid_market",
        "mid_market",
        "smb",
        "smb",
    ]


@pytest.mark.untraced
def test_the_whole_chain_reports_without_reading_its_documents(project, capsys, documents_unreadable):
    out = c360(capsys, "c360:run", "--dir", str(FIXTURES), *project.args)
    assert documents_unreadable == []
    assert (
        "Health tiers: amber 4 (1 not green: too little measured), green 4, red 2; no score: churned 1, insufficient data 1\n"
        in out
    )
    assert "  accounts 12 · cases 33 · contacts 21" in out
