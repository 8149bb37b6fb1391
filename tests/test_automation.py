"""The schedule and sensors: a changed input folder requests a chain run; a changed account, only its own refresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl

from c360_dagster.defs.automation import account_refresh_sensor, input_files_sensor
from c360_dagster.defs.customer import (
    CHAIN_ASSETS,
)
from c360_dagster.defs.resources import C360Project
from c360_dagster.domain.scoring.changes import account_digests, changed_accounts

REPO = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path, fixtures: Path) -> C360Project:
    return C360Project(
        fixtures_dir=str(fixtures),
        configs_dir=str(REPO / "configs" / "customer"),
        contracts_dir=str(REPO / "contracts" / "schemas"),
        artifacts_dir=str(tmp_path / "artifacts"),
    )


def test_input_files_sensor_requests_a_run_only_when_files_change(tmp_path):
    folder = tmp_path / "inputs"
    shutil.copytree(REPO / "fixtures" / "customer", folder)
    project = _project(tmp_path, folder)
    first = input_files_sensor(dg.build_sensor_context(cursor=None, resources={"project": project}))
    assert isinstance(first, dg.RunRequest)
    cursor = first.run_key
    unchanged = input_files_sensor(dg.build_sensor_context(cursor=cursor, resources={"project": project}))
    assert isinstance(unchanged, dg.SkipReason)
    (folder / "nps.json").write_text("[]", encoding="utf-8")
    changed = input_files_sensor(dg.build_sensor_context(cursor=cursor, resources={"project": project}))
    assert isinstance(changed, dg.RunRequest) and changed.run_key != cursor


def test_missing_input_folder_is_skipped(tmp_path):
    project = _project(tmp_path, tmp_path / "absent")
    result = input_files_sensor(dg.build_sensor_context(resources={"project": project}))
    assert isinstance(result, dg.SkipReason)


def test_changed_accounts_compares_per_account_digests(tmp_path):
    health = pl.DataFrame({"account_id": ["A", "B"], "score": [80, 40]})
    signals = pl.DataFrame({"account_id": ["B"], "code": ["SIG_X"]})
    renewals = pl.DataFrame({"account_id": ["A"], "bucket": ["High"]})
    before = account_digests(health, signals, renewals)
    recorded = tmp_path / "digests.parquet"
    assert changed_accounts(before, recorded) == ["A", "B"]  # nothing recorded yet: all
    before.write_parquet(recorded)
    assert changed_accounts(account_digests(health, signals, renewals), recorded) == []
    moved = account_digests(health.with_columns(score=pl.Series([80, 35])), signals, renewals)
    assert changed_accounts(moved, recorded) == ["B"]


def test_account_refresh_sensor_requests_only_changed_partitions(chained):
    instance, project = chained  # the chain run on a copy of the fixtures, `inputs`
    folder = Path(project.fixtures_dir)

    def tick() -> list[str]:
        context = dg.build_sensor_context(instance=instance, resources={"project": project})
        result = account_refresh_sensor(context)
        return sorted(request.partition_key for request in result.run_requests)

    # First sight: every account with a partition (the acted-on ones, red or amber renewing).
    assert tick() == ["ACME-001", "INITECH-003", "PIPE-004", "SOYLENT-006", "STARK-008", "WAYNE-009"]
    # ACME's NPS answers vanish: only ACME's health changes.
    nps = json.loads((folder / "nps.json").read_text())
    (folder / "nps.json").write_text(json.dumps([r for r in nps if r["account_id"] != "ACME-001"]))
    dg.materialize(CHAIN_ASSETS, instance=instance, resources={"project": project}, partition_key="0")
    assert tick() == ["ACME-001"]
    # GLOBEX-002 (green, renewing after the window) changes too, but has no partition and no pack.
    (folder / "nps.json").write_text(json.dumps([r for r in nps if r["account_id"] not in {"ACME-001", "GLOBEX-002"}]))
    dg.materialize(CHAIN_ASSETS, instance=instance, resources={"project": project}, partition_key="0")
    assert tick() == []
