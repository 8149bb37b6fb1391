"""The `c360:*` commands. Each is a few lines: run a job, then report what it made."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from c360_dagster import reports
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.text import format_amount, plural, visible_text
from c360_dagster.domain.core.words import fmt_date, signal_name, tier_words
from c360_dagster.domain.scoring.account_state import LIVE_STATES
from c360_dagster.registry import Report, command
from c360_dagster.runner import (
    CPUS,
    ProjectPaths,
    account_batches,
    is_known_account,
    register_accounts,
    run_batches,
    run_chain,
    run_job,
)

if TYPE_CHECKING:
    from c360_dagster.domain.governance.lake import Lake


def _paths(args: argparse.Namespace, fixtures_dir: str | None = None) -> ProjectPaths:
    return ProjectPaths(
        fixtures_dir=fixtures_dir or getattr(args, "dir", None) or "fixtures/customer",
        configs_dir=args.configs,
        artifacts_dir=args.artifacts,
    )


def _lake(args: argparse.Namespace) -> Lake:
    """The project's lake, as scale.yaml in --configs names it."""
    from c360_dagster.domain.governance.lake import open_lake

    return open_lake(args.configs, args.artifacts, ProjectPaths.contracts_dir)


def _iso_date(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def _run(args: argparse.Namespace, job: str, **kwargs) -> tuple[Report, dict[str, dict]]:
    """Run a job; return its report (run id, checks) and its assets' materialization metadata."""
    result = run_job(job, _paths(args), progress=not (args.quiet or args.json), **kwargs)
    return {"ok": True, "run_id": result.run_id, "checks": reports.check_rows(result)}, reports.materialized(result)


def _run_chain(args: argparse.Namespace, job: str, ops: dict | None = None) -> tuple[Report, dict[str, dict]]:
    """Run a chain job over every shard (runner.run_chain); the same report as `_run`."""
    ran = run_chain(job, _paths(args), ops=ops, progress=not (args.quiet or args.json))
    return {"ok": True, "run_id": ran.run_id, "checks": ran.checks}, ran.metadata


def _with_footer(lines: list[str], report: Report, written: list[str]) -> str:
    """A command's lines, then its run's check results and the paths it wrote."""
    return reports.text(lines + reports.render_checks(report["checks"]) + reports.render_written(written))


def _load_ops(args: argparse.Namespace) -> dict:
    """Run config of `customer_360`: an explicit `--as-of`, else derived from the data."""
    return {"customer_inputs": {"as_of": args.as_of}} if args.as_of else {}


# --- load / summary / run -------------------------------------------------------------------


def _load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="fixtures/customer", help="input folder")
    parser.add_argument("--as-of", type=_iso_date, help="YYYY-MM-DD (default: from the data)")


def _render_load(report: Report) -> str:
    lines = [f"Customer 360 loaded from {report['dir']}", *reports.render_view(report["view"])]
    return _with_footer(lines, report, report["written"])


@command("load", "Load and validate an input folder into the Customer 360 view.", _render_load, _load_args)
def load(args: argparse.Namespace) -> Report:
    report, metadata = _run_chain(args, "c360_load", ops=_load_ops(args))
    customer = _paths(args).customer_dir
    return {
        **report,
        "dir": args.dir,
        "view": reports.loaded_view_report(metadata["customer_inputs"]),
        "written": [str(customer / "360.json"), str(customer / "frames" / "360")],
    }


def _render_summary(report: Report) -> str:
    lines = ["Customer 360 summary", *reports.render_view(report["view"])]
    if "health" in report:
        lines.append("Health tiers: " + reports.tier_counts(report["health"]))
    return reports.text(lines)


@command("summary", "Summarise the current Customer 360 view and scores.", _render_summary)
def summary(args: argparse.Namespace) -> Report:
    from c360_dagster.domain.scoring import health

    customer = _paths(args).customer_dir
    if not (customer / "frames" / "360" / "manifest.json").exists():
        raise C360Error(f"nothing loaded yet under {customer}; run `c360 c360:load` first")
    report: Report = {"ok": True, "view": reports.view_report(customer)}
    if (customer / "frames" / "health.parquet").exists():
        report["health"] = health.health_summary(reports.health_frame(customer))
    return report


def _render_run(report: Report) -> str:
    lines = ["Whole chain done: load → health → signals → renewals → lake → playbooks → QBR packs"]
    lines += reports.render_view(report["view"])
    lines.append("Health tiers: " + reports.tier_counts(report["health"]))
    lines.append(f"Playbooks and QBR packs: {len(report['accounts'])} accounts")
    lines += [
        f"  skipped {a}: {state.replace('_', ' ')}, not a customer today" for a, state in report["skipped"].items()
    ]
    lines += [f"  blocked {a}: {why}" for a, why in report["blocked"].items()]
    return _with_footer(lines, report, report["written"])


@command("run", "Run the whole chain on an input folder, QBR packs included.", _render_run, _load_args)
def run_all(args: argparse.Namespace) -> Report:
    import polars as pl

    report, metadata = _run_chain(args, "c360_chain", ops=_load_ops(args))
    customer = _paths(args).customer_dir
    # Churned and not-started accounts get no playbook or QBR pack (the gates would refuse them).
    states = reports.health_frame(customer).select("account_id", "lifecycle")
    skipped = dict(states.filter(~pl.col("lifecycle").is_in(list(LIVE_STATES))).sort("account_id").iter_rows())
    ids = sorted(set(reports.account_ids(customer)) - set(skipped))
    failed = run_batches("c360_account", _paths(args), account_batches(ids))
    blocked = {
        batch[0] if len(batch) == 1 else f"{batch[0]}..{batch[-1]} ({len(batch)} accounts)": error
        for batch, error in failed.items()
    }
    return {
        **report,
        "ok": not blocked,
        "view": reports.loaded_view_report(metadata["customer_inputs"]),
        "health": metadata["report/account_health_report"]["summary"],
        "accounts": ids,
        "skipped": skipped,
        "blocked": blocked,
        "written": [
            *sorted(str(p) for p in customer.glob("*.json")),
            str(customer / "summary.md"),
            f"{customer / 'playbooks'}/ ({len(ids)} playbooks)",
            f"{customer}/qbr_<account>/, qbr_<account>.pptx, review_<account>.md and .pptx ({len(ids) - len(blocked)} QBR packs)",
            _lake(args).where,
            str(_paths(args).events_path),
        ],
    }


# --- health / signals / renewals ------------------------------------------------------------


def _stage_args(name: str):
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help=f"config YAML (default: configs/customer/{name}.yaml)")
        parser.add_argument("--out", help=f"output JSON (default: artifacts/customer/{name}.json)")
        if name == "health":
            parser.add_argument("--account", help="print this account's breakdown in words")
            parser.add_argument(
                "--compare",
                metavar="BASELINE",
                help="preview: list accounts whose tier changes from BASELINE to --config (writes nothing)",
            )

    return arguments


def _stage_ops(args: argparse.Namespace, asset: str) -> dict:
    """Run config of a stage's shard asset (`--config`) and its roll-up (`--out`)."""
    return {
        asset: {"config_path": args.config} if args.config else {},
        f"report__{asset}_report": {"out": args.out} if args.out else {},
    }


def _render_health(report: Report) -> str:
    warnings = [f"warning: {w}" for w in report.get("warnings", [])]
    if "changes" in report:
        return reports.text(_render_compare(report))
    if "explanation" in report:
        return reports.text(warnings + [report["explanation"]])
    scored = sum(report["tiers"].values())  # the accounts with a score; the rest are counted apart by status
    lines = warnings + [f"Health of {report['accounts']} accounts: {scored} scored (as_of {report['as_of']})"]
    lines.append("Tiers: " + reports.tier_counts(report))
    lines.append("Scores of scored accounts: " + ", ".join(f"{k} {v}" for k, v in sorted(report["score"].items())))
    return _with_footer(lines, report, [report["out"]])


@command(
    "health", "Score account health (0–100, red/amber/green) with evidence.", _render_health, _stage_args("health")
)
def health_command(args: argparse.Namespace) -> Report:

    if args.compare:
        return _compare_configs(args)
    if args.account:
        return _explain_account(args)
    report, metadata = _run_chain(args, "c360_health", ops=_stage_ops(args, "account_health"))
    scored = metadata["report/account_health_report"]
    report.update(
        as_of=scored["as_of"], out=scored["path"], warnings=scored["overrides"]["warnings"], **scored["summary"]
    )
    return report


def _explain_account(args: argparse.Namespace) -> Report:
    """One account's health in words, read from the live health stage (checked against its
    manifest): a read like `c360:summary`, no run, so nothing is rescored or written."""
    from c360_dagster.domain.scoring import health

    if args.config or args.out:
        raise C360Error(
            "--account explains the score already made and runs nothing; score with --config or --out "
            "first (`c360 c360:health --config ...`), then ask for the account",
            code="USAGE_INVALID",
        )
    _check_view_account(args)
    try:
        record = reports.health_record(_paths(args).customer_dir, args.account)
    except C360Error as exc:
        if exc.code != "STAGE_MISSING":
            raise
        raise C360Error(f"{exc}: nothing scored yet; run `c360 c360:health` first", code=exc.code) from None
    return {"ok": True, "account": args.account, "explanation": health.explain_health(record)}


def _check_view_account(args: argparse.Namespace) -> None:
    """Refuse an --account the loaded view does not hold before any job runs (nothing changes)."""
    from c360_dagster.domain.core.text import unknown_account

    view_dir = _paths(args).customer_dir / "frames" / "360"
    if (view_dir / "manifest.json").exists():  # without a view the run itself says to load first
        ids = reports.account_ids(_paths(args).customer_dir)
        if args.account not in ids:
            raise unknown_account(args.account, ids)


def _loaded_view_dir(args: argparse.Namespace) -> Path:
    """The folder of the 360 view `c360:load` persisted, or a clear error saying to run it."""
    view_dir = _paths(args).customer_dir / "frames" / "360"
    if not (view_dir / "manifest.json").exists():
        raise C360Error(f"no Customer 360 view under {view_dir}; run `c360 c360:load` first")
    return view_dir


def _persisted_view(args: argparse.Namespace):
    """The 360 view `c360:load` persisted, or a clear error saying to run it."""
    from c360_dagster.domain.core.stages import open_stage
    from c360_dagster.domain.ingest.view import STAGE, Customer360

    _loaded_view_dir(args)
    return Customer360.open(open_stage(_paths(args).customer_dir, STAGE))


def _compare_configs(args: argparse.Namespace) -> Report:
    """Score the persisted view with both configs; nothing is written (a preview)."""
    from c360_dagster.domain.scoring import health, history

    view = _persisted_view(args)
    candidate = args.config or str(_paths(args).config_path("health"))
    changes = history.compare_configs(
        view, health.load_health_config(candidate), health.load_health_config(args.compare)
    )
    return {
        "ok": True,
        "as_of": view.as_of.isoformat(),
        "accounts": view.accounts.height,
        "candidate": candidate,
        "baseline": args.compare,
        "changes": changes.to_dicts(),
    }


def _render_compare(report: Report) -> list[str]:
    from c360_dagster.domain.scoring.health import COMPONENTS, STATUS_WORDS

    def standing(row: Report, when: str) -> str:
        """`amber (too little measured) 84`, or the status in words for an account without a score."""
        if row[f"score_{when}"] is None:
            return STATUS_WORDS[row[f"tier_{when}"]]
        return f"{tier_words(row[f'tier_{when}'], row[f'tier_reason_{when}'])} {row[f'score_{when}']}"

    lines = [
        (
            f"Tier changes from {report['baseline']} to {report['candidate']} (as_of {report['as_of']}): "
            f"{len(report['changes'])} of {report['accounts']} accounts; nothing written"
        )
    ]
    for row in report["changes"]:
        moved = [
            f"{c} {row[f'{c}_points_before']} -> {row[f'{c}_points_after']}"
            for c in COMPONENTS
            if row[f"{c}_points_before"] != row[f"{c}_points_after"]
        ]
        lines.append(
            f"  {row['account_id']:<16} {standing(row, 'before')} -> {standing(row, 'after')}  "
            f"({', '.join(moved) or 'same points, other tier cutoffs'})"
        )
    return lines


def _render_signals(report: Report) -> str:
    lines = [f"Signals fired (as_of {report['as_of']}): {sum(report['counts'].values())}"]
    # The code is what operators filter by; the name beside it is what it means.
    lines += [f"  {code:<26} {signal_name(code):<21} {n:>2}" for code, n in report["counts"].items()]
    life = report["lifecycle"]
    if life["previous_as_of"]:  # with no earlier snapshot every signal is new: nothing to say
        lines.append(
            f"Against {life['previous_as_of']}: new {life['new']}, ongoing {life['ongoing']}, "
            f"resolved {life['resolved']}, snoozed {life['snoozed']}"
        )
    lines += [f"  warning: {w}" for w in life["warnings"]]
    return _with_footer(lines, report, [report["out"]])


@command("signals", "Detect churn-risk and expansion signals per account.", _render_signals, _stage_args("signals"))
def signals_command(args: argparse.Namespace) -> Report:
    report, metadata = _run_chain(args, "c360_signals", ops=_stage_ops(args, "customer_signals"))
    fired = metadata["report/customer_signals_report"]
    counts = {code: n for code, n in fired["signal_counts"]["by_code"].items() if n}
    return {**report, "as_of": fired["as_of"], "counts": counts, "lifecycle": fired["lifecycle"], "out": fired["path"]}


def _renewals_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window-days", type=int, default=120, help="days after as_of (default 120)")
    parser.add_argument("--config", help="config YAML (default: configs/customer/renewals.yaml)")


def _render_renewals(report: Report) -> str:
    summary = report["summary"]
    at_risk = " and ".join(summary["at_risk_buckets"])
    lines = [
        f"Renewals within {report['window_days']} days of {fmt_date(report['as_of'])}: "
        f"{summary['subscriptions']} subscriptions of {summary['accounts']} accounts",
        f"Forecast per currency (at risk = the ARR in the {at_risk} bucket"
        f"{'' if len(summary['at_risk_buckets']) == 1 else 's'}; never added across currencies):",
    ]
    for row in summary["by_currency"]:
        cur = row["currency"]
        lines.append(
            f"  {cur}  up for renewal {format_amount(row['arr'], cur)}, expected "
            f"{format_amount(row['expected_arr'], cur)}, at risk {format_amount(row['arr_at_risk'], cur)}"
        )
        lines.append("       " + " · ".join(f"{b['bucket']} {format_amount(b['arr'], cur)}" for b in row["buckets"]))
    lines.append("Top risks:" if summary["top_risks"] else "Top risks: none")
    risks = summary["top_risks"][:5]
    tiers = [tier_words(risk["tier"], risk["tier_reason"]) for risk in risks]
    width = max(map(len, tiers), default=0)
    lines += [
        f"  {fmt_date(risk['renewal_date']):>11}  {risk['subscription_id']:<12} {tier:<{width}} {risk['bucket']:<6} "
        f"{format_amount(risk['arr'], risk['currency']):>12}  {risk['main_reason'] or 'no risk signal'} "
        f"→ {risk['suggested_playbook_title']}"
        for risk, tier in zip(risks, tiers, strict=True)
    ]
    return reports.text(lines + reports.render_written(report["written"]))


@command("renewals", "Forecast renewals due within the window.", _render_renewals, _renewals_args)
def renewals_command(args: argparse.Namespace) -> Report:
    ops = {"window_days": args.window_days, **({"config_path": args.config} if args.config else {})}
    report, metadata = _run_chain(
        args, "c360_renewals", ops={"renewal_forecasts": ops, "report__renewal_forecasts_report": ops}
    )
    forecast = metadata["report/renewal_forecasts_report"]
    return {
        **report,
        "as_of": forecast["as_of"],
        "window_days": args.window_days,
        "summary": forecast["forecast"],
        "written": [forecast["path"], str(_paths(args).customer_dir / "summary.md")],
    }


# --- per account: playbook / qbr ------------------------------------------------------------


def _account_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", required=True, help="account id, e.g. ACME-001")


def _check_account(args: argparse.Namespace) -> None:
    """An account asked for by name: refused before any run when the loaded view does not hold
    it; registered as an `account` partition when no stage has (a green account, say)."""
    if is_known_account(args.account):  # one indexed lookup, the common case
        return
    _loaded_view_dir(args)
    _check_view_account(args)
    register_accounts([args.account])


def _render_account(report: Report) -> str:
    lines = [f"{report['what']} for {report['account']}:", *report.get("lines", [])]
    return _with_footer(lines, report, report["written"])


@command("playbook", "Build one account's success playbook.", _render_account, _account_arg)
def playbook_command(args: argparse.Namespace) -> Report:
    _check_account(args)
    report, _ = _run(args, "c360_playbook", partition_key=args.account)
    base = _paths(args).customer_dir / "playbooks" / args.account
    plan = reports.read_json(base.with_suffix(".json"))
    # A playbook's account is a customer today, so a missing score means not enough data yet.
    health = (
        "no score yet (not enough data)"
        if plan["score"] is None
        else f"tier {tier_words(plan['tier'], plan['tier_reason'])}, score {plan['score']}"
    )
    lines = [f"  {health}; plays: {', '.join(plan['play_titles'])}"]
    # The owner can be a name from the inputs: shown on one line, invisible characters made visible.
    lines += [
        f"  {fmt_date(step['due_date']):>11}  {' '.join(visible_text(step['owner']).split())}: {step['title']}"
        for step in plan["steps"][:3]
    ]
    if len(plan["steps"]) > 3:
        done = f", {len(plan['done'])} already done" if plan["done"] else ""
        more = plural(len(plan["steps"]) - 3, "more step")
        lines.append(f"  … {more}, {plural(len(plan['checkpoints']), 'checkpoint')}{done}")
    return {
        **report,
        "what": "Playbook",
        "account": args.account,
        "lines": lines,
        "written": [str(base.with_suffix(".md")), str(base.with_suffix(".json"))],
    }


def _qbr_args(parser: argparse.ArgumentParser) -> None:
    _account_arg(parser)
    parser.add_argument("--include-contacts", action="store_true", help="add contact names and emails")
    parser.add_argument("--privacy-signoff", action="store_true", help="privacy sign-off for contact data")


@command("qbr", "Build one account's QBR pack (Markdown and PowerPoint).", _render_account, _qbr_args)
def qbr_command(args: argparse.Namespace) -> Report:
    _check_account(args)
    config = {"include_contacts": args.include_contacts, "privacy_signoff": args.privacy_signoff}
    tags = {"c360/privacy_signoff": "granted"} if args.include_contacts and args.privacy_signoff else {}
    report, _ = _run(args, "c360_qbr", partition_key=args.account, ops={"qbr_pack": config}, tags=tags)
    customer = _paths(args).customer_dir
    from c360_dagster.domain.qbr.pack import pack_names  # the pack's modules, for this command only

    folder, *beside = pack_names(args.account)
    written = sorted(str(p) for p in (customer / folder).iterdir())
    written += [str(customer / name) for name in beside if (customer / name).exists()]
    return {**report, "what": "QBR pack", "account": args.account, "written": written}


# --- governance -----------------------------------------------------------------------------


def _render_verify(report: Report) -> str:
    anchor = f"  trusted key: {report['pinned_by']} (fingerprint and source: --json)"
    witnessed = report["witnessed"]
    if witnessed is None:
        head = "  head: not witnessed (the Dagster instance records no event of this log)"
    else:
        later = report["events"] - witnessed["seq"]
        head = f"  head: event {witnessed['seq']} witnessed by the Dagster instance" + (
            f" ({later} later not yet)" if later > 0 else ""
        )
    shards = _render_shard_chains(report)
    if report["ok"]:
        return reports.text([f"OK: {report['events']} events, chain and signatures verified", anchor, head, *shards])
    place = [f"shard {report['bad_shard']}"] if report.get("bad_shard") is not None else []
    place += [f"line {report['line']}"] if report["line"] is not None else []
    where = " ".join(place) + ": " if place else ""
    return reports.text([f"BAD {where}{report['reason']}", anchor, head, *shards])


def _render_shard_chains(report: Report) -> list[str]:
    """One line for the shard chains, and one per chain ahead of the roll-up or not in it (none unsharded)."""
    chains = report["shards"]
    if not chains:
        return []
    events = sum(chain["events"] for chain in chains.values())
    rollup = (
        f"each holding the head the roll-up in event {report['rollup']} recorded"
        if report["rollup"] is not None
        else "no roll-up recorded yet"
    )
    lines = [f"  shards: {plural(len(chains), 'chain')}, {plural(events, 'event')}, {rollup}"]
    for shard, chain in chains.items():
        if chain["ok"] and chain["rolled_up"] is None and report["rollup"] is not None:
            lines.append(f"  shard {shard}: not in the latest roll-up")
        elif chain["ahead"]:
            lines.append(f"  shard {shard}: {plural(chain['ahead'], 'event')} ahead of the roll-up")
    return lines


def _verify_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pubkey",
        metavar="FINGERPRINT",
        help="trust only this signing key (sha256:<hex>, as `verify --json` reports it); "
        "default: governance.yaml's signing_key_fingerprint, else the local signing key",
    )


@command(
    "verify",
    "Verify the signed event log: every hash link and signature, against a pinned key and the witnessed head.",
    _render_verify,
    _verify_args,
)
def verify_command(args: argparse.Namespace) -> Report:
    from c360_dagster.domain.core import stages
    from c360_dagster.domain.governance import anchor, eventlog
    from c360_dagster.instance import witnessed_heads

    log = _paths(args).events_path
    trusted = anchor.trusted_key(log, args.pubkey, _paths(args).config_path("governance"))
    witnessed = witnessed_heads()
    seq_hash = witnessed.get(str(log))
    report: Report = {
        "key": trusted.fingerprint,
        "pinned_by": trusted.pinned_by,
        "key_source": trusted.source,
        "witnessed": None if seq_hash is None else {"seq": seq_hash[0], "hash": seq_hash[1]},
        "rollup": None,
        "shards": {},
    }
    if trusted.public_key is None:
        return {**report, "ok": False, "events": 0, "line": None, "reason": trusted.problem}
    ledger = eventlog.verify_ledger(log, trusted.public_key, witnessed)
    main = ledger.main
    report |= {"ok": main.ok, "events": main.events_checked, "line": main.bad_line, "reason": main.reason}
    report["rollup"] = ledger.rollup_seq
    report["shards"] = {
        shard: {
            "ok": chain.result.ok,
            "events": chain.result.events_checked,
            "line": chain.result.bad_line,
            "reason": chain.result.reason,
            "rolled_up": chain.rolled_up,
            "ahead": chain.ahead,
        }
        for shard, chain in ledger.shards.items()
    }
    bad_shard = next((shard for shard, chain in ledger.shards.items() if not chain.result.ok), None)
    if main.ok and bad_shard is not None:
        chain = ledger.shards[bad_shard].result
        report |= {"ok": False, "bad_shard": bad_shard, "line": chain.bad_line, "reason": chain.reason}
    if report["ok"]:
        # The log proves what was written; the live outputs must still be those bytes.
        try:
            signed = eventlog.signed_outputs(log)
            report["files_checked"] = stages.verify_live_stages(_paths(args).customer_dir, signed)
            # The lake's rows too, in the shards the latest roll-up combined (a shrunk shard count
            # removed the others' rows); without a roll-up, every shard chain.
            rolled_up = {shard for shard, chain in ledger.shards.items() if chain.rolled_up is not None}
            chains = {
                shard: outputs
                for shard, outputs in signed.items()
                if shard is not None and (not rolled_up or shard in rolled_up)
            }
            report["lake_snapshots_checked"] = _lake(args).verify_signed(chains)
        except C360Error as exc:
            report |= {"ok": False, "reason": exc.describe()}
    return report


def _render_lineage(report: Report) -> str:
    lines = [f"Lineage of {report['account']}:"]
    for step in report["chain"]:
        lines.append(f"  {step['asset']}  (run {step['run_id'][:8]}, as_of {step['as_of']})")
        lines += [f"      in  {name}: {digest}" for name, digest in sorted(step["inputs"].items())]
        lines += [f"      out {name}: {digest}" for name, digest in sorted(step["outputs"].items())]
    return reports.text(lines)


@command(
    "lineage", "Print the chain fixtures → 360 → … → QBR for an account, from the log.", _render_lineage, _account_arg
)
def lineage_command(args: argparse.Namespace) -> Report:
    from c360_dagster.domain.governance import eventlog
    from c360_dagster.domain.ingest.shards import shard_of

    log = _paths(args).events_path
    events = eventlog.account_events(log, functools.partial(shard_of, args.account))
    return {"ok": True, "account": args.account, "chain": eventlog.lineage(events, args.account)}


# --- trust: history / backtest -------------------------------------------------------------


def _render_history(report: Report) -> str:
    from c360_dagster.domain.scoring.history import render_trend

    return reports.text(render_trend(report["account"], report["trend"]))


@command(
    "history",
    "Print an account's score per lake snapshot: tier, Up/Down/Same, what moved.",
    _render_history,
    _account_arg,
)
def history_command(args: argparse.Namespace) -> Report:
    from c360_dagster.domain.scoring import history

    project_lake = _lake(args)
    rows = project_lake.score_history(args.account)
    if not rows:
        raise C360Error(
            f"no health snapshot of {args.account!r} in {project_lake.where}; run `c360 c360:run` first",
            code="NO_HISTORY",
        )
    return {"ok": True, "account": args.account, "trend": history.score_trend(rows)}


def _backtest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", type=_iso_date, required=True, help="first snapshot date YYYY-MM-DD")
    parser.add_argument(
        "--to", dest="end", type=_iso_date, required=True, help="last snapshot date (at most the data's as_of)"
    )
    parser.add_argument("--step", type=int, default=30, help="days between snapshots (default 30)")
    parser.add_argument(
        "--horizon", type=int, default=120, help="days after each snapshot to match renewals (default 120)"
    )


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _render_backtest(report: Report) -> str:
    lift = report["lift_red_over_green"]
    lines = [
        (
            f"Backtest {report['from']} to {report['to']} every {report['step']} days, horizon {report['horizon']} days: "
            f"{report['snapshots']} snapshots, {report['renewals']} renewals observed, {report['churned']} churned, "
            f"{report['downsold']} downsold"
        ),
        (
            f"Lift of red over green: {lift if lift is not None else 'n/a'}; "
            f"red precision {_rate(report['red_precision'])}, recall {_rate(report['red_recall'])}"
        ),
        "Churn rate per tier: "
        + ", ".join(
            f"{row['tier']} {_rate(row['churn_rate'])} ({row['churned']}/{row['renewals']})" for row in report["tiers"]
        ),
        "Renewal rate per bucket (observed vs configured): "
        + ", ".join(
            f"{row['bucket']} {_rate(row['observed_rate'])} vs {_rate(row['probability'])}"
            for row in report["calibration"]
        ),
        "Revenue retention per quarter (GRR, NRR): "
        + (
            "; ".join(
                f"{row['period']} {row['currency']} {_rate(row['grr'])}, {_rate(row['nrr'])}"
                for row in report["retention"]
            )
            or "no renewal observed"
        ),
    ]
    return reports.text(lines + reports.render_written(report["written"]))


@command(
    "backtest",
    "Replay health, signals and renewal buckets at past dates against what renewed.",
    _render_backtest,
    _backtest_args,
)
def backtest_command(args: argparse.Namespace) -> Report:
    from c360_dagster.domain.core.locking import project_lock
    from c360_dagster.domain.renewals import backtest
    from c360_dagster.domain.renewals import forecast as renewals
    from c360_dagster.domain.scoring import health, signals

    view = _persisted_view(args)
    paths = _paths(args)
    result = backtest.run_backtest(
        view,
        health.load_health_config(paths.config_path("health")),
        signals.load_signals_config(paths.config_path("signals")),
        renewals.load_renewals_config(paths.config_path("renewals")),
        dt.date.fromisoformat(args.start),
        dt.date.fromisoformat(args.end),
        args.step,
        args.horizon,
    )
    with project_lock(paths.artifacts):
        written = backtest.write_backtest(result, paths.customer_dir)
    return {
        "ok": True,
        "from": args.start,
        "to": args.end,
        "step": args.step,
        "horizon": args.horizon,
        "snapshots": len(result.as_of_dates),
        "renewals": result.counted.height,
        "churned": result.churned,
        "downsold": int(result.tiers["downsold"].sum()),
        "retention": result.retention.to_dicts(),
        "lift_red_over_green": result.lift_red_over_green,
        "red_precision": result.red_precision,
        "red_recall": result.red_recall,
        "tiers": result.tiers.to_dicts(),
        "calibration": result.calibration.to_dicts(),
        "written": [str(paths.customer_dir / name) for name in sorted(written)],
    }


# --- data and tools -------------------------------------------------------------------------


def _generate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--accounts", type=int, required=True, help="number of accounts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weeks", type=int, default=13)
    parser.add_argument("--as-of", type=_iso_date, default="2026-09-30")
    parser.add_argument("--format", default="csv", choices=["csv", "mixed", "json", "jsonl"])


def _render_generate(report: Report) -> str:
    lines = [f"Generated {report['accounts']} accounts into {report['out']} (as_of {report['as_of']})"]
    lines += [f"  {name:<9} {count}" for name, count in report["counts"].items()]
    return reports.text(lines)


@command(
    "generate",
    "Generate a deterministic synthetic data set that follows docs/inputs.md.",
    _render_generate,
    _generate_args,
)
def generate_command(args: argparse.Namespace) -> Report:
    from c360_dagster.bench.generator import generate_dataset

    summary = generate_dataset(
        Path(args.out),
        args.accounts,
        seed=args.seed,
        weeks=args.weeks,
        as_of=dt.date.fromisoformat(args.as_of),
        fmt=args.format,
    )
    return {
        "ok": True,
        "out": args.out,
        "accounts": args.accounts,
        "as_of": args.as_of,
        "counts": dict(sorted(summary.counts.items())),
    }


def _require_extra(module: str, extra: str, command_name: str) -> None:
    """A command whose tools come with an optional extra says how to install it, not a traceback."""
    if importlib.util.find_spec(module) is None:
        raise C360Error(
            f'c360:{command_name} needs the `{extra}` extra: pip install -c constraints.txt -e ".[{extra}]"',
            code="EXTRA_MISSING",
        )


# Seconds `dagster dev` gets to stop by itself on Ctrl-C before it is killed.
UI_STOP_GRACE_S = 3.0
# A `-W` filter: the start of the one warning `dagster dev` prints on every start.
DAGSTER_DEV_SUPERSEDED = "ignore:Function `dev_command` is superseded"


def _ui_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1 (default 3000)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@command("ui", "Start the Dagster UI (dagster dev) on the project's instance.", lambda r: "", _ui_args)
def ui_command(args: argparse.Namespace) -> Report:
    from c360_dagster.instance import ensure_dagster_home

    _require_extra("dagster_webserver", "ui", "ui")
    ensure_dagster_home()
    # `dagster dev` and the webserver, daemon and code server it starts ignore SIGINT and
    # SIGTERM for over 30 s, so they run in a session of their own that c360 stops as a whole:
    # on Ctrl-C (or SIGTERM) it asks them to stop, then kills what is left after a short grace.
    # `dagster dev` warns that it is superseded by `dg dev`, which needs a `dg` project layout and
    # another package; c360 starts it for the user, who has nothing to change, so not that warning.
    server = subprocess.Popen(
        [sys.executable, "-W", DAGSTER_DEV_SUPERSEDED, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(args.port)],
        env=os.environ.copy(),
        start_new_session=True,
    )
    # Handlers set here, not inherited: a shell that started c360 in the background ignores SIGINT.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return {"ok": server.wait() == 0}
    except KeyboardInterrupt:
        _stop_session(server)
        return {"ok": True}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_session(leader: subprocess.Popen) -> None:
    """SIGTERM every process of `leader`'s session, then SIGKILL whatever is left after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + UI_STOP_GRACE_S
    while time.monotonic() < deadline:
        leader.poll()  # reaps the leader once it exits, so the group empties
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


# --- c360:bench -----------------------------------------------------------------------------


def _bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, required=True, help="number of accounts to generate")
    parser.add_argument("--weeks", type=int, default=13, help="weekly usage windows per account (default 13)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--qbr-sample",
        type=int,
        default=1000,
        help="the first N accounts by id get playbooks and QBR packs, as a batched range backfill (default 1000)",
    )
    parser.add_argument(
        "--red-sample",
        type=int,
        default=400,
        help="the first N red accounts by id get them again, as a backfill of accounts that are not adjacent "
        "(batched runs; default 400)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=CPUS,
        help="QBR batch runs (or, with --shards, shard runs) at a time, each in its own process (default: the CPU count)",
    )
    parser.add_argument(
        "--shards",
        type=_shard_counts,
        help="instead of the stages, run the chain once per shard count (e.g. 1,2,4), each in a fresh process, "
        "the shard runs' steps on Dagster's multiprocess executor: wall time, split time, peak RSS per process, "
        "roll-up hashes (bench_<accounts>_shards.json)",
    )


def _shard_counts(text: str) -> list[int]:
    parts = text.split(",")
    if not all(part.strip().isdigit() and 1 <= int(part) <= 256 for part in parts):
        raise argparse.ArgumentTypeError(f"expected shard counts 1..256 separated by commas (e.g. 1,2,4), got {text!r}")
    return [int(part) for part in parts]


def _render_bench(report: Report) -> str:
    from c360_dagster.bench.benchmark import render_bench, render_shard_bench

    return render_shard_bench(report) if "configurations" in report else render_bench(report)


@command(
    "bench", "Benchmark the chain and QBR packs on generated data against a DuckDB floor.", _render_bench, _bench_args
)
def bench_command(args: argparse.Namespace) -> Report:
    _require_extra("psutil", "bench", "bench")
    from c360_dagster.bench.benchmark import BenchSettings, run_bench, run_shard_bench

    settings = BenchSettings(
        accounts=args.accounts,
        weeks=args.weeks,
        seed=args.seed,
        qbr_sample=args.qbr_sample,
        red_sample=args.red_sample,
        workers=args.workers,
        artifacts_dir=Path(args.artifacts),
        configs_dir=args.configs,
    )
    quiet = args.quiet or args.json
    log = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.shards:
        return run_shard_bench(settings, args.shards, log=log)
    return run_bench(settings, log=log)
