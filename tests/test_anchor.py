"""verify's trust anchor: a key outside artifacts/, a pinned public key, a head witnessed by the instance.

Each attack of issue 14.4 that once passed `c360:verify` with rc 0 has a test here that fails if
it comes back. Keys live in temp folders (C360_SIGNING_KEY_FILE / XDG_CONFIG_HOME), never ~/.config.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from c360_dagster.console import main
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import canonical_json, sha256_bytes
from c360_dagster.domain.governance import anchor, eventlog

REPO = Path(__file__).resolve().parents[1]
LOG = Path("artifacts/governance/events.jsonl")


@pytest.fixture(scope="module")
def signed_project(forks, tmp_path_factory) -> tuple[Path, Path]:
    """A project after load, health and signals (6 signed events), and its key file outside it."""
    root = tmp_path_factory.mktemp("anchor")
    project, key_file = root / "project", root / "keys" / "signing.key"
    for folder in ("fixtures", "configs", "contracts"):
        shutil.copytree(REPO / folder, project / folder)
    env = {**os.environ, "DAGSTER_HOME": str(project / ".dagster_home"), "C360_SIGNING_KEY_FILE": str(key_file)}
    env.pop("C360_SIGNING_KEY", None)
    for stage in ("c360:load", "c360:health", "c360:signals"):
        done = forks.run(["c360", stage, "--quiet"], cwd=project, env=env)
        assert done.returncode == 0, done.stderr
    # The main log: the split and the three roll-ups; shard 0's chain: its 360, health, signals and lake tables.
    assert len((project / LOG).read_bytes().splitlines()) == 4
    assert len((project / LOG).with_name("shards").joinpath("0", "events.jsonl").read_bytes().splitlines()) == 6
    return project, key_file


@pytest.fixture
def project(signed_project, tmp_path, monkeypatch) -> Path:
    """A private copy of the signed project (its instance included), as the working directory."""
    source, key_file = signed_project
    copy = Path(shutil.copytree(source, tmp_path / "project", symlinks=True))
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DAGSTER_HOME", str(copy / ".dagster_home"))
    monkeypatch.setenv("C360_SIGNING_KEY_FILE", str(key_file))
    return copy


def verify(capsys, *options: str) -> tuple[int, str]:
    code = main(["c360:verify", *options])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def real_key(project: Path) -> Ed25519PrivateKey:
    return serialization.load_pem_private_key(Path(os.environ["C360_SIGNING_KEY_FILE"]).read_bytes(), None)


def rewrite_log(records: list[dict], key: Ed25519PrivateKey) -> None:
    """Write `records` as a well-formed log, every link, signature and the head signed by `key`."""

    def sign(body: dict) -> str:
        return base64.b64encode(key.sign(canonical_json(body).encode())).decode()

    prev, lines = "sha256:" + "0" * 64, []
    for seq, record in enumerate(records, start=1):
        body = {k: v for k, v in record.items() if k != "signature"} | {"seq": seq, "prev": prev}
        line = canonical_json({**body, "signature": sign(body)}).encode()
        lines.append(line)
        prev = sha256_bytes(line)
    LOG.write_bytes(b"".join(line + b"\n" for line in lines))
    head = {"kind": "head", "seq": len(lines), "line": prev}
    LOG.with_name("events.head").write_text(canonical_json({**head, "signature": sign(head)}) + "\n")
    LOG.with_name("events.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def records() -> list[dict]:
    return [json.loads(line) for line in LOG.read_bytes().splitlines()]


def test_an_untouched_log_verifies_against_the_local_key_and_the_witness(project, capsys):
    code, out = verify(capsys)
    assert code == 0
    assert out == (
        "OK: 4 events, chain and signatures verified\n"
        "  trusted key: this machine's signing key (fingerprint and source: --json)\n"
        "  head: event 4 witnessed by the Dagster instance\n"
        "  shards: 1 chain, 6 events, each holding the head the roll-up in event 4 recorded\n"
    )


def test_without_the_instance_the_head_is_reported_not_witnessed(project, capsys):
    """A reviewer given only the project's files: signatures still checked, the missing witness said."""
    shutil.rmtree(project / ".dagster_home")
    code, out = verify(capsys)
    assert code == 0
    assert "\n  head: not witnessed (the Dagster instance records no event of this log)\n" in out
    assert not (project / ".dagster_home").exists()  # verify creates no instance


def test_events_after_the_witnessed_one_are_reported_as_not_yet_witnessed(project, capsys):
    """A run that appended its event but stopped before Dagster stored the materialization."""
    key = real_key(project)
    rewrite_log([*records(), {**records()[-1], "run_id": "interrupted"}], key)
    code, out = verify(capsys)
    assert code == 0 and "\n  head: event 4 witnessed by the Dagster instance (1 later not yet)\n" in out


def test_the_private_key_lives_outside_artifacts_with_mode_0600(project):
    key_file = Path(os.environ["C360_SIGNING_KEY_FILE"])
    assert not key_file.resolve().is_relative_to(project)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [p for p in (project / "artifacts").rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]


def test_a_wiped_log_and_deleted_head_is_reported(project, capsys):
    LOG.write_bytes(b"")
    LOG.with_name("events.head").unlink()
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(
        "BAD the Dagster instance witnessed event 4 but the log holds 0: the log was wiped, truncated or rolled back\n"
    )


def test_a_deleted_log_is_reported(project, capsys):
    shutil.rmtree(LOG.parent)
    code, out = verify(capsys)
    assert code == 1 and out.startswith("BAD the Dagster instance witnessed event 4 but the log holds 0")


def test_a_log_cut_short_with_an_older_valid_head_is_reported(project, capsys):
    rewrite_log(records()[:3], real_key(project))  # byte for byte the log and head as they were after event 3
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith("BAD the Dagster instance witnessed event 4 but the log holds 3")


def test_the_last_line_edited_and_re_signed_with_the_real_key_is_reported(project, capsys):
    edited = records()
    edited[-1]["as_of"] = "2030-01-01"
    rewrite_log(edited, real_key(project))
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith("BAD line 4: event 4 is not the one the Dagster instance witnessed: the log was rewritten\n")


def test_every_line_re_signed_with_a_new_key_and_events_pub_replaced_is_reported(project, capsys):
    forged = Ed25519PrivateKey.generate()
    legacy = project / "artifacts" / "governance" / "signing.key"
    rewrite_log(records(), forged)
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith("BAD line 1: signature does not verify")
    assert not legacy.exists()  # and no key beside the log to re-sign with


def test_a_pinned_fingerprint_refuses_a_replaced_events_pub(project, capsys):
    real = anchor.fingerprint(real_key(project).public_key())
    assert verify(capsys, "--pubkey", real)[0] == 0
    rewrite_log(records(), Ed25519PrivateKey.generate())
    code, out = verify(capsys, "--pubkey", real)
    assert (
        code == 1
        and out.startswith("BAD the log's key sha256:")
        and f"is not the pinned key {real} (from --pubkey)" in out
    )


def test_governance_yaml_pins_the_key_for_a_reviewer_without_the_private_key(project, capsys, monkeypatch):
    real = anchor.fingerprint(real_key(project).public_key())
    monkeypatch.setenv("C360_SIGNING_KEY_FILE", str(project.parent / "no-such.key"))  # another machine
    code, out = verify(capsys)
    assert code == 2 and out.startswith("c360: NO_TRUST_ANCHOR: no key to trust for artifacts/governance/events.jsonl")
    (project / "configs" / "customer" / "governance.yaml").write_text(f"signing_key_fingerprint: {real}\n")
    code, out = verify(capsys)
    assert code == 0 and "trusted key: the one pinned in governance.yaml" in out
    (project / "configs" / "customer" / "governance.yaml").write_text(f"signing_key_fingerprint: {real[:-1]}\n")
    code, out = verify(capsys)
    assert code == 2 and out.startswith(
        "c360: CONFIG_INVALID: configs/customer/governance.yaml: signing_key_fingerprint:"
    )


def test_the_first_run_creates_the_key_in_the_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = anchor.signing_key(tmp_path / "artifacts", tmp_path / "governance.yaml")
    path = tmp_path / "config" / "c360" / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert anchor.signing_key(tmp_path / "artifacts", tmp_path / "governance.yaml").public_key() == key.public_key()


def test_a_key_inside_artifacts_is_refused(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("C360_SIGNING_KEY_FILE", str(artifacts / "keys" / "signing.key"))
    with pytest.raises(C360Error, match=r"is inside .*artifacts, beside the log it signs"):
        anchor.signing_key(artifacts, tmp_path / "governance.yaml")
    monkeypatch.setenv("C360_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    (artifacts / "governance").mkdir(parents=True)
    (artifacts / "governance" / "signing.key").write_text("old key")
    with pytest.raises(
        C360Error, match=r"a signing key sits beside the log it signs .*`mv .*signing.key .*signing.key`"
    ) as caught:
        anchor.signing_key(artifacts, tmp_path / "governance.yaml")
    assert caught.value.code == "SIGNING_KEY_EXPOSED"
    (tmp_path / "signing.key").write_text("this machine's key")  # the move must not overwrite it
    with pytest.raises(
        C360Error, match=r"set C360_SIGNING_KEY_FILE to its new place \(.*signing.key already holds another key\)"
    ):
        anchor.signing_key(artifacts, tmp_path / "governance.yaml")


def test_the_test_suite_never_signs_with_the_users_key():
    assert not anchor.signing_key_path().is_relative_to(Path.home() / ".config")
    assert "C360_SIGNING_KEY" not in os.environ


def test_a_key_other_than_the_pinned_one_may_not_sign(tmp_path, monkeypatch):
    """A machine without the team's key refuses to start a log that would never verify."""
    governance = tmp_path / "governance.yaml"
    monkeypatch.setenv("C360_SIGNING_KEY_FILE", str(tmp_path / "team.key"))
    team = anchor.fingerprint(anchor.signing_key(tmp_path / "artifacts", governance).public_key())
    governance.write_text(f"signing_key_fingerprint: {team}\n")
    assert anchor.fingerprint(anchor.signing_key(tmp_path / "artifacts", governance).public_key()) == team
    monkeypatch.setenv("C360_SIGNING_KEY_FILE", str(tmp_path / "mine.key"))
    with pytest.raises(
        C360Error, match=r"the signing key \(.*mine.key, sha256:[0-9a-f]{64}\) is not the one .*governance.yaml pins"
    ) as caught:
        anchor.signing_key(tmp_path / "artifacts", governance)
    assert caught.value.code == "SIGNING_KEY_NOT_PINNED"


def test_a_published_output_edited_in_place_is_reported(project, capsys):
    # No later stage reads health.json, so only verify can notice that its bytes changed.
    health_json = (project / "artifacts/customer/health.json").resolve()
    data = health_json.read_bytes()
    at = data.index(b'"score":') + len(b'"score":')  # the first account's first component score
    health_json.write_bytes(data[:at] + (b"9" if data[at : at + 1] != b"9" else b"8") + data[at + 1 :])
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith("BAD ARTIFACT_CORRUPT: ")
    assert "health.json: content hash" in out


def test_verify_reads_every_live_output(project, capsys):
    code, out = verify(capsys, "--json")
    assert code == 0
    # By hand: the split holds shard 0's 8 tables and its manifest; the 360 roll-up 360.json, the
    # view's manifest and its 8 tables; the health and signals roll-ups each a JSON document and a
    # frame. Shard 0's own stages: its view (8 tables, manifest), its health frame, and its signals
    # frame, lifecycle and resolved signals, each stage with its record for the roll-up (.shard.json).
    assert json.loads(out)["files_checked"] == (9 + 10 + 2 + 2) + (9 + 1 + 3) + 3


@pytest.mark.untraced
def test_verify_rehashes_the_lake_snapshots_the_log_signed(project, capsys):
    code, out = verify(capsys, "--json")
    # By hand: shard 0's chain signed one snapshot each of crm_opps, account_health, customer_signals.
    assert code == 0 and json.loads(out)["lake_snapshots_checked"] == 3
    with duckdb.connect("artifacts/lake/c360.duckdb") as con:
        con.execute("UPDATE account_health SET score = 95, tier = 'green' WHERE account_id = 'STARK-008'")
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith("BAD ARTIFACT_CORRUPT: lake table account_health (c360.main.account_health), snapshot as_of ")
    assert "not the sha256:" in out and "the signed log recorded when they were written" in out


def shard_event(asset: str, shard: str) -> dict:
    return {
        "asset": asset,
        "partition": shard,
        "run_id": f"run-{shard}",
        "as_of": "2026-09-30",
        "config_hash": None,
        "code_version": "1",
        "inputs": {},
        "outputs": {f"{asset}.json": sha256_bytes(f"{asset}{shard}".encode())},
        "shard": shard,
    }


def test_verify_checks_every_shard_chain_against_the_roll_up(project, capsys):
    """Shard 0's chain comes from the runs; a shard 1 chain and a roll-up of both are added by hand."""
    key = real_key(project)
    eventlog.append_event(eventlog.shard_log_path(LOG, "1"), shard_event("account_health", "1"), key)
    rollup = {**shard_event("health_rollup", "0"), "partition": None, "shards": eventlog.shard_heads(LOG, 2)}
    eventlog.append_event(LOG, {k: v for k, v in rollup.items() if k != "shard"}, key)
    eventlog.append_event(eventlog.shard_log_path(LOG, "1"), shard_event("customer_signals", "1"), key)
    code, out = verify(capsys)
    assert code == 0, out
    assert out.endswith(
        "  head: event 4 witnessed by the Dagster instance (1 later not yet)\n"
        "  shards: 2 chains, 8 events, each holding the head the roll-up in event 5 recorded\n"
        "  shard 1: 1 event ahead of the roll-up\n"
    )
    code = main(["c360:verify", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rollup"] == 5
    assert report["shards"]["0"]["rolled_up"] == 6 and report["shards"]["0"]["ahead"] == 0
    assert report["shards"]["1"] == {
        "ok": True,
        "events": 2,
        "line": None,
        "reason": None,
        "rolled_up": 1,
        "ahead": 1,
    }
    # Shard 1's chain (which the instance never saw) removed: the roll-up's head names what it held.
    shutil.rmtree(eventlog.shard_log_path(LOG, "1").parent)
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(
        "BAD shard 1: the roll-up (main log event 5) witnessed event 1 but the log holds 0: "
        "the log was wiped, truncated or rolled back\n"
    )
