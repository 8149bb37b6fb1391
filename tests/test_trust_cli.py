"""The trust commands end to end: history over two lake snapshots, overrides and snoozes through
the assets (event log included), the config-impact preview, and the backtest command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from c360_dagster.console import main
from c360_dagster.domain.governance import eventlog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "customer"


def c360(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def configs_with(project, tmp_path: Path, overrides: str, snoozes: str) -> list[str]:
    """Project args whose configs folder has these overrides.yaml and snoozes.yaml."""
    configs = tmp_path / "configs"
    shutil.copytree(project.configs, configs)
    (configs / "overrides.yaml").write_text(overrides, encoding="utf-8")
    (configs / "snoozes.yaml").write_text(snoozes, encoding="utf-8")
    return ["--artifacts", str(project.artifacts), "--configs", str(configs)]


def test_history_overrides_snoozes_and_compare(project, capsys, tmp_path: Path) -> None:
    args = configs_with(
        project,
        tmp_path,
        """overrides:
  - {account: ACME-001, tier: red, reason: champion gone, author: Dana, expires_on: 2026-12-31}
  - {account: PIPE-004, tier: green, reason: old call, author: Lee, expires_on: 2026-09-01}
""",
        "snoozes:\n  - {account: WAYNE-009, code: SIG_SUPPORT_SPIKE, until: 2026-10-31, reason: migration tickets}\n",
    )
    for as_of in (["--as-of", "2026-08-30"], []):
        assert c360(capsys, "c360:load", "--dir", str(FIXTURES), "--quiet", *as_of, *args)[0] == 0
        printed = {}
        for stage in ("c360:health", "c360:signals"):
            code, printed[stage], err = c360(capsys, stage, "--quiet", *args)
            assert code == 0, err
    customer = project.customer

    # Overrides: both values in health.json, the warning printed, the event log records it.
    acme = json.loads((customer / "health.json").read_text())["accounts"]["ACME-001"]
    assert (acme["score"], acme["tier"], acme["computed_tier"]) == (68, "red", "amber")
    # The scoring run warns of the expired override; the account's explanation reads its score.
    warning = "warning: override of PIPE-004 (overrides.1) expired on 2026-09-01, before as_of 2026-09-27: ignored"
    assert warning in printed["c360:health"]
    code, out, _ = c360(capsys, "c360:health", "--account", "ACME-001", "--quiet", *args)
    assert code == 0
    assert "Tier overridden from amber to red by Dana: champion gone, until 31 Dec 2026" in out
    # Health is a shard asset: its events are in the shard's own chain (one shard: shard 0).
    main_log = project.artifacts / "governance" / "events.jsonl"
    events = eventlog.read_events(eventlog.shard_log_path(main_log, "0"))
    health_event = [e for e in events if e["asset"] == "account_health"][-1]
    assert health_event["extra"]["overrides"] == [
        {
            "account": "ACME-001",
            "computed": {"score": 68, "tier": "amber"},
            "overridden": {"score": 68, "tier": "red"},
            "reason": "champion gone",
            "author": "Dana",
            "expires_on": "2026-12-31",
        }
    ]
    log = project.artifacts / "governance" / "events.jsonl"
    assert eventlog.verify_log(log, log.with_name("events.pub")).ok

    # Lifecycle against the Aug 30 snapshot, and the snooze.
    document = json.loads((customer / "signals.json").read_text())
    assert document["lifecycle"]["previous_as_of"] == "2026-08-30"
    assert document["lifecycle"]["snoozed"] == 1
    assert [s["code"] for s in document["resolved"]["ACME-001"]] == ["SIG_STAKEHOLDER_CHANGE"]
    wayne = document["accounts"]["WAYNE-009"][0]
    assert (wayne["code"], wayne["snoozed_until"], wayne["snooze_reason"]) == (
        "SIG_SUPPORT_SPIKE",
        "2026-10-31",
        "migration tickets",
    )
    code, out, _ = c360(capsys, "c360:signals", "--quiet", *args)
    assert "Against 2026-08-30: new " in out and "snoozed 1" in out

    # History over the two lake snapshots.
    code, out, _ = c360(capsys, "c360:history", "--account", "ACME-001", *args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Score history of ACME-001 (2 snapshots):"
    assert lines[1].split()[0] == "2026-08-30" and lines[1].endswith("first snapshot")
    assert lines[2].split() == ["2026-09-27", "68/100", "red", "Down"]
    assert "adoption:" in out
    trend = json.loads(c360(capsys, "c360:history", "--account", "ACME-001", "--json", *args)[1])["trend"]
    assert [p["direction"] for p in trend] == [None, "Down"]
    assert c360(capsys, "c360:history", "--account", "NOPE-1", *args)[0] == 2

    # Config impact: a preview that writes nothing.
    candidate = tmp_path / "candidate.yaml"
    data = yaml.safe_load((Path(project.configs) / "health.yaml").read_text())
    data["weights"]["sentiment"] = 0
    candidate.write_text(yaml.safe_dump(data), encoding="utf-8")
    health_json = (customer / "health.json").read_bytes()
    snapshots = project.lake.snapshots("account_health")
    code, out, _ = c360(
        capsys,
        "c360:health",
        "--config",
        str(candidate),
        "--compare",
        str(Path(project.configs) / "health.yaml"),
        *args,
    )
    assert code == 0
    assert "nothing written" in out.splitlines()[0]
    # By hand (docs/customer-360.md): ACME-001 without sentiment is 72.81 -> 73, green.
    assert any(line.split()[:6] == ["ACME-001", "amber", "68", "->", "green", "73"] for line in out.splitlines())
    assert (customer / "health.json").read_bytes() == health_json
    assert project.lake.snapshots("account_health") == snapshots


def test_backtest_command(project, capsys, tmp_path: Path) -> None:
    code, _, err = c360(capsys, "c360:backtest", "--from", "2025-10-01", "--to", "2026-05-31", *project.args)
    assert code == 2 and "c360:load" in err
    data = tmp_path / "generated"
    assert c360(capsys, "c360:generate", "--out", str(data), "--accounts", "40", "--weeks", "60", *project.args)[0] == 0
    assert c360(capsys, "c360:load", "--dir", str(data), "--quiet", *project.args)[0] == 0
    code, out, _ = c360(
        capsys, "c360:backtest", "--from", "2025-10-01", "--to", "2026-05-31", "--step", "60", *project.args
    )
    assert code == 0
    assert out.startswith("Backtest 2025-10-01 to 2026-05-31 every 60 days, horizon 120 days: 5 snapshots, ")
    assert "Lift of red over green:" in out and "Renewal rate per bucket" in out
    assert (project.customer / "backtest.md").exists() and (project.customer / "backtest.svg").exists()
    report = json.loads(
        c360(
            capsys,
            "c360:backtest",
            "--from",
            "2025-10-01",
            "--to",
            "2026-05-31",
            "--step",
            "60",
            "--json",
            *project.args,
        )[1]
    )
    assert report["snapshots"] == 5 and report["renewals"] >= report["churned"] > 0
    code, _, err = c360(capsys, "c360:backtest", "--from", "2026-01-01", "--to", "2026-12-31", *project.args)
    assert code == 2 and "after the data's as_of" in err
