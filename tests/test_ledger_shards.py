"""One signed chain per shard, pinned by the roll-up event's shard heads: each attack fails verify.

The main log holds the split and the roll-up; shards 0, 1 and 2 each append to their own chain
(`shards/<k>/events.jsonl`); the roll-up event carries each shard chain's head (seq, line hash).
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from forked import ForkServer

from c360_dagster.console import main
from c360_dagster.defs.resources import C360Project
from c360_dagster.domain.core.io import canonical_json, sha256_bytes
from c360_dagster.domain.governance import eventlog
from c360_dagster.domain.ingest.shards import shard_of
from c360_dagster.instance import ensure_dagster_home, witnessed_heads

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
SHARDS = 3
REPO = Path(__file__).resolve().parents[1]


def event(asset: str, partition: str | None = None, **fields) -> dict:
    return {
        "asset": asset,
        "partition": partition,
        "run_id": "run-1",
        "as_of": "2026-09-30",
        "config_hash": None,
        "code_version": "1",
        "inputs": {},
        "outputs": {f"{asset}.json": sha256_bytes(f"{asset}{partition}".encode())},
        **fields,
    }


@pytest.fixture
def main_log(tmp_path: Path) -> Path:
    """A split event, two events in each of 3 shard chains, then the roll-up (main log event 2)."""
    path = tmp_path / "governance" / "events.jsonl"
    eventlog.append_event(path, event("shard_inputs"), KEY)
    for shard in map(str, range(SHARDS)):
        for asset in ("customer_360", "account_health"):
            eventlog.append_event(eventlog.shard_log_path(path, shard), event(asset, shard, shard=shard), KEY)
    eventlog.append_event(path, event("health_rollup", shards=eventlog.shard_heads(path, SHARDS)), KEY)
    return path


def verify(main_log: Path, witnessed: dict | None = None) -> eventlog.LedgerVerdict:
    return eventlog.verify_ledger(main_log, KEY.public_key(), witnessed)


def shard_problem(verdict: eventlog.LedgerVerdict, shard: str) -> tuple[int | None, str | None]:
    assert verdict.main.ok and not verdict.ok
    return verdict.shards[shard].result.bad_line, verdict.shards[shard].result.reason


def test_the_roll_up_carries_each_shard_chains_head_and_the_ledger_verifies(main_log: Path) -> None:
    rollup = eventlog.read_events(main_log)[-1]
    chain_1 = eventlog.shard_log_path(main_log, "1")
    assert chain_1 == main_log.parent / "shards" / "1" / "events.jsonl"
    last_line = chain_1.read_bytes().splitlines()[-1]
    assert rollup["shards"]["1"] == {"seq": 2, "hash": sha256_bytes(last_line)}
    assert sorted(rollup["shards"]) == ["0", "1", "2"]
    assert [e["shard"] for e in eventlog.read_events(chain_1)] == ["1", "1"]
    verdict = verify(main_log)
    assert verdict.ok and verdict.main == eventlog.VerifyResult(True, 2) and verdict.rollup_seq == 2
    assert {k: (v.result, v.rolled_up, v.ahead) for k, v in verdict.shards.items()} == {
        k: (eventlog.VerifyResult(True, 2), 2, 0) for k in ("0", "1", "2")
    }


def test_a_shard_chain_extended_after_the_roll_up_is_fine_and_reported_ahead(main_log: Path) -> None:
    eventlog.append_event(eventlog.shard_log_path(main_log, "2"), event("customer_signals", "2", shard="2"), KEY)
    verdict = verify(main_log)
    assert verdict.ok and verdict.shards["2"].ahead == 1 and verdict.shards["0"].ahead == 0


def test_an_edited_shard_line_is_reported(main_log: Path) -> None:
    chain = eventlog.shard_log_path(main_log, "1")
    lines = chain.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["as_of"] = "2026-10-01"
    lines[0] = canonical_json(record).encode() + b"\n"
    chain.write_bytes(b"".join(lines))
    assert shard_problem(verify(main_log), "1") == (
        1,
        "signature does not verify (the line was edited, or signed with a key other than the trusted one)",
    )


def test_a_shard_chains_last_line_dropped_is_reported_even_with_its_older_head_put_back(main_log: Path) -> None:
    chain = eventlog.shard_log_path(main_log, "0")
    head = eventlog.head_path(chain)
    # The attacker kept the head file from when the chain held one event: chain and head agree.
    lines = chain.read_bytes().splitlines(keepends=True)
    scratch = main_log.parent.parent / "scratch" / "events.jsonl"
    eventlog.append_event(scratch, event("customer_360", "0", shard="0"), KEY)
    assert scratch.read_bytes() == lines[0]  # the same first event, so its head is chain 0's older head
    chain.write_bytes(lines[0])
    shutil.copy(eventlog.head_path(scratch), head)
    assert eventlog.verify_log(chain, KEY.public_key(), shard="0").ok  # alone, the chain looks whole
    assert shard_problem(verify(main_log), "0") == (
        None,
        "the roll-up (main log event 2) witnessed event 2 but the log holds 1: "
        "the log was wiped, truncated or rolled back",
    )


def test_a_deleted_shard_chain_is_reported(main_log: Path) -> None:
    shutil.rmtree(eventlog.shard_log_path(main_log, "2").parent)
    assert shard_problem(verify(main_log), "2") == (
        None,
        "the roll-up (main log event 2) witnessed event 2 but the log holds 0: "
        "the log was wiped, truncated or rolled back",
    )


def test_two_shards_logs_swapped_are_reported(main_log: Path) -> None:
    folder_0, folder_1 = (eventlog.shard_log_path(main_log, k).parent for k in ("0", "1"))
    folder_0.rename(folder_0.with_name("tmp"))
    folder_1.rename(folder_0)
    folder_0.with_name("tmp").rename(folder_1)
    verdict = verify(main_log)
    expected = (
        "the event belongs to shard {}'s chain, not shard {}'s chain (chains swapped, or a line moved between them)"
    )
    assert shard_problem(verdict, "0") == (1, expected.format("1", "0"))
    assert shard_problem(verdict, "1") == (1, expected.format("0", "1"))


def test_a_shard_event_moved_into_the_main_log_is_reported(main_log: Path) -> None:
    records = eventlog.read_events(eventlog.shard_log_path(main_log, "0"))
    fresh = main_log.parent.parent / "fresh" / "events.jsonl"
    eventlog.append_event(fresh, {k: records[0][k] for k in eventlog.EVENT_FIELDS | {"shard"}}, KEY)
    verdict = eventlog.verify_ledger(fresh, KEY.public_key())
    assert verdict.main.reason == (
        "the event belongs to shard 0's chain, not the main log (chains swapped, or a line moved between them)"
    )


def test_a_forged_roll_up_head_is_reported(main_log: Path) -> None:
    # Roll shard 1 back to one event, and make the roll-up say that is all it held.
    chain = eventlog.shard_log_path(main_log, "1")
    first = chain.read_bytes().splitlines(keepends=True)[0]
    chain.write_bytes(first)
    lines = main_log.read_bytes().splitlines(keepends=True)
    rollup = json.loads(lines[-1])
    rollup["shards"]["1"] = {"seq": 1, "hash": sha256_bytes(first.rstrip(b"\n"))}
    lines[-1] = canonical_json(rollup).encode() + b"\n"
    main_log.write_bytes(b"".join(lines))
    verdict = verify(main_log)
    assert not verdict.ok and verdict.main.bad_line == 2
    assert verdict.main.reason.startswith("signature does not verify")
    # Re-signed with a key other than the trusted one, it fails just the same.
    body = {k: v for k, v in rollup.items() if k != "signature"}
    lines[-1] = canonical_json({**body, "signature": eventlog._sign(OTHER_KEY, body)}).encode() + b"\n"
    main_log.write_bytes(b"".join(lines))
    assert verify(main_log).main.bad_line == 2 and not verify(main_log).ok


def test_the_instance_witnesses_each_shard_chain_too(tmp_path: Path) -> None:
    """Before any roll-up, a shard chain cut back with its older head is caught by the instance's witness."""
    path = tmp_path / "events.jsonl"
    eventlog.append_event(path, event("shard_inputs"), KEY)
    chain = eventlog.shard_log_path(path, "2")
    first = eventlog.append_event(chain, event("customer_360", "2", shard="2"), KEY)
    older_head = eventlog.head_path(chain).read_bytes()
    second = eventlog.append_event(chain, event("account_health", "2", shard="2"), KEY)
    witnessed = {str(chain): (2, eventlog.line_hash(second))}
    assert verify(path, witnessed).ok and verify(path).rollup_seq is None
    chain.write_bytes(canonical_json(first).encode() + b"\n")
    eventlog.head_path(chain).write_bytes(older_head)
    assert verify(path).ok  # alone, the cut chain and its older head agree
    assert shard_problem(verify(path, witnessed), "2") == (
        None,
        "the Dagster instance witnessed event 2 but the log holds 1: the log was wiped, truncated or rolled back",
    )


def test_a_folder_beside_the_shard_chains_is_not_taken_for_one(main_log: Path) -> None:
    stray = main_log.parent / "shards" / "old" / "events.jsonl"
    stray.parent.mkdir()
    stray.write_text("not an event\n")
    assert list(eventlog.shard_logs(main_log)) == ["0", "1", "2"] and verify(main_log).ok


def test_a_shard_without_events_has_the_genesis_head_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    eventlog.append_event(path, event("health_rollup", shards=eventlog.shard_heads(path, 2)), KEY)
    assert eventlog.read_events(path)[0]["shards"] == {k: {"seq": 0, "hash": eventlog.GENESIS} for k in ("0", "1")}
    verdict = verify(path)
    assert verdict.ok and verdict.shards == {
        k: eventlog.ShardVerdict(eventlog.VerifyResult(True, 0), 0) for k in ("0", "1")
    }


def test_shards_append_to_their_own_chains_in_parallel(forks: ForkServer, tmp_path: Path) -> None:
    path = tmp_path / "governance" / "events.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from c360_dagster.domain.governance import eventlog
        key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        shard = sys.argv[1]
        for i in range(10):
            eventlog.append_event(eventlog.shard_log_path(Path({str(path)!r}), shard), {{"asset": "account_health",
                "partition": shard, "run_id": str(i), "as_of": "2026-09-30", "config_hash": None,
                "code_version": "1", "inputs": {{}}, "outputs": {{}}, "shard": shard}}, key)
        """
    )
    workers = [forks.start([sys.executable, "-c", script, str(k)]) for k in range(4)]
    assert [w.wait(timeout=60) for w in workers] == [0] * 4
    eventlog.append_event(path, event("health_rollup", shards=eventlog.shard_heads(path, 4)), KEY)
    verdict = verify(path)
    assert verdict.ok and [v.result.events_checked for v in verdict.shards.values()] == [10] * 4
    assert [v.rolled_up for v in verdict.shards.values()] == [10] * 4


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["0", "1"]))
def toy_shard(context, project: C360Project) -> None:
    shard = context.partition_key
    with project.stages.writing(shard), project.stages.stage(f"shards/{shard}/toy", shard) as out:
        digest = out.write_text(f"shards/{shard}/toy.txt", shard)
    project.ledger.record_event(context, as_of="2026-09-30", inputs={}, outputs={"toy.txt": digest}, shard=shard)


@dg.asset(deps=[toy_shard])
def toy_rollup(context, project: C360Project) -> None:
    with project.stages.writing():
        project.ledger.record_event(context, as_of="2026-09-30", inputs={}, outputs={}, rollup_of=2)


@pytest.mark.untraced
def test_shard_assets_sign_their_own_chains_and_the_roll_up_pins_them(tmp_path: Path, monkeypatch, capsys) -> None:
    """Through Dagster: shard partitions append to their chains (witnessed by the instance), the roll-up to the main log."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    project = C360Project(artifacts_dir=str(tmp_path / "artifacts"), configs_dir=str(REPO / "configs" / "customer"))

    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        for shard in ("0", "1"):
            assert dg.materialize([toy_shard], partition_key=shard, instance=instance, resources={"project": project})
        assert dg.materialize(
            [toy_shard, toy_rollup], selection=[toy_rollup], instance=instance, resources={"project": project}
        )
    main_log = project.paths.events_path
    (rollup,) = eventlog.read_events(main_log)
    assert rollup["asset"] == "toy_rollup" and "shard" not in rollup
    assert rollup["shards"] == {k: eventlog.chain_head(project.ledger.shard_log_path(k)) for k in ("0", "1")}
    assert [e["shard"] for e in eventlog.read_events(project.ledger.shard_log_path("1"))] == ["1"]
    witnessed = witnessed_heads()
    assert witnessed[str(project.ledger.shard_log_path("0"))] == (1, rollup["shards"]["0"]["hash"])
    assert witnessed[str(main_log)][0] == 1
    code = main(["c360:verify", "--artifacts", project.artifacts_dir, "--configs", project.configs_dir])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "  head: event 1 witnessed by the Dagster instance",
        "  shards: 2 chains, 2 events, each holding the head the roll-up in event 1 recorded",
    ]


def test_lineage_reads_the_accounts_own_shard_chain(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    eventlog.append_event(path, event("shard_inputs"), KEY)
    for shard in ("0", "1"):
        chain = eventlog.shard_log_path(path, shard)
        view, health = f"sha256:view{shard}", f"sha256:health{shard}"
        eventlog.append_event(chain, event("customer_360", shard, shard=shard, outputs={"view": view}), KEY)
        eventlog.append_event(
            chain,
            event("account_health", shard, shard=shard, inputs={"customer_360": view}, outputs={"frame": health}),
            KEY,
        )
    # Before any roll-up, lineage has only the main log.
    assert eventlog.account_events(path, lambda n: 1) == eventlog.read_events(path)
    eventlog.append_event(path, event("health_rollup", shards=eventlog.shard_heads(path, 2)), KEY)
    playbook = event("playbook", "ACME-001", inputs={"account_health": "sha256:health1"}, outputs={"p": "sha256:p"})
    eventlog.append_event(path, playbook, KEY)
    asked: list[int] = []

    def account_shard(shards: int) -> int:
        asked.append(shards)
        return 1

    events = eventlog.account_events(path, account_shard)
    assert asked == [2]  # the shard count is the one the latest roll-up combined
    chain = eventlog.lineage(events, "ACME-001")
    assert [(step["asset"], step["partition"], step["upstream"]) for step in chain] == [
        ("customer_360", "1", {}),
        ("account_health", "1", {"customer_360": "customer_360"}),
        ("playbook", "ACME-001", {"account_health": "account_health"}),
    ]


@pytest.mark.untraced
def test_a_run_in_three_shards_verifies_and_lineage_reads_the_accounts_shard(project, capsys, tmp_path):
    configs = shutil.copytree(REPO / "configs" / "customer", tmp_path / "configs")
    (configs / "scale.yaml").write_text("shards: 3\n")
    args = ["--artifacts", str(project.artifacts), "--configs", str(configs)]
    assert main(["c360:run", "--quiet", *args]) == 0
    capsys.readouterr()
    governance = project.artifacts / "governance"
    assert sorted(path.name for path in (governance / "shards").iterdir()) == ["0", "1", "2"]
    assert main(["c360:verify", *args]) == 0
    out = capsys.readouterr().out
    assert "  shards: 3 chains, " in out and "each holding the head the roll-up in event" in out, out
    assert shard_of("ACME-001", 3) == 2  # not shard 0: lineage must find the right chain
    assert main(["c360:lineage", "--account", "ACME-001", "--json", *args]) == 0
    chain = {step["asset"]: step for step in json.loads(capsys.readouterr().out)["chain"]}
    assert list(chain) == list(eventlog.LINEAGE_ASSETS)
    assert {chain[asset]["partition"] for asset in ("customer_360", "renewal_forecasts")} == {"2"}
    assert chain["report/account_health_report"]["upstream"] == {"health[2]": "account_health"}
    assert chain["playbook"]["upstream"]["account_health"] == "report/account_health_report"
