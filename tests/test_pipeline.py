"""The whole chain through the `c360` shim: every output made, and byte-identical on a rerun (on either lake)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from c360_dagster.console import main
from c360_dagster.domain.governance import eventlog, metrics
from c360_dagster.domain.governance.lake import DeltaLake, open_lake

# Outputs that legitimately differ between two runs: the run ids in the signed log, the random
# signing key, counters that accumulate, and the DuckDB file's page layout.
RUN_SPECIFIC = {"governance", "metrics", "lake"}
REPO = Path(__file__).resolve().parents[1]


def _outputs(artifacts: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(artifacts)): path.read_bytes()
        for path in sorted(artifacts.rglob("*"))
        if path.is_file()
        and path.relative_to(artifacts).parts[0] not in RUN_SPECIFIC
        # Hidden files and folders hold locks (each names its holder's pid), not outputs.
        and not any(part.startswith(".") for part in path.relative_to(artifacts).parts)
    }


@pytest.mark.untraced
def test_run_makes_every_output_and_reruns_byte_identical_on_either_lake(ran_fixtures, tmp_path, monkeypatch):
    project = ran_fixtures
    # OLDCO-012 churned: the run leaves it out, says so, and still succeeds.
    assert "Playbooks and QBR packs: 11 accounts\n  skipped OLDCO-012: churned, not a customer today\n" in project.out

    customer = project.artifacts / "customer"
    accounts = json.loads((customer / "360.json").read_text())["records"]["accounts"]
    assert not (customer / "playbooks" / "OLDCO-012.md").exists() and not (customer / "qbr_OLDCO-012").exists()
    for account in accounts:
        account_id = account["account_id"]
        if account_id == "OLDCO-012":
            continue
        assert (customer / "playbooks" / f"{account_id}.md").exists()
        assert (customer / f"qbr_{account_id}" / "scorecard.md").exists()
        assert (customer / f"qbr_{account_id}.pptx").exists()
    as_of = json.loads((customer / "360.json").read_text())["as_of"]
    for table in ("crm_opps", "account_health", "customer_signals", "renewal_forecasts"):
        assert [d.isoformat() for d in project.lake.snapshots(table)] == [as_of]
    log = project.artifacts / "governance" / "events.jsonl"
    assert eventlog.verify_log(log, log.with_name("events.pub")).ok
    counters = metrics.read_metrics(project.artifacts / "metrics" / "c360.prom")
    assert counters["c360_accounts_loaded_total"] == 12 and counters["c360_accounts_scored_total"] == 10
    assert counters["c360_qbr_packs_generated_total"] == len(list(customer.glob("qbr_*.pptx")))

    first = _outputs(project.artifacts)
    # The rerun keeps its lake in Delta Lake tables (scale.yaml): the same outputs, the same lake rows.
    configs = tmp_path / "delta-configs"
    shutil.copytree(project.configs, configs)
    (configs / "scale.yaml").write_text(f"lake:\n  format: delta\n  location: {tmp_path / 'delta'}\n")
    other = tmp_path / "again"
    # Rerun on (a copy of) the instance that made the first run, from another folder.
    shutil.copytree(project.root / ".dagster_home", tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.chdir(project.root)
    assert main(["c360:run", "--quiet", "--artifacts", str(other), "--configs", str(configs)]) == 0
    second = _outputs(other)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    delta = open_lake(configs, other, REPO / "contracts" / "schemas")
    assert isinstance(delta, DeltaLake) and not (other / "lake").exists()
    for table in ("crm_opps", "account_health", "customer_signals", "renewal_forecasts"):
        rows = project.lake.read_snapshot(table)
        assert rows.height > 0 and delta.read_snapshot(table).equals(rows), table
