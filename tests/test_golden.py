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

GOLDEN = Path(__file__).with_name("golden_hashes.json")
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
