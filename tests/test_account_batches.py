"""Per-account assets over a range of accounts: one run, each account's own gates, same bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from c360_dagster.defs.accounts import playbook, qbr_pack
from c360_dagster.domain.governance import eventlog, metrics
from c360_dagster.runner import ProjectPaths, batches_of, run_batches

# Accounts adjacent among the chain's partitions (the acted-on ones: red, or amber and renewing,
# registered sorted by id): STARK-008 is red, PIPE-004, SOYLENT-006 (held at amber: no usage data)
# and WAYNE-009 amber.
RANGE = ("PIPE-004", "WAYNE-009")
IN_RANGE = ["PIPE-004", "SOYLENT-006", "STARK-008", "WAYNE-009"]


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def _pack_bytes(customer: Path, account_id: str) -> dict[str, bytes]:
    pack = customer / f"qbr_{account_id}"
    files = {p.name: p.read_bytes() for p in sorted(pack.iterdir())}
    return {**files, "deck": (customer / f"qbr_{account_id}.pptx").read_bytes()}


@pytest.mark.parametrize(
    ("ordered", "wanted", "size", "workers", "expected"),
    [
        # By hand: wanted keys in the partitions' order, adjacent or not (D is not wanted).
        (list("ABCDEFG"), "GEBCF", 5, 1, [list("BCEFG")]),
        # A batch is cut at `size` keys, into as few batches as that allows, of even sizes.
        (list("ABCDEFG"), "BCEG", 2, 1, [["B", "C"], ["E", "G"]]),
        (list("ABCDEFG"), "ABCDEFG", 3, 1, [["A", "B"], ["C", "D"], ["E", "F", "G"]]),
        (list("ABCDEFG"), "ABCDEFG", 6, 1, [["A", "B", "C"], ["D", "E", "F", "G"]]),
        (list("ABC"), "", 3, 1, []),
        (list("ABC"), "", 3, 2, []),
        # Wanted keys that are not partitions are not run.
        (list("ABC"), "CZ", 3, 1, [["C"]]),
        # Every worker gets a batch even when one batch could hold them all (scattered or not).
        (list("ABCDEFG"), "GEBCF", 5, 2, [["B", "C"], ["E", "F", "G"]]),
        (list("ABCDEFG"), "ABCDEFG", 200, 3, [["A", "B"], ["C", "D"], ["E", "F", "G"]]),
        # ... but never an empty one.
        (list("ABCDEFG"), "C", 5, 2, [["C"]]),
        (list("ABCDEFG"), "CE", 5, 4, [["C"], ["E"]]),
        # Beyond one batch per worker, a whole number of batches per worker: 7 keys of at most
        # 3 on 2 workers are 4 batches (2 per worker: 4 and 3 keys), not 3 (one worker 2 batches).
        (list("ABCDEFG"), "ABCDEFG", 3, 2, [["A"], ["B", "C"], ["D", "E"], ["F", "G"]]),
        # Exactly one full batch per worker stays so.
        (list("ABCDEFG"), "ABCDEF", 3, 2, [["A", "B", "C"], ["D", "E", "F"]]),
    ],
)
def test_batches_are_the_wanted_keys_in_partition_order(ordered, wanted, size, workers, expected):
    assert batches_of(ordered, wanted, size, workers, least=1) == expected


@pytest.mark.parametrize(
    ("count", "workers", "runs"),
    # By hand, at most 200 accounts a run and at least 20 a worker: 150 and 400 fit one run per
    # worker; 401 need three runs, so four (two per worker); 1000 need five, so six; 999 on 3
    # workers need five, so six. 39 accounts would leave a worker fewer than 20: one run; 40
    # are two of 20; 59 on 3 workers are two runs, 60 three.
    [
        (150, 2, 2),
        (400, 2, 2),
        (401, 2, 4),
        (450, 2, 4),
        (1000, 2, 6),
        (999, 3, 6),
        (150, 1, 1),
        (19, 2, 1),
        (39, 2, 1),
        (40, 2, 2),
        (59, 3, 2),
        (60, 3, 3),
    ],
)
def test_batches_keep_the_size_and_share_the_accounts_evenly_between_workers(count, workers, runs):
    keys = [f"ACC-{index:05d}" for index in range(count)]
    batches = batches_of(keys, keys, 200, workers, least=20)
    assert [key for batch in batches for key in batch] == keys
    assert max(map(len, batches)) <= 200
    assert max(map(len, batches)) - min(map(len, batches)) <= 1
    assert len(batches) == runs


def test_a_range_run_checks_every_account_and_one_block_stops_the_batch(chained):
    instance, project = chained
    blocked = dg.materialize(
        [playbook, qbr_pack],
        selection=[qbr_pack],
        instance=instance,
        resources={"project": project},
        tags=_range_tags(*RANGE),
        raise_on_error=False,
    )
    assert not blocked.success
    duty = {e.partition: e.passed for e in blocked.get_asset_check_evaluations() if e.check_name == "duty_of_care"}
    assert duty == {"PIPE-004": True, "SOYLENT-006": True, "STARK-008": False, "WAYNE-009": True}
    privacy = [e for e in blocked.get_asset_check_evaluations() if e.check_name == "privacy_signoff"]
    assert sorted(e.partition for e in privacy) == IN_RANGE and all(e.passed for e in privacy)
    # Blocked before writing: no account of the batch got a pack.
    assert not list(project.paths.customer_dir.glob("qbr_*"))
    assert not instance.get_materialized_partitions(qbr_pack.key)


@pytest.mark.untraced
def test_a_range_run_writes_each_account_as_its_own_run_would(chained):
    instance, project = chained
    batch = dg.materialize(
        [playbook, qbr_pack], instance=instance, resources={"project": project}, tags=_range_tags(*RANGE)
    )
    assert batch.success
    assert instance.get_materialized_partitions(qbr_pack.key) == set(IN_RANGE)
    assert instance.get_materialized_partitions(playbook.key) == set(IN_RANGE)
    # The signed log names each account's partition, so lineage stays per account.
    logged = [(e["asset"], e["partition"]) for e in eventlog.read_events(project.paths.events_path)]
    assert [p for a, p in logged if a == "qbr_pack"] == IN_RANGE
    assert [p for a, p in logged if a == "playbook"] == IN_RANGE
    # One run of the range counts its packs once each, under no per-account series.
    assert metrics.read_metrics(project.paths.metrics_path) == {
        "c360_accounts_loaded_total": 12,
        "c360_accounts_scored_total": 10,  # not NEWCO-011 (too little data), OLDCO-012 (churned)
        "c360_qbr_packs_generated_total": len(IN_RANGE),
    }
    # Each partition's materialization carries its own account's facts only.
    events = {
        (e.asset_key.to_user_string(), e.partition): e.materialization.metadata
        for e in batch.get_asset_materialization_events()
    }
    health = json.loads((project.paths.customer_dir / "health.json").read_text(encoding="utf-8"))["accounts"]
    for account_id in IN_RANGE:
        plan = json.loads((project.paths.customer_dir / "playbooks" / f"{account_id}.json").read_text(encoding="utf-8"))
        played = events[("playbook", account_id)]
        assert played["plays"].value == plan["plays"]
        assert played["path"].value.endswith(f"playbooks/{account_id}.md")
        files = events[("qbr_pack", account_id)]["files"].value
        assert files and all(name.startswith((f"qbr_{account_id}", f"review_{account_id}")) for name in files)
        for kind in ("playbook", "qbr_pack"):
            facts = events[(kind, account_id)]
            assert (facts["tier"].value, facts["score"].value) == (
                health[account_id]["tier"],
                health[account_id]["score"],
            )
    stark = events[("qbr_pack", "STARK-008")]
    assert (stark["tier"].value, stark["score"].value, stark["next_renewal"].value) == ("red", 28, "2026-10-31")
    # fixtures/customer/subs.csv: PIPE-S1 renews 2026-10-20, WAYNE-S1 2027-01-20.
    assert events[("playbook", "PIPE-004")]["next_renewal"].value == "2026-10-20"
    assert events[("playbook", "WAYNE-009")]["next_renewal"].value == "2027-01-20"
    from_batch = _pack_bytes(project.paths.customer_dir, "STARK-008")
    shutil.rmtree(project.paths.customer_dir / "qbr_STARK-008")
    alone = dg.materialize(
        [playbook, qbr_pack], instance=instance, resources={"project": project}, partition_key="STARK-008"
    )
    assert alone.success
    assert _pack_bytes(project.paths.customer_dir, "STARK-008") == from_batch


@pytest.mark.untraced
def test_run_batches_runs_scattered_accounts_in_one_run_in_worker_processes_and_returns_user_errors(ran_project):
    project = ran_project
    shutil.rmtree(project.customer / "stages" / "playbooks" / "STARK-008")  # its playbook stage
    shutil.rmtree(project.customer / "qbr_ACME-001")
    paths = ProjectPaths(configs_dir=project.configs, artifacts_dir=str(project.artifacts))
    scattered = ("ACME-001", "PIPE-004", "UMBRELLA-005")
    failed = run_batches("c360_qbr", paths, [scattered, ("STARK-008",)], workers=2)
    assert list(failed) == [("STARK-008",)]
    assert failed[("STARK-008",)].startswith("DUTY_PLAYBOOK_MISSING: account STARK-008 is red")
    assert (project.customer / "qbr_ACME-001" / "scorecard.md").exists()
    with dg.DagsterInstance.get() as instance:
        ordered = instance.get_dynamic_partitions("account")
        (run,) = instance.get_runs(filters=dg.RunsFilter(tags={"c360/accounts": " ".join(scattered)}))
        assert run.is_success
        records = instance.get_records_for_run(run.run_id).records
    # Not adjacent: other accounts lie between them among the partitions, which a plain range would run.
    where = sorted(ordered.index(account) for account in scattered)
    assert where[-1] - where[0] + 1 > len(scattered)
    # One run planned, materialized and checked exactly these accounts, none of those between them.
    planned = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in records
        if r.event_log_entry.dagster_event_type == "ASSET_MATERIALIZATION_PLANNED"
    ]
    assert sorted(data.partition for data in planned) == list(scattered)
    materialized = [
        r.event_log_entry.dagster_event.partition
        for r in records
        if r.event_log_entry.dagster_event_type == "ASSET_MATERIALIZATION"
    ]
    assert sorted(materialized) == list(scattered)
    checks = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in records
        if r.event_log_entry.dagster_event_type == "ASSET_CHECK_EVALUATION"
    ]
    checked = {(check.check_name, check.partition) for check in checks}
    assert checked == {(gate, account) for gate in ("duty_of_care", "privacy_signoff") for account in scattered}
