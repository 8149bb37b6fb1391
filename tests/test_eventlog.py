"""The signed event log: keys, chaining, verification against tampering, lineage."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from forked import ForkServer

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import canonical_json, sha256_bytes
from c360_dagster.domain.governance import eventlog

SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))


def key(seed: bytes = SEED_A) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def event(asset: str, partition: str | None = None, run: str = "run-1", inputs=None, outputs=None) -> dict:
    return {
        "asset": asset,
        "partition": partition,
        "run_id": run,
        "as_of": "2026-09-30",
        "config_hash": None,
        "code_version": "1",
        "inputs": inputs or {},
        "outputs": outputs or {f"{asset}.json": sha256_bytes(f"{asset}{partition}{run}".encode())},
    }


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "governance" / "events.jsonl"
    for name in ("customer_360", "account_health", "customer_signals"):
        eventlog.append_event(path, event(name), key())
    return path


def verify(path: Path, seed: bytes = SEED_A) -> eventlog.VerifyResult:
    if seed != SEED_A:  # verifying with another party's public key
        other = path.with_name("other.pub")
        other.write_bytes(
            key(seed)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return eventlog.verify_log(path, other)
    return eventlog.verify_log(path, path.with_name("events.pub"))


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# --- keys ---------------------------------------------------------------------------------


def test_key_file_is_created_0600_and_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("C360_SIGNING_KEY", raising=False)
    key_path = tmp_path / "governance" / "signing.key"
    first = eventlog.load_or_create_signing_key(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    second = eventlog.load_or_create_signing_key(key_path)
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    assert first.private_bytes(*raw) == second.private_bytes(*raw)
    assert [p.name for p in key_path.parent.iterdir()] == ["signing.key"]  # no temp file left


def test_environment_key_wins_as_base64_or_pem(tmp_path: Path, monkeypatch) -> None:
    key_path = tmp_path / "signing.key"
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    monkeypatch.setenv("C360_SIGNING_KEY", base64.b64encode(SEED_B).decode())
    assert eventlog.load_or_create_signing_key(key_path).private_bytes(*raw) == SEED_B
    pem = key(SEED_B).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    monkeypatch.setenv("C360_SIGNING_KEY", pem.decode())
    assert eventlog.load_or_create_signing_key(key_path).private_bytes(*raw) == SEED_B
    assert not key_path.exists()  # the environment key never touches the key file
    monkeypatch.setenv("C360_SIGNING_KEY", "not-a-key")
    with pytest.raises(C360Error, match="environment variable C360_SIGNING_KEY does not hold an Ed25519 private key"):
        eventlog.load_or_create_signing_key(key_path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("C360_SIGNING_KEY", raising=False)
    key_path = tmp_path / "signing.key"
    eventlog.load_or_create_signing_key(key_path)
    os.chmod(key_path, 0o644)
    with pytest.raises(C360Error, match="readable by other users; run `chmod 600"):
        eventlog.load_or_create_signing_key(key_path)


# --- appending ----------------------------------------------------------------------------


def test_events_are_canonical_chained_and_signed(log: Path) -> None:
    records = [json.loads(line) for line in lines(log)]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev"] == eventlog.GENESIS
    assert records[1]["prev"] == sha256_bytes(lines(log)[0].rstrip(b"\n"))
    assert all(line == (canonical_json(r) + "\n").encode() for line, r in zip(lines(log), records, strict=True))
    body = {k: v for k, v in records[2].items() if k != "signature"}
    key().public_key().verify(base64.b64decode(records[2]["signature"]), canonical_json(body).encode())
    assert log.with_name("events.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert verify(log) == eventlog.VerifyResult(True, 3)


def test_same_events_and_key_give_identical_bytes(tmp_path: Path) -> None:
    logs = [tmp_path / f"{n}" / "events.jsonl" for n in (1, 2)]
    for path in logs:
        for name in ("customer_360", "account_health"):
            eventlog.append_event(path, event(name), key())
    assert logs[0].read_bytes() == logs[1].read_bytes()


def test_extra_is_kept_and_unknown_fields_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    record = eventlog.append_event(path, {**event("qbr_pack", "A1"), "extra": {"privacy_signoff": "granted"}}, key())
    assert record["extra"] == {"privacy_signoff": "granted"} and verify(path).ok
    with pytest.raises(ValueError, match="unknown \\['when'\\]"):
        eventlog.append_event(path, {**event("x"), "when": "now"}, key())
    with pytest.raises(ValueError, match="missing \\['run_id'\\]"):
        eventlog.append_event(path, {k: v for k, v in event("x").items() if k != "run_id"}, key())


def test_appending_with_another_key_is_refused(log: Path) -> None:
    with pytest.raises(C360Error, match=r"does not match .*events.pub: this log was started with another key"):
        eventlog.append_event(log, event("playbook", "A1"), key(SEED_B))
    assert verify(log).ok


def test_appending_after_a_partial_line_is_refused(log: Path) -> None:
    log.write_bytes(log.read_bytes()[:-5])
    with pytest.raises(C360Error, match="ends with an incomplete line"):
        eventlog.append_event(log, event("playbook", "A1"), key())


def test_concurrent_appends_from_processes_keep_the_chain(forks: ForkServer, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from c360_dagster.domain.governance import eventlog
        key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        for i in range(15):
            eventlog.append_event(Path({str(path)!r}), {{"asset": "playbook", "partition": sys.argv[1] + str(i),
                "run_id": sys.argv[1], "as_of": "2026-09-30", "config_hash": None, "code_version": "1",
                "inputs": {{}}, "outputs": {{}}}}, key)
        """
    )
    workers = [forks.start([sys.executable, "-c", script, name]) for name in ("p", "q", "r")]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    assert verify(path) == eventlog.VerifyResult(True, 45)
    assert sorted(e["partition"] for e in eventlog.read_events(path)) == sorted(
        f"{n}{i}" for n in "pqr" for i in range(15)
    )


# --- verification -------------------------------------------------------------------------


def test_edited_line_is_detected(log: Path) -> None:
    content = lines(log)
    record = json.loads(content[1])
    record["as_of"] = "2026-10-01"  # re-serialized canonically, so only the signature can tell
    content[1] = (canonical_json(record) + "\n").encode()
    log.write_bytes(b"".join(content))
    result = verify(log)
    assert (result.ok, result.bad_line, result.events_checked) == (False, 2, 1)
    assert "signature does not verify" in result.reason


def test_hand_edit_that_breaks_canonical_form_is_detected(log: Path) -> None:
    content = lines(log)
    content[2] = content[2].replace(b'"asset":', b'"asset": ')
    log.write_bytes(b"".join(content))
    assert (verify(log).bad_line, verify(log).reason) == (3, "not in canonical form (the line was edited)")


def test_deleted_line_is_detected(log: Path) -> None:
    content = lines(log)
    log.write_bytes(content[0] + content[2])
    result = verify(log)
    assert (result.ok, result.bad_line) == (False, 2) and "seq is 3 on line 2" in result.reason


def test_deleted_last_line_is_detected_by_the_signed_head(log: Path) -> None:
    log.write_bytes(b"".join(lines(log)[:2]))
    result = verify(log)
    assert (result.ok, result.bad_line, result.events_checked) == (False, 3, 2)
    assert "lines were removed from the end" in result.reason


def test_reordered_lines_are_detected(log: Path) -> None:
    content = lines(log)
    log.write_bytes(content[0] + content[2] + content[1])
    result = verify(log)
    assert (result.ok, result.bad_line) == (False, 2) and "deleted, inserted or moved" in result.reason


def test_inserted_line_is_detected(log: Path) -> None:
    content = lines(log)
    log.write_bytes(content[0] + content[0] + content[1] + content[2])  # a replayed, validly signed line
    result = verify(log)
    assert (result.ok, result.bad_line) == (False, 2) and "seq is 1 on line 2" in result.reason


def test_forged_line_signed_with_another_key_is_detected(log: Path) -> None:
    other = eventlog.append_event(log.parent / "elsewhere" / "events.jsonl", event("qbr_pack", "A1"), key(SEED_B))
    forged = {**other, "seq": 4, "prev": sha256_bytes(lines(log)[2].rstrip(b"\n"))}
    with open(log, "ab") as handle:
        handle.write((canonical_json(forged) + "\n").encode())
    result = verify(log)
    assert (result.ok, result.bad_line) == (False, 4) and "signature does not verify" in result.reason


def test_truncated_last_line_is_detected(log: Path) -> None:
    log.write_bytes(log.read_bytes()[:-20])
    result = verify(log)
    assert (result.ok, result.bad_line, result.events_checked) == (False, 3, 2)
    assert result.reason.startswith("truncated")


def test_wrong_public_key_is_detected(log: Path) -> None:
    result = verify(log, SEED_B)
    assert (result.ok, result.bad_line, result.events_checked) == (False, 1, 0)


def test_forged_head_is_detected(log: Path) -> None:
    head = log.with_name("events.head")
    record = json.loads(head.read_bytes())
    head.write_text(canonical_json({**record, "seq": 2}) + "\n")
    result = verify(log)
    assert not result.ok and "events.head is damaged or its signature does not verify" in result.reason


def test_missing_log_or_public_key_is_a_clear_error(tmp_path: Path, log: Path) -> None:
    with pytest.raises(C360Error, match=r"no event log at .*nothing has been materialized yet"):
        eventlog.verify_log(tmp_path / "none.jsonl", log.with_name("events.pub"))
    with pytest.raises(C360Error, match="no public key at"):
        eventlog.verify_log(log, tmp_path / "none.pub")


def test_empty_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.touch()
    pub = tmp_path / "events.pub"
    pub.write_bytes(
        key().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert eventlog.verify_log(path, pub) == eventlog.VerifyResult(True, 0)


# --- reading and lineage ------------------------------------------------------------------


def test_read_events(log: Path, tmp_path: Path) -> None:
    assert [e["asset"] for e in eventlog.read_events(log)] == ["customer_360", "account_health", "customer_signals"]
    assert eventlog.read_events(tmp_path / "none.jsonl") == []
    log.write_bytes(log.read_bytes()[:-3])
    with pytest.raises(C360Error, match="line 3 is not a complete event"):
        eventlog.read_events(log)


def test_lineage_takes_the_latest_event_per_asset_and_the_account_partition(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    view = {"view": "sha256:v1"}
    appends = [
        event("customer_360", run="r1", inputs={"accounts.csv": "sha256:f1"}, outputs={"view": "sha256:v0"}),
        event("customer_360", run="r2", inputs={"accounts.csv": "sha256:f2"}, outputs=view),
        event("account_health", run="r3", inputs={"customer_360": "sha256:v1"}, outputs={"health.parquet": "sha256:h"}),
        event(
            "customer_signals", run="r4", inputs={"customer_360": "sha256:v1"}, outputs={"signals.parquet": "sha256:s"}
        ),
        event(
            "renewal_forecasts",
            run="r5",
            inputs={"account_health": "sha256:h", "customer_signals": "sha256:s"},
            outputs={"renewals.parquet": "sha256:r"},
        ),
        event(
            "playbook",
            "ACME-001",
            run="r6",
            inputs={"renewal_forecasts": "sha256:r"},
            outputs={"ACME-001.json": "sha256:p"},
        ),
        event(
            "playbook",
            "OTHER-9",
            run="r7",
            inputs={"renewal_forecasts": "sha256:r"},
            outputs={"OTHER-9.json": "sha256:o"},
        ),
        event("qbr_pack", "ACME-001", run="r8", inputs={"playbook": "sha256:p"}, outputs={"index.md": "sha256:q"}),
        event("lake/account_health", run="r9"),
    ]
    for item in appends:
        eventlog.append_event(path, item, key())
    chain = eventlog.lineage(eventlog.read_events(path), "ACME-001")
    assert [(s["asset"], s["run_id"]) for s in chain] == [
        ("customer_360", "r2"),
        ("account_health", "r3"),
        ("customer_signals", "r4"),
        ("renewal_forecasts", "r5"),
        ("playbook", "r6"),
        ("qbr_pack", "r8"),
    ]
    assert chain[0]["inputs"] == {"accounts.csv": "sha256:f2"} and chain[0]["upstream"] == {}
    assert chain[1]["upstream"] == {"customer_360": "customer_360"}
    assert chain[3]["upstream"] == {"account_health": "account_health", "customer_signals": "customer_signals"}
    assert chain[5]["partition"] == "ACME-001" and chain[5]["upstream"] == {"playbook": "playbook"}
    # An account without per-account outputs gets the shared part of the chain only.
    assert [s["asset"] for s in eventlog.lineage(eventlog.read_events(path), "NEW-1")][-1] == "renewal_forecasts"


def test_missing_or_unreadable_head_is_detected(log: Path) -> None:
    head = log.with_name("events.head")
    head.write_text("{not json")
    assert (verify(log).ok, verify(log).events_checked) == (False, 3)
    head.unlink()
    assert verify(log) == eventlog.VerifyResult(False, 3, None, "the signed head events.head is missing")


def test_events_appended_together_are_the_lines_and_head_of_appending_them_one_by_one(tmp_path, monkeypatch):
    events = [event("qbr_pack", f"A{n}") for n in range(3)]
    together = tmp_path / "together" / "events.jsonl"
    eventlog.append_event(together, event("playbook", "A0"), key())
    syncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    records = eventlog.append_events(together, events, key())
    assert len(syncs) == 2  # the log once, the head once
    expected = tmp_path / "expected" / "events.jsonl"
    for one in [event("playbook", "A0"), *events]:
        eventlog.append_event(expected, one, key())
    assert together.read_bytes() == expected.read_bytes()
    assert eventlog.head_path(together).read_bytes() == eventlog.head_path(expected).read_bytes()
    assert [record["seq"] for record in records] == [2, 3, 4]
    assert [eventlog.line_hash(record) for record in records] == [
        sha256_bytes(line) for line in expected.read_bytes().splitlines()[1:]
    ]
    assert verify(together).ok
