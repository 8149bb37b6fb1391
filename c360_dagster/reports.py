"""What the `c360` commands print: reports read back from the artifacts, and their text form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.text import format_amount
from c360_dagster.domain.view import Customer360

Report = dict[str, Any]


def view_report(view_dir: Path) -> Report:
    """Counts, as_of and active ARR by segment and currency (never summed across currencies)."""
    view = Customer360.open(view_dir)
    arr = (
        view.subs.filter(pl.col("status") == "active")
        .join(view.accounts.select("account_id", "segment"), on="account_id")
        .group_by("segment", "currency")
        .agg(pl.col("arr").sum().round(2), pl.len().alias("subscriptions"))
        .sort("segment", "currency")
    )
    return {
        "as_of": view.as_of.isoformat(),
        "counts": view.counts(),
        "arr_by_segment": arr.to_dicts(),
        "warnings": list(view.warnings),
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


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def render_checks(checks: list[dict[str, Any]]) -> list[str]:
    if not checks:
        return []
    failed = [c for c in checks if not c["passed"]]
    lines = [f"Checks: {len(checks) - len(failed)} of {len(checks)} passed"]
    lines += [
        f"  {c['severity']:<5} {c['asset']}.{c['check']}: {c['count']} row(s)" for c in failed
    ]
    return lines


def render_view(report: Report) -> list[str]:
    counts = " · ".join(f"{name} {count}" for name, count in report["counts"].items())
    lines = [f"as_of {report['as_of']}", f"  {counts}", "Active ARR by segment:"]
    lines += [
        f"  {row['segment']:<11} {format_amount(row['arr'], row['currency']):>14}  "
        f"({row['subscriptions']} subscription{'s' if row['subscriptions'] != 1 else ''})"
        for row in report["arr_by_segment"]
    ]
    lines += [f"  warning: {w}" for w in report["warnings"]]
    return lines


def render_written(paths: list[str]) -> list[str]:
    return ["Wrote:"] + [f"  {p}" for p in paths] if paths else []


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def account_ids(view_dir: Path) -> list[str]:
    return pl.read_parquet(view_dir / "accounts.parquet", columns=["account_id"])["account_id"].to_list()


def account_record(records: dict[str, Any], account_id: str) -> dict[str, Any]:
    """One account's record, or a clear error that suggests close matches."""
    from c360_dagster.domain.text import unknown_account

    if account_id not in records:
        raise unknown_account(account_id, sorted(records))
    return records[account_id]
