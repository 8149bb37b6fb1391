"""What the `c360` commands print: reports from a run's materialization metadata or the persisted view, and their text form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core.stages import frame_path, open_stage
from c360_dagster.domain.core.text import format_amount
from c360_dagster.domain.core.words import TOO_LITTLE_MEASURED, segment_label
from c360_dagster.domain.ingest.view import MANIFEST, STAGE, VIEW_DIR, active_arr_by_segment, read_view_table

Report = dict[str, Any]


def view_report(customer_dir: Path) -> Report:
    """Counts, as_of and active ARR of the persisted view: its manifest, accounts and subscriptions, verified."""
    stored = open_stage(customer_dir, STAGE)
    manifest = stored.read_json(f"{VIEW_DIR}/{MANIFEST}")
    arr = active_arr_by_segment(read_view_table(stored, "accounts"), read_view_table(stored, "subs"))
    return {
        "as_of": manifest["as_of"],
        "counts": manifest["counts"],
        "arr_by_segment": arr,
        "warnings": manifest["warnings"],
    }


def loaded_view_report(loaded: dict[str, Any]) -> Report:
    """The same report from the metadata of the run's `customer_360` materialization."""
    return {
        "as_of": loaded["as_of"],
        "counts": loaded["counts"],
        "arr_by_segment": loaded["active_arr_by_segment"],
        "warnings": loaded["warnings"],
    }


def materialized(result: Any) -> dict[str, dict[str, Any]]:
    """Each asset's materialization metadata in a run, as plain values, by asset key.

    What the run's assets already computed; a command's summary reads it here instead of
    re-reading the documents they wrote.
    """
    return {
        event.asset_key.to_user_string(): {name: value.value for name, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def check_rows(result: Any) -> list[dict[str, Any]]:
    """The asset-check evaluations of a run, sorted by asset and check name."""
    rows = [
        {
            "asset": evaluation.asset_key.to_user_string(),
            "check": evaluation.check_name,
            "passed": evaluation.passed,
            "severity": evaluation.severity.value,
            "count": evaluation.metadata["count"].value if "count" in evaluation.metadata else None,
        }
        for evaluation in result.get_asset_check_evaluations()
    ]
    return sorted(rows, key=lambda r: (r["asset"], r["check"]))


def merge_check_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per check from the rows of several runs (one per shard): passed when it passed in
    every run, counting the failing rows of all; sorted by asset and check name."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["asset"], row["check"])
        if key not in merged:
            merged[key] = dict(row)
            continue
        seen = merged[key]
        seen["passed"] = seen["passed"] and row["passed"]
        if row["count"] is not None:
            seen["count"] = (seen["count"] or 0) + row["count"]
    return [merged[key] for key in sorted(merged)]


def read_json(path: Path) -> Any:
    """A small per-account document (a playbook); never a stage's whole output."""
    return json.loads(path.read_text(encoding="utf-8"))


def render_checks(checks: list[dict[str, Any]]) -> list[str]:
    if not checks:
        return []
    failed = [c for c in checks if not c["passed"]]
    lines = [f"Checks: {len(checks) - len(failed)} of {len(checks)} passed"]
    lines += [f"  {c['severity']:<5} {c['asset']}.{c['check']}: {c['count']} row(s)" for c in failed]
    return lines


def render_view(report: Report) -> list[str]:
    counts = " · ".join(f"{name} {count}" for name, count in report["counts"].items())
    lines = [f"as_of {report['as_of']}", f"  {counts}", "Active ARR by segment:"]
    lines += [
        f"  {segment_label(row['segment']):<11} {format_amount(row['arr'], row['currency']):>14}  "
        f"({row['subscriptions']} subscription{'s' if row['subscriptions'] != 1 else ''})"
        for row in report["arr_by_segment"]
    ]
    lines += [f"  warning: {w}" for w in report["warnings"]]
    return lines


def tier_counts(summary: Report) -> str:
    """`amber 4 (1 not green: too little measured), green 4, red 2; no score: churned 1, insufficient data 1`
    from a health summary (names sorted).

    Accounts without a score are counted apart, by status, never in a tier; amber accounts held
    back from green for want of measured data are said so.
    """
    held = summary["held_at_amber"]
    tiers = ", ".join(
        f"{tier} {n}" + (f" ({held} not green: {TOO_LITTLE_MEASURED})" if tier == "amber" and held else "")
        for tier, n in sorted(summary["tiers"].items())
    )
    unscored = [
        f"{status.replace('_', ' ')} {n}" for status, n in sorted(summary["status"].items()) if status != "scored" and n
    ]
    return tiers + (f"; no score: {', '.join(unscored)}" if unscored else "")


def render_written(paths: list[str]) -> list[str]:
    return ["Wrote:"] + [f"  {p}" for p in paths] if paths else []


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def account_ids(customer_dir: Path) -> list[str]:
    return read_view_table(open_stage(customer_dir, STAGE), "accounts")["account_id"].to_list()


def health_frame(customer_dir: Path) -> pl.DataFrame:
    """The persisted health frame, verified against its stage."""
    return open_stage(customer_dir, "health").read_frame(frame_path("health"))


def health_record(customer_dir: Path, account_id: str) -> dict[str, Any]:
    """One account's health.json record, built from its row of the health frame alone;
    a clear error that suggests close matches when the account is not there."""
    from c360_dagster.domain.core.text import unknown_account
    from c360_dagster.domain.scoring.health import health_records

    scored = health_frame(customer_dir)
    row = scored.filter(pl.col("account_id") == account_id)
    if row.is_empty():
        raise unknown_account(account_id, scored["account_id"].to_list())
    return next(health_records(row))[1]
