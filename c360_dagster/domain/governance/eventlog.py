"""The signed, hash-chained, append-only event log (`artifacts/governance/events.jsonl`).

One line per materialization, canonical JSON. Each line carries `seq` (its 1-based line
number), `prev` (the sha256 of the previous line's bytes, without the newline; GENESIS for
the first) and an Ed25519 `signature` over the canonical line without the signature. A
signed head file (`events.head`) names the last line, so lines cut from the end are noticed
too. `events.pub` (PEM) beside the log names its key; verify trusts it only when it matches a
pinned fingerprint (domain/governance/anchor.py: the trust anchor outside the log's folder).

A sharded chain keeps one such log per shard, `shards/<k>/events.jsonl` beside the main one
(same key, same format, each line naming its `shard`), so shards append in parallel. A roll-up
event in the main log carries every shard chain's head (`shards`: {k: {seq, hash}}): signed
there, it pins each shard chain as it was when the roll-up was built (`verify_ledger`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.failpoints import failpoint
from c360_dagster.domain.core.io import canonical_json, sha256_bytes, write_text_atomic
from c360_dagster.domain.core.locking import checked_shard, file_lock, is_shard_key

GENESIS = "sha256:" + "0" * 64
EVENT_FIELDS = {"asset", "partition", "run_id", "as_of", "config_hash", "code_version", "inputs", "outputs"}
# `shard`: the shard whose chain holds the event; `shards`: a roll-up's shard chain heads.
OPTIONAL_FIELDS = {"extra", "shard", "shards"}
SHARDS_DIR = "shards"
INSTANCE = "the Dagster instance"
CHAIN_FIELDS = {"seq", "prev", "signature"}
LOCK_TIMEOUT_S = 60.0
TAIL_BLOCK = 1 << 16
# The lineage chain in asset-graph order; per-account assets are matched on their partition.
# The chain's shard assets come before their roll-ups, so an output a roll-up passes on unchanged
# (one shard) is credited to the roll-up, which is what the per-account assets read.
LINEAGE_ASSETS = (
    "customer_inputs",
    "customer_360",
    "account_health",
    "customer_signals",
    "renewal_forecasts",
    "report/customer_360_report",
    "report/account_health_report",
    "report/customer_signals_report",
    "report/renewal_forecasts_report",
    "playbook",
    "qbr_pack",
)
PER_ACCOUNT_ASSETS = {"playbook", "qbr_pack"}


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on a log: ok, lines checked, and the first bad line (1-based) and why."""

    ok: bool
    events_checked: int
    bad_line: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ShardVerdict:
    """One shard chain's verdict, and how it stands against the latest roll-up."""

    result: VerifyResult
    rolled_up: int | None  # the seq the latest roll-up recorded (None: not in that roll-up)

    @property
    def ahead(self) -> int:
        """Events appended after the roll-up recorded the chain's head."""
        return self.result.events_checked - self.rolled_up if self.rolled_up is not None and self.result.ok else 0


@dataclass(frozen=True)
class LedgerVerdict:
    """The main log's verdict, the latest roll-up event's seq, and each shard chain's verdict."""

    main: VerifyResult
    rollup_seq: int | None
    shards: dict[str, ShardVerdict]

    @property
    def ok(self) -> bool:
        return self.main.ok and all(shard.result.ok for shard in self.shards.values())


def pub_path(log_path: Path) -> Path:
    return Path(log_path).with_name("events.pub")


def head_path(log_path: Path) -> Path:
    return Path(log_path).with_name("events.head")


def shard_log_path(log_path: Path, shard: str) -> Path:
    """Shard `shard`'s own chain beside the main log: `<folder>/shards/<shard>/events.jsonl`."""
    return Path(log_path).parent / SHARDS_DIR / checked_shard(shard) / Path(log_path).name


def shard_logs(log_path: Path) -> dict[str, Path]:
    """Every shard chain on disk, by shard key, in shard order (a folder not named as a shard is none)."""
    folder = Path(log_path).parent / SHARDS_DIR
    found = [path for path in folder.glob(f"*/{Path(log_path).name}") if is_shard_key(path.parent.name)]
    return {path.parent.name: path for path in sorted(found, key=lambda path: int(path.parent.name))}


def chain_head(log_path: Path) -> dict[str, Any]:
    """The log's last event as `{"seq", "hash"}` (seq 0 and GENESIS when empty), read under its append lock."""
    log_path = Path(log_path)
    if not log_path.exists():
        return {"seq": 0, "hash": GENESIS}
    with _append_lock(log_path):
        last = _last_line(log_path)
    return {"seq": _seq(last, log_path), "hash": sha256_bytes(last)} if last else {"seq": 0, "hash": GENESIS}


def shard_heads(log_path: Path, shards: int) -> dict[str, dict[str, Any]]:
    """The heads of shards 0..shards-1's chains, as a roll-up event's `shards` carries them."""
    return {str(shard): chain_head(shard_log_path(log_path, str(shard))) for shard in range(shards)}


def load_or_create_signing_key(key_path: Path, env_var: str = "C360_SIGNING_KEY") -> Ed25519PrivateKey:
    """The signing key: `env_var` (base64 raw 32 bytes, or PEM) wins, else the 0600 key file, created on first use."""
    from_env = os.environ.get(env_var, "").strip()
    if from_env:
        return _parse_private_key(from_env.encode(), f"environment variable {env_var}")
    key_path = Path(key_path)
    if not key_path.exists():
        _create_key_file(key_path)
    if key_path.stat().st_mode & 0o077:
        raise C360Error(f"signing key {key_path} is readable by other users; run `chmod 600 {key_path}`")
    return _parse_private_key(key_path.read_bytes(), f"key file {key_path}")


def append_event(log_path: Path, event: dict[str, Any], signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Chain, sign and append one event (flushed and fsynced under a lock); return the stored record."""
    return append_events(log_path, [event], signing_key)[0]


def append_events(log_path: Path, events: list[dict[str, Any]], signing_key: Ed25519PrivateKey) -> list[dict[str, Any]]:
    """Chain, sign and append events in order, as `append_event` one by one would, but in one
    write, one fsync and one head (a batch of accounts' events); return the stored records."""
    for event in events:
        _check_event_fields(event)
    if not events:
        return []
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock(log_path):
        _ensure_public_key(log_path, signing_key.public_key())
        last = _last_line(log_path)
        seq = _seq(last, log_path) if last else 0
        prev = sha256_bytes(last) if last else GENESIS
        records, lines = [], []
        for event in events:
            seq += 1
            body = {**event, "seq": seq, "prev": prev}
            record = {**body, "signature": _sign(signing_key, body)}
            line = canonical_json(record).encode("utf-8")
            prev = sha256_bytes(line)
            records.append(record)
            lines.append(line)
            failpoint(f"event:{event['asset']}")
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = os.fstat(fd).st_size
        try:
            pending = memoryview(b"".join(line + b"\n" for line in lines))
            while pending:  # one O_APPEND write; loop only if the kernel takes part of it
                pending = pending[os.write(fd, pending) :]
            os.fsync(fd)
            head = {"kind": "head", "seq": seq, "line": prev}
            write_text_atomic(
                head_path(log_path), canonical_json({**head, "signature": _sign(signing_key, head)}) + "\n"
            )
        except OSError:
            # A full disk must not leave half a line, or a line the head does not name: undo it.
            os.ftruncate(fd, start)
            raise
        finally:
            os.close(fd)
    return records


def verify_log(
    log_path: Path,
    public_key: Ed25519PublicKey | Path,
    witnessed: Mapping[str, tuple[int, str] | None] | None = None,
    shard: str | None = None,
) -> VerifyResult:
    """Check every line's form, signature, sequence, hash link and shard, then the signed head.

    `public_key` is the trusted key (or a PEM file of it); `witnessed` maps who recorded an event
    outside the log (the Dagster instance, a roll-up) to its (seq, line hash), which the log must
    still hold unchanged. `shard` is the shard whose chain this is (None: the main log).
    """
    log_path = Path(log_path)
    witnesses = {by: seen for by, seen in (witnessed or {}).items() if seen and seen[0] > 0}
    if not log_path.exists():
        if witnesses:
            by, seen = next(iter(witnesses.items()))
            return VerifyResult(False, 0, None, _witness_problem(by, seen, 0))
        if shard is not None:
            return VerifyResult(True, 0)  # a shard that has recorded nothing yet
        raise C360Error(f"no event log at {log_path}: nothing has been materialized yet")
    if not isinstance(public_key, Ed25519PublicKey):
        public_key = load_public_key(Path(public_key))
    head = _read_head(log_path)
    prev, checked, head_line_hash = GENESIS, 0, None
    hashes_seen: dict[int, str] = {}
    wanted = {seen[0] for seen in witnesses.values()}
    with open(log_path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            reason = _line_problem(raw, line, number, prev, public_key, shard)
            if reason:
                return VerifyResult(False, checked, number, reason)
            prev, checked = sha256_bytes(line), number
            if head and number == head["seq"]:
                head_line_hash = prev
            if number in wanted:
                hashes_seen[number] = prev
    for by, seen in witnesses.items():
        if hashes_seen.get(seen[0]) != seen[1]:
            bad_line = seen[0] if seen[0] <= checked else None
            return VerifyResult(False, checked, bad_line, _witness_problem(by, seen, checked))
    name = head_path(log_path).name
    if head is None:
        if checked:
            return VerifyResult(False, checked, None, f"the signed head {name} is missing")
        return VerifyResult(True, 0)
    body = {k: head[k] for k in ("kind", "seq", "line")}
    if not _signature_ok(public_key, body, head["signature"]):
        return VerifyResult(False, checked, None, f"the head file {name} is damaged or its signature does not verify")
    if head["seq"] > checked:
        return VerifyResult(
            False,
            checked,
            checked + 1,
            f"the signed head records {head['seq']} events but the log ends after {checked}: lines were removed from the end",
        )
    if head_line_hash != head["line"]:
        return VerifyResult(False, checked, head["seq"], "the line differs from the one the signed head names")
    return VerifyResult(True, checked)


def verify_ledger(
    log_path: Path, public_key: Ed25519PublicKey, witnessed: Mapping[str, tuple[int, str]] | None = None
) -> LedgerVerdict:
    """Verify the main log, then every shard chain against the latest roll-up event's heads.

    `witnessed` maps each log's path (as the project names it) to the (seq, line hash) the
    Dagster instance recorded for it. A shard chain must still hold, unchanged, the head the
    latest roll-up recorded (a chain cut short, rolled back, rewritten or swapped with another
    shard's fails); events appended after it are fine (`ShardVerdict.ahead`).
    """
    witnessed = witnessed or {}
    main = verify_log(log_path, public_key, {INSTANCE: witnessed.get(str(log_path))})
    rollup_seq, heads = latest_rollup(read_events(log_path)) if main.ok else (None, {})
    shards: dict[str, ShardVerdict] = {}
    for shard in sorted(heads.keys() | shard_logs(log_path).keys(), key=int):
        path = shard_log_path(log_path, shard)
        head = heads.get(shard)
        witnesses = {INSTANCE: witnessed.get(str(path))}
        if head is not None:
            witnesses[f"the roll-up (main log event {rollup_seq})"] = (head["seq"], head["hash"])
        result = verify_log(path, public_key, witnesses, shard=shard)
        shards[shard] = ShardVerdict(result, None if head is None else head["seq"])
    return LedgerVerdict(main, rollup_seq, shards)


def line_hash(record: dict[str, Any]) -> str:
    """The hash of a stored record's line, as the next line's `prev` and the head name it."""
    return sha256_bytes(canonical_json(record).encode("utf-8"))


def _witness_problem(by: str, witnessed: tuple[int, str], checked: int) -> str:
    seq = witnessed[0]
    if seq > checked:
        return f"{by} witnessed event {seq} but the log holds {checked}: the log was wiped, truncated or rolled back"
    return f"event {seq} is not the one {by} witnessed: the log was rewritten"


def latest_rollup(events: list[dict[str, Any]]) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """The seq and shard heads of the last roll-up event among the main log's events."""
    rollups = [event for event in events if "shards" in event]
    return (rollups[-1]["seq"], rollups[-1]["shards"]) if rollups else (None, {})


def read_events(log_path: Path) -> list[dict[str, Any]]:
    """Every event in log order (none when the log does not exist yet)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return []
    events = []
    with open(log_path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("incomplete line")
                events.append(json.loads(raw))
            except ValueError:
                raise C360Error(f"{log_path} line {number} is not a complete event; run `c360 c360:verify`") from None
    return events


def signed_outputs(log_path: Path) -> dict[str | None, dict[str, str]]:
    """Per chain (None: the main log; else the shard key), each output name's hash in the latest
    event that recorded it: what the live outputs must still be (`stages.verify_live_stages`)."""
    chains: list[tuple[str | None, Path]] = [(None, Path(log_path)), *shard_logs(log_path).items()]
    return {
        chain: {name: digest for event in read_events(path) for name, digest in event["outputs"].items()}
        for chain, path in chains
    }


def account_events(log_path: Path, account_shard: Callable[[int], int]) -> list[dict[str, Any]]:
    """The main log's events, then those of the account's shard chain, for `lineage`.

    `account_shard(n)` is the account's shard among n; n is the number of shards the latest
    roll-up combined (what the published documents were built from). Without a roll-up, the
    main log's events only.
    """
    events = read_events(log_path)
    _, heads = latest_rollup(events)
    if heads:
        events += read_events(shard_log_path(log_path, str(account_shard(len(heads)))))
    return events


def lineage(events: list[dict[str, Any]], account_id: str) -> list[dict[str, Any]]:
    """The latest event of each asset on the path fixtures → 360 → … → QBR for one account.

    Each step names, in `upstream`, the inputs whose hash equals an output of an earlier step,
    which is what proves the step was built from that very output.
    """
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        asset = event.get("asset")
        if asset in LINEAGE_ASSETS and (asset not in PER_ACCOUNT_ASSETS or event.get("partition") == account_id):
            latest[asset] = event
    chain: list[dict[str, Any]] = []
    produced: dict[str, str] = {}  # output hash -> asset
    for asset in LINEAGE_ASSETS:
        if asset not in latest:
            continue
        event = latest[asset]
        inputs = dict(sorted(event["inputs"].items()))
        chain.append(
            {
                "asset": asset,
                "partition": event["partition"],
                "seq": event["seq"],
                "run_id": event["run_id"],
                "as_of": event["as_of"],
                "config_hash": event["config_hash"],
                "code_version": event["code_version"],
                "inputs": inputs,
                "outputs": dict(sorted(event["outputs"].items())),
                "upstream": {name: produced[digest] for name, digest in inputs.items() if digest in produced},
            }
        )
        produced.update(dict.fromkeys(event["outputs"].values(), asset))
    return chain


def _check_event_fields(event: dict[str, Any]) -> None:
    missing = EVENT_FIELDS - set(event)
    unknown = set(event) - EVENT_FIELDS - OPTIONAL_FIELDS
    if missing or unknown:
        raise ValueError(f"event fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name in ("inputs", "outputs"):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in event[name].items()):
            raise ValueError(f"event {name} must map names to content hashes (strings)")


def _line_problem(
    raw: bytes, line: bytes, number: int, prev: str, public_key: Ed25519PublicKey, shard: str | None
) -> str | None:
    """Why line `number` is bad, or None."""
    if not raw.endswith(b"\n"):
        return "truncated: the last line is incomplete (no newline at its end)"
    try:
        record = json.loads(line)
    except ValueError:
        return "not valid JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    fields = set(record)
    expected = EVENT_FIELDS | CHAIN_FIELDS
    if not expected <= fields or fields - expected - OPTIONAL_FIELDS:
        return f"fields {sorted(fields)} are not those of an event"
    if canonical_json(record).encode("utf-8") != line:
        return "not in canonical form (the line was edited)"
    body = {k: v for k, v in record.items() if k != "signature"}
    if not _signature_ok(public_key, body, record["signature"]):
        return "signature does not verify (the line was edited, or signed with a key other than the trusted one)"
    if record["seq"] != number:
        return f"seq is {record['seq']} on line {number} (a line was deleted, inserted or moved)"
    if record["prev"] != prev:
        return "prev does not match the hash of the line before (the chain is broken here)"
    if record.get("shard") != shard:
        found = "the main log" if record.get("shard") is None else f"shard {record['shard']}'s chain"
        this = "the main log" if shard is None else f"shard {shard}'s chain"
        return f"the event belongs to {found}, not {this} (chains swapped, or a line moved between them)"
    return None


def _append_lock(log_path: Path):
    return file_lock(
        log_path.with_name(log_path.name + ".lock"), LOCK_TIMEOUT_S, f"another process is appending to {log_path}"
    )


def _read_head(log_path: Path) -> dict[str, Any] | None:
    """The head file's fields (a damaged file gives fields that cannot verify), None if absent."""
    path = head_path(log_path)
    if not path.exists():
        return None
    try:
        head = json.loads(path.read_bytes())
        return {"kind": "head", "seq": int(head["seq"]), "line": str(head["line"]), "signature": head["signature"]}
    except (ValueError, KeyError, TypeError):
        return {"kind": "head", "seq": 0, "line": "", "signature": ""}


def _sign(key: Ed25519PrivateKey, body: dict[str, Any]) -> str:
    return base64.b64encode(key.sign(canonical_json(body).encode("utf-8"))).decode("ascii")


def _signature_ok(public_key: Ed25519PublicKey, body: dict[str, Any], signature: Any) -> bool:
    try:
        public_key.verify(base64.b64decode(str(signature), validate=True), canonical_json(body).encode("utf-8"))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _last_line(log_path: Path) -> bytes | None:
    """The last complete line (without its newline), reading backwards from the end."""
    if not log_path.exists() or log_path.stat().st_size == 0:
        return None
    with open(log_path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        handle.seek(end - 1)
        if handle.read(1) != b"\n":
            raise C360Error(
                f"{log_path} ends with an incomplete line (an interrupted write or an edit); "
                "run `c360 c360:verify` and restore the log before appending"
            )
        tail, position = b"", end - 1
        while position > 0 and b"\n" not in tail:
            start = max(0, position - TAIL_BLOCK)
            handle.seek(start)
            tail = handle.read(position - start) + tail
            position = start
        return tail.rsplit(b"\n", 1)[-1]


def _seq(line: bytes, log_path: Path) -> int:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        raise C360Error(f"the last line of {log_path} is not an event; run `c360 c360:verify`") from None


def _ensure_public_key(log_path: Path, public_key: Ed25519PublicKey) -> None:
    """Write `events.pub` on first use; refuse to extend a log that another key started."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = pub_path(log_path)
    if not path.exists():
        write_text_atomic(path, pem.decode("ascii"))
    elif path.read_bytes() != pem:
        raise C360Error(
            f"the signing key does not match {path}: this log was started with another key; "
            "set C360_SIGNING_KEY (or the key file) to that key, or start a new log"
        )


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise C360Error(f"no public key at {path}; it is written beside the log on the first event") from None
    except ValueError:
        raise C360Error(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise C360Error(f"{path} is not an Ed25519 public key")
    return key


def _parse_private_key(data: bytes, source: str) -> Ed25519PrivateKey:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise C360Error(f"{source} does not hold an Ed25519 private key (base64 of 32 raw bytes, or PEM)")
    return key


def _create_key_file(key_path: Path) -> None:
    """Create the key file with mode 0600 from the first byte, atomically (a racing process keeps its own)."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = key_path.with_name(f".{key_path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, key_path)  # fails if another process created the key first
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
