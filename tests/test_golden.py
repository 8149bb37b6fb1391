"""Golden hashes: the bytes of every output of a full run on the bundled fixtures.

A change of any output, from our code or from a dependency's new version (how Polars or DuckDB
print a float, how python-pptx zips a deck), fails here. When the change is meant, record the
new hashes, look at the changed outputs, and commit both:

    C360_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from conftest import pretty_hash

GOLDEN = Path(__file__).with_name("golden_hashes.json")
# The fixtures' documents as they were written before each account (each renewal) went on one
# line of its own (round 8, issue 19): `json.dumps(sort_keys=True, indent=2)` bytes. Printed so
# again, today's documents must give the very same bytes: only the layout changed. (The
# renewals' bytes since have a new `config_hash`: round 9 added the connect_usage and then the
# hear_from_customer play to the playbook library the forecast's configuration names; nothing
# else in them changed, diffed by hand each time.)
PRETTY_BEFORE_ONE_PER_LINE = {
    "customer/health.json": "sha256:b83908fa0ac17034301cdeb50e487ee3b3eef3eedd975fad3814c62cfb7e0028",
    "customer/renewals_202609.json": "sha256:a1ea962b88324a7dd59caa11d603b4ebf7fb3ef1c974857f80b054b0c71c3c9b",
    "customer/signals.json": "sha256:376c9eb002d9d3e2a4da14f2a98195ea6c73e53c10ce526b7e088e672c5c88cd",
}
UPDATE = "C360_UPDATE_GOLDEN"
# Outputs that differ between runs by design: run ids and signatures in the log, counters that
# accumulate, the DuckDB file's page layout (its rows are checked by the lake tests).
RUN_SPECIFIC = {"governance", "metrics", "lake"}


def output_hashes(artifacts: Path) -> dict[str, str]:
    """`{path under artifacts: sha256}` of every output of the run, sorted by path."""
    return {
        path.relative_to(artifacts).as_posix(): "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(artifacts.rglob("*"))
        if path.is_file()
        and path.relative_to(artifacts).parts[0] not in RUN_SPECIFIC
        # Lock files (`.c360.lock`, `.c360-shards/<k>.lock`) hold their last holder's pid.
        and not any(part.startswith(".") for part in path.relative_to(artifacts).parts)
    }


def test_every_output_of_a_full_run_has_its_recorded_bytes(ran_fixtures):
    actual = output_hashes(ran_fixtures.artifacts)
    if os.environ.get(UPDATE) == "1":
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    changed = sorted(path for path in expected.keys() & actual.keys() if expected[path] != actual[path])
    assert (changed, sorted(actual.keys() - expected.keys()), sorted(expected.keys() - actual.keys())) == (
        [],
        [],
        [],
    ), (
        "outputs differ from tests/golden_hashes.json (changed, new, missing); if meant, run "
        f"`{UPDATE}=1 python -m pytest tests/test_golden.py` and commit the file"
    )


def test_the_documents_one_account_per_line_hold_exactly_what_the_pretty_ones_held(ran_fixtures):
    for name, digest in PRETTY_BEFORE_ONE_PER_LINE.items():
        assert pretty_hash(ran_fixtures.artifacts / name) == digest, name


def test_the_documents_envelope_is_pretty_and_each_account_one_compact_line(ran_fixtures):
    lines = (ran_fixtures.customer / "health.json").read_text(encoding="utf-8").splitlines()
    # By hand: the envelope's keys at 2 spaces, sorted; one line per account at 4, sorted by id.
    assert lines[:2] == ["{", '  "accounts": {']
    accounts = lines[2:14]
    assert [line.split('"')[1] for line in accounts] == [
        "ACME-001", "GLOBEX-002", "HOOLI-007", "INITECH-003", "KV-010", "NEWCO-011",
        "OLDCO-012", "PIPE-004", "SOYLENT-006", "STARK-008", "UMBRELLA-005", "WAYNE-009",
    ]  # fmt: skip
    assert lines[14:16] == ["  },", '  "as_of": "2026-09-27",']
    acme = accounts[0]
    assert acme.startswith(
        '    "ACME-001": {"components":{"adoption":{"available":true,"evidence":{"avg_active_users":106.0,'
        '"configured_weight":30.0,"recent_windows":4,"seats":200,"usage_windows":16,"utilisation_pct":53.0},'
        '"points":16.5,"reason":null,"score":55.0,"weight":30.0},"commercial":{'
    )
    assert acme.endswith(',"tier":"amber","tier_reason":null,"total":100},')
    assert all(line.endswith("},") for line in accounts[:-1]) and accounts[-1].endswith("}")
    # ... so a line tool finds an account, and `jq` reads the document as before.
    assert json.loads(acme.strip().rstrip(",").split(": ", 1)[1])["score"] == 68  # the README's ACME-001: 68/100, amber
