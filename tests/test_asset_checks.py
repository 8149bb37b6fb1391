"""Asset checks evaluated through Dagster itself (dg.materialize on a temporary instance)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
from conftest import project_instance_for_test

from c360_dagster.defs.accounts import playbook, qbr_pack
from c360_dagster.defs.customer import (
    CHAIN_ASSETS,
    customer_360,
    customer_inputs,
)
from c360_dagster.defs.inputs import input_files
from c360_dagster.defs.lake import lake_assets
from c360_dagster.defs.resources import C360Project

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "customer"
LOAD = [customer_inputs, customer_360]
ONE_SHARD = "0"  # configs/customer/scale.yaml: one shard
# The UI's checks list (a column about 250 px wide) cut `accounts_have_active_subscription` (33
# characters) in the middle and showed `accounts_have_subscriptions` (27) whole; 25 leaves room
# for wide letters. tests/test_ui_browser.py looks at the names as drawn.
LONGEST_CHECK_NAME = 25


def lake_table(table: str) -> dg.AssetsDefinition:
    return next(asset for asset in lake_assets if asset.key == dg.AssetKey(["lake", f"{table}_table"]))


def _project(tmp_path: Path, fixtures: Path = FIXTURES) -> C360Project:
    return C360Project(
        fixtures_dir=str(fixtures),
        configs_dir=str(REPO / "configs" / "customer"),
        contracts_dir=str(REPO / "contracts" / "schemas"),
        artifacts_dir=str(tmp_path / "artifacts"),
    )


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def instance():
    with project_instance_for_test() as test_instance:
        yield test_instance


def test_every_check_has_a_short_name_and_says_in_a_sentence_what_it_asserts():
    from c360_dagster.definitions import defs

    specs = [spec for asset in defs.assets if isinstance(asset, dg.AssetsDefinition) for spec in asset.check_specs]
    assert len(specs) == 17  # 10 integrity checks, 3 health and 2 signal rules, 2 QBR gates
    for spec in specs:
        assert re.fullmatch("[a-z][a-z0-9_]*", spec.name) and len(spec.name) <= LONGEST_CHECK_NAME, spec.name
        assert spec.description and spec.description[0].isupper() and spec.description.endswith("."), spec.name


@pytest.mark.untraced
def test_checks_pass_on_the_bundled_fixtures(tmp_path, instance):
    result = dg.materialize(
        CHAIN_ASSETS, instance=instance, resources={"project": _project(tmp_path)}, partition_key=ONE_SHARD
    )
    evaluations = _evaluations(result)
    errors = {key: e for key, e in evaluations.items() if e.severity == dg.AssetCheckSeverity.ERROR}
    assert len(errors) >= 10
    assert all(e.passed for e in errors.values()), [k for k, e in errors.items() if not e.passed]
    # The fixtures deliberately hold an account without usage (SOYLENT) and one whose only
    # subscription has churned (OLDCO): the soft WARN checks report them.
    recent = evaluations[("customer_360", "has_recent_usage")]
    assert not recent.passed and recent.severity == dg.AssetCheckSeverity.WARN
    # The failing rows are a table on the check's page in the UI.
    rows = recent.metadata["failing_rows"].value
    assert "account_id" in [column.name for column in rows.schema.columns]
    # Only SOYLENT should be using the product: OLDCO has churned and NEWCO-011 started 12 days ago.
    assert [record.data["account_id"] for record in rows.records] == ["SOYLENT-006"]


@pytest.mark.untraced
def test_warn_check_fails_with_metadata_on_crafted_input(tmp_path, instance):
    crafted = tmp_path / "crafted"
    shutil.copytree(FIXTURES, crafted)
    with open(crafted / "accounts.csv", "a", encoding="utf-8") as handle:
        handle.write("LONELY-1,Lonely Ltd,smb,,,,2026-01-01\n")
    result = dg.materialize(
        LOAD, instance=instance, resources={"project": _project(tmp_path, crafted)}, partition_key=ONE_SHARD
    )
    check = _evaluations(result)[("customer_360", "has_subscription")]
    assert not check.passed
    assert check.metadata["count"].value == 1
    rows = check.metadata["failing_rows"].value
    assert [record.data for record in rows.records] == [{"account_id": "LONELY-1"}]
    assert [(column.name, column.type) for column in rows.schema.columns] == [("account_id", "string")]


@pytest.mark.untraced
def test_qbr_gates_are_checks_per_partition(chained):
    instance, project = chained
    # STARK-008 is red in the fixtures: without a playbook the duty-of-care gate blocks it.
    blocked = dg.materialize(
        [playbook, qbr_pack],
        selection=[qbr_pack],
        instance=instance,
        resources={"project": project},
        partition_key="STARK-008",
        raise_on_error=False,
    )
    assert not blocked.success
    duty = _evaluations(blocked)[("qbr_pack", "duty_of_care")]
    assert not duty.passed and duty.metadata["code"].value == "DUTY_PLAYBOOK_MISSING"
    assert not (project.paths.customer_dir / "qbr_STARK-008").exists()
    allowed = dg.materialize(
        [playbook, qbr_pack], instance=instance, resources={"project": project}, partition_key="STARK-008"
    )
    assert all(e.passed for e in allowed.get_asset_check_evaluations())
    assert (project.paths.customer_dir / "qbr_STARK-008" / "scorecard.md").exists()


def test_ui_metadata_row_counts_schema_and_tier_table(tmp_path, chained):
    instance, project = chained
    event = instance.get_latest_materialization_event(dg.AssetKey("account_health"))
    # Also in the UI, as a whole number: the 10 accounts scored, not NEWCO-011 or OLDCO-012 (below).
    scored = event.asset_materialization.metadata["metric/c360_accounts_scored_total"]
    assert isinstance(scored, dg.IntMetadataValue) and scored.value == 10
    # The roll-up describes the whole book.
    event = instance.get_latest_materialization_event(dg.AssetKey(["report", "account_health_report"]))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 12
    # Every column says what it means: the lake contract's words, or the frame's own where the
    # lake packs it into JSON (a component's parts).
    frame_columns = {column.name: column for column in metadata["dagster/column_schema"].value.columns}
    assert all(column.description for column in frame_columns.values())
    assert frame_columns["score"].description.startswith("Health score out of 100")
    assert frame_columns["adoption_weight"].description.startswith("The adoption component's effective weight")
    # The fixtures README: 2 red, 4 amber, 4 green; NEWCO-011 (too little data) and OLDCO-012
    # (churned) have no tier and are counted apart, by why, in words: the two tables count all 12.
    tiers = {record.data["tier"]: record.data["accounts"] for record in metadata["tier_distribution"].value.records}
    assert tiers == {"red": 2, "amber": 4, "green": 4}
    assert metadata["held_at_amber"].value == 1  # SOYLENT-006: green's score, too little measured
    unscored = {
        record.data["not scored because"]: record.data["accounts"]
        for record in metadata["unscored_accounts"].value.records
    }
    assert unscored == {"not enough data yet": 1, "churned": 1, "not started": 0}
    lifecycle = {
        record.data["lifecycle"]: record.data["accounts"] for record in metadata["lifecycle_distribution"].value.records
    }
    assert lifecycle == {"not_started": 0, "onboarding": 1, "active": 10, "churned": 1}
    # A lake table shows its DuckDB name, where the lake is, and its contract's columns.
    dg.materialize(
        [lake_table("customer_signals")],
        instance=instance,
        resources={"project": project},
        partition_key=ONE_SHARD,
    )
    lake = instance.get_latest_materialization_event(
        dg.AssetKey(["lake", "customer_signals_table"])
    ).asset_materialization
    assert lake.metadata["dagster/table_name"].value == "c360.main.customer_signals"
    columns = {column.name: column for column in lake.metadata["dagster/column_schema"].value.columns}
    assert lake.metadata["lake_format"].value == "duckdb"
    assert lake.metadata["lake"].value == str(tmp_path / "artifacts" / "lake" / "c360.duckdb")
    assert list(columns)[:4] == ["as_of", "shard", "account_id", "code"]
    assert columns["as_of"].type == "DATE NOT NULL" and columns["snoozed_until"].type == "DATE"
    assert columns["shard"].type == "BIGINT NOT NULL"
    assert columns["code"].description == "Signal code from the catalog."
    renewals = instance.get_latest_materialization_event(dg.AssetKey(["report", "renewal_forecasts_report"]))
    assert "# Renewal forecast" in renewals.asset_materialization.metadata["summary"].value


@pytest.mark.untraced
def test_a_load_observes_each_input_file_then_records_their_hashes_as_its_inputs(tmp_path, instance):
    job = dg.define_asset_job("load", selection=dg.AssetSelection.assets(input_files, customer_inputs))
    loading = dg.Definitions(
        assets=[input_files, customer_inputs], jobs=[job], resources={"project": _project(tmp_path)}
    )
    assert loading.resolve_job_def("load").execute_in_process(instance=instance).success
    for name in ("accounts", "subs", "usage"):
        record = instance.fetch_observations(dg.AssetKey(["inputs", name]), limit=1).records[0]
        digest = "sha256:" + hashlib.sha256((FIXTURES / f"{name}.csv").read_bytes()).hexdigest()
        assert record.asset_observation.data_version == digest
        assert record.asset_observation.metadata["file"].value == f"{name}.csv"
    # The materialization of the split (customer_inputs) names the input versions it was made from.
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_inputs")).asset_materialization
    accounts_digest = "sha256:" + hashlib.sha256((FIXTURES / "accounts.csv").read_bytes()).hexdigest()
    assert event.tags["dagster/input_data_version/inputs/accounts"] == accounts_digest
