"""The signed log's trust anchor: what `verify` trusts that the log's own folder cannot change.

- The private key lives outside `artifacts/`: `C360_SIGNING_KEY` (the key itself), else the file
  `C360_SIGNING_KEY_FILE` names, else `$XDG_CONFIG_HOME/c360/signing.key` (`~/.config/...`).
- The public key verify trusts is pinned: a fingerprint given to verify, else the one in the
  project's `governance.yaml`, else the public half of the local private key. `events.pub`
  beside the log is only used when it matches a pinned fingerprint.
- The head is witnessed outside the log (the Dagster layer records each event's seq and hash
  in its materialization; `eventlog.verify_log` checks the log against it).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from c360_dagster.domain.core.config import load_yaml_config
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import sha256_bytes
from c360_dagster.domain.governance import eventlog

KEY_ENV = "C360_SIGNING_KEY"
KEY_FILE_ENV = "C360_SIGNING_KEY_FILE"
FINGERPRINT_PATTERN = "^sha256:[0-9a-f]{64}$"
# Where keys were kept before the anchor moved out of the log's folder.
LEGACY_KEY = Path("governance") / "signing.key"

GOVERNANCE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["signing_key_fingerprint"],
    "properties": {
        "signing_key_fingerprint": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": FINGERPRINT_PATTERN}]},
    },
}


class NoTrustAnchor(C360Error):
    """verify has no key to trust: nothing pinned and no local signing key."""

    code = "NO_TRUST_ANCHOR"


@dataclass(frozen=True)
class TrustedKey:
    """The public key verify checks against, its fingerprint and what pinned it."""

    public_key: Ed25519PublicKey | None  # None when the log's key is not the pinned one
    fingerprint: str
    pinned_by: str  # in words, without machine-specific paths
    source: str  # the option, config file, environment variable or key file it came from
    problem: str | None = None


def signing_key_path() -> Path:
    """Where the private key file lives (it may not exist yet)."""
    named = os.environ.get(KEY_FILE_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME", "").strip() or Path.home() / ".config"
    return Path(config_home) / "c360" / "signing.key"


def signing_key(artifacts_dir: Path, governance_file: Path) -> Ed25519PrivateKey:
    """The private key that signs this project's log, created (0600) on first use; never in `artifacts/`.

    When `governance_file` pins a fingerprint, only that key may sign: a log nobody could verify
    is refused before it starts.
    """
    # Every event asks for the key; its checks and parsing run once per place and setting
    # (and again when governance.yaml changes).
    try:
        pin_version = Path(governance_file).stat().st_mtime_ns
    except FileNotFoundError:
        pin_version = None
    return _signing_key(
        os.getcwd(),
        str(artifacts_dir),
        str(governance_file),
        pin_version,
        os.environ.get(KEY_ENV, ""),
        str(signing_key_path()),
    )


@functools.lru_cache(maxsize=16)
def _signing_key(
    cwd: str, artifacts_dir: str, governance_file: str, pin_version: int | None, key_env: str, key_file: str
) -> Ed25519PrivateKey:
    artifacts = (Path(cwd) / artifacts_dir).resolve()
    legacy = artifacts / LEGACY_KEY
    if legacy.exists():
        default = signing_key_path()
        move = (
            f"move it out of {artifacts} and set {KEY_FILE_ENV} to its new place ({default} already holds another key)"
            if default.exists()
            else f"move it out: `mv {legacy} {default}`"
        )
        raise C360Error(
            f"a signing key sits beside the log it signs ({legacy}), where anyone who can edit the log can "
            f"re-sign it; {move}",
            code="SIGNING_KEY_EXPOSED",
        )
    path = Path(cwd) / key_file
    if not key_env.strip() and path.resolve().is_relative_to(artifacts):
        raise C360Error(
            f"{KEY_FILE_ENV}={path} is inside {artifacts}, beside the log it signs; keep the key outside it",
            code="SIGNING_KEY_EXPOSED",
        )
    key = eventlog.load_or_create_signing_key(path, KEY_ENV)
    pinned = pinned_fingerprint(Path(cwd) / governance_file)
    if pinned is not None and fingerprint(key.public_key()) != pinned:
        source = KEY_ENV if key_env.strip() else str(path)
        raise C360Error(
            f"the signing key ({source}, {fingerprint(key.public_key())}) is not the one {governance_file} pins "
            f"({pinned}); sign with that key (set {KEY_ENV} or {KEY_FILE_ENV}) or change the pin",
            code="SIGNING_KEY_NOT_PINNED",
        )
    return key


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the raw 32-byte public key."""
    return sha256_bytes(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def pinned_fingerprint(governance_file: Path) -> str | None:
    """The fingerprint a project's `governance.yaml` pins (None: not pinned, or no such file)."""
    if not Path(governance_file).exists():
        return None
    return load_yaml_config(governance_file, GOVERNANCE_SCHEMA)["signing_key_fingerprint"]


def trusted_key(log_path: Path, pubkey: str | None, governance_file: Path) -> TrustedKey:
    """The key verify trusts: `pubkey` (a fingerprint), else governance.yaml's, else the local signing key's."""
    if pubkey is not None:
        if not re.fullmatch(FINGERPRINT_PATTERN, pubkey):
            raise C360Error(f"--pubkey {pubkey!r} is not a fingerprint (sha256: and 64 hex digits)", code="USAGE")
        return _pinned(log_path, pubkey, "the one given with --pubkey", "--pubkey")
    pinned = pinned_fingerprint(governance_file)
    if pinned is not None:
        return _pinned(log_path, pinned, f"the one pinned in {governance_file.name}", str(governance_file))
    path = signing_key_path()
    if os.environ.get(KEY_ENV, "").strip() or path.exists():
        public_key = eventlog.load_or_create_signing_key(path, KEY_ENV).public_key()
        source = KEY_ENV if os.environ.get(KEY_ENV, "").strip() else str(path)
        return TrustedKey(public_key, fingerprint(public_key), "this machine's signing key", source)
    raise NoTrustAnchor(
        f"no key to trust for {log_path}: no signing key on this machine ({path}) and none pinned; pass "
        f"`c360 c360:verify --pubkey sha256:...` or set signing_key_fingerprint in {governance_file}"
    )


def _pinned(log_path: Path, pinned: str, pinned_by: str, source: str) -> TrustedKey:
    """The log's `events.pub`, trusted only if its fingerprint is the pinned one."""
    public_key = eventlog.load_public_key(eventlog.pub_path(log_path))
    found = fingerprint(public_key)
    if found != pinned:
        problem = f"the log's key {found} is not the pinned key {pinned} (from {source}): another key signed it"
        return TrustedKey(None, pinned, pinned_by, source, problem)
    return TrustedKey(public_key, pinned, pinned_by, source)
