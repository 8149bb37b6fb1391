"""Which accounts are `account` partitions: the ones a team acts on, and any a user asks for.

Dagster advises at most 100k partitions per asset; a million accounts must not all be one
(docs/operations.md "Account partitions").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import project_instance_for_test

from c360_dagster import reports
from c360_dagster.console import main
from c360_dagster.defs.accounts import AccountInputs, account_facts
from c360_dagster.defs.customer import (
    CHAIN_ASSETS,
    customer_360,
    customer_inputs,
)
from c360_dagster.defs.partitions import ACCOUNT_PARTITIONS_NAME
from c360_dagster.defs.resources import C360Project
from c360_dagster.domain.renewals.forecast import acted_on_accounts

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "customer"
# fixtures/customer/README.md: red INITECH-003 and STARK-008; amber ACME-001 (renews in 49 days),
# PIPE-004 (23), WAYNE-009 (115) and SOYLENT-006 (105; amber, not green: too little measured),
# all inside the 120-day window.
FIXTURE_ACTED_ON = ["ACME-001", "INITECH-003", "PIPE-004", "SOYLENT-006", "STARK-008", "WAYNE-009"]


def test_acted_on_accounts_are_the_red_and_the_amber_renewing():
    health = pl.DataFrame(
        {
            "account_id": ["RED", "AMBER-RENEWS", "AMBER-LATER", "GREEN-RENEWS", "UNSCORED"],
            "tier": ["red", "amber", "amber", "green", None],
        }
    )
    # The forecast: one row per subscription renewing in the window, with its account's tier.
    forecast = pl.DataFrame(
        {
            "account_id": ["AMBER-RENEWS", "AMBER-RENEWS", "GREEN-RENEWS", "UNSCORED"],
            "tier": ["amber", "amber", "green", None],
        }
    )
    assert acted_on_accounts(health, forecast) == ["AMBER-RENEWS", "RED"]


def _registered() -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return sorted(instance.get_dynamic_partitions(ACCOUNT_PARTITIONS_NAME))


@pytest.mark.untraced
def test_the_chain_registers_the_acted_on_accounts_once(tmp_path):
    project = C360Project(
        fixtures_dir=str(FIXTURES),
        configs_dir=str(REPO / "configs" / "customer"),
        contracts_dir=str(REPO / "contracts" / "schemas"),
        artifacts_dir=str(tmp_path / "artifacts"),
    )
    with project_instance_for_test() as instance:
        one_shard = {"instance": instance, "resources": {"project": project}, "partition_key": "0"}
        dg.materialize([customer_inputs, customer_360], **one_shard)
        assert instance.get_dynamic_partitions(ACCOUNT_PARTITIONS_NAME) == []  # loading registers nothing
        first = dg.materialize(CHAIN_ASSETS, **one_shard)
        assert sorted(instance.get_dynamic_partitions(ACCOUNT_PARTITIONS_NAME)) == FIXTURE_ACTED_ON
        again = dg.materialize(CHAIN_ASSETS, **one_shard)
        facts = [
            {key: run.asset_materializations_for_node("renewal_forecasts")[0].metadata[key].value for key in keys}
            for run in (first, again)
            for keys in [("accounts_acted_on", "accounts_registered")]
        ]
        assert facts == [
            {"accounts_acted_on": 6, "accounts_registered": 6},
            {"accounts_acted_on": 6, "accounts_registered": 0},  # nothing new the second time
        ]


def _c360(capsys, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--quiet"])
    return code, capsys.readouterr().err


@pytest.mark.untraced
def test_a_generated_book_registers_its_acted_on_accounts_not_all(project, capsys):
    book = project.artifacts.parent / "book"
    assert _c360(capsys, "c360:generate", "--out", str(book), "--accounts", "300", *project.args)[0] == 0
    assert _c360(capsys, "c360:load", "--dir", str(book), *project.args)[0] == 0
    for stage in ("c360:health", "c360:signals", "c360:renewals"):
        assert _c360(capsys, stage, *project.args)[0] == 0
    # The acted-on set read back from the published documents, not from the frames the stage used.
    health = json.loads((project.customer / "health.json").read_text(encoding="utf-8"))["accounts"]
    (renewals_file,) = project.customer.glob("renewals_*.json")
    renewing = json.loads(renewals_file.read_text(encoding="utf-8"))["renewals"]
    expected = {a for a, record in health.items() if record["tier"] == "red"}
    expected |= {row["account_id"] for row in renewing if row["tier"] == "amber"}
    registered = _registered()
    assert registered == sorted(expected)
    assert 0 < len(registered) < len(health) / 4  # about 8% at the generator's mix


@pytest.mark.untraced
def test_the_cli_registers_an_account_asked_for_and_refuses_an_unknown_one(project, capsys, monkeypatch):
    assert _c360(capsys, "c360:playbook", "--account", "GLOBEX-002", *project.args)[1] == (
        f"c360: C360_ERROR: no Customer 360 view under {project.customer / 'frames' / '360'}; run `c360 c360:load` first\n"
    )
    for stage in ("c360:load", "c360:health", "c360:signals", "c360:renewals"):
        assert _c360(capsys, stage, *project.args)[0] == 0
    assert _registered() == FIXTURE_ACTED_ON
    # An account with a partition runs without reading the view's million account ids.
    with monkeypatch.context() as patch:
        patch.setattr(reports, "account_ids", lambda customer_dir: pytest.fail("read the view's account ids"))
        assert _c360(capsys, "c360:playbook", "--account", "ACME-001", *project.args)[0] == 0
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs_count()
    # Unknown: refused before any run, nothing registered.
    code, err = _c360(capsys, "c360:qbr", "--account", "GLOBEX-02", *project.args)
    assert (code, err) == (2, "c360: UNKNOWN_ACCOUNT: unknown account id 'GLOBEX-02'; did you mean GLOBEX-002?\n")
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs_count() == runs
    assert _registered() == FIXTURE_ACTED_ON
    # GLOBEX-002 is green and renews after the window: not acted on, yet asking for it works.
    assert _c360(capsys, "c360:playbook", "--account", "GLOBEX-002", *project.args)[0] == 0
    assert (project.customer / "playbooks" / "GLOBEX-002.md").exists()
    assert _registered() == sorted([*FIXTURE_ACTED_ON, "GLOBEX-002"])
    assert _c360(capsys, "c360:qbr", "--account", "GLOBEX-002", *project.args)[0] == 0


def test_account_facts_give_no_tier_to_an_unscored_account_and_its_status_in_words():
    """NEWCO-011 has too little data for a score: its page shows why in words, and no tier."""
    newco = AccountInputs(
        account={"account_id": "NEWCO-011"},
        health={"tier": None, "score": None, "status": "insufficient_data", "lifecycle": "onboarding"},
        signals=[],
        renewals=[],
        contacts=[],
        next_renewal=None,
    )
    facts = account_facts(newco)
    assert "tier" not in facts and "score" not in facts
    assert (facts["status"].value, facts["lifecycle"].value) == ("not enough data yet", "onboarding")
    stark = dataclasses.replace(newco, health={"tier": "red", "score": 28, "status": "scored", "lifecycle": "active"})
    facts = account_facts(stark)
    assert (facts["tier"].value, facts["score"].value, facts["status"].value) == ("red", 28, "scored")
