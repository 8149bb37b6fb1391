"""Signal lifecycle: a stable id per ongoing condition, new/ongoing/resolved against the previous
snapshot, and snoozes that keep a signal visible but stop it from driving plays and risk counts.

The id is `sha256(account|code|anchor)` truncated to 16 hex digits. The anchor names the
thing the signal is about, so the same ongoing condition keeps its id from week to week:
the overdue invoice, the renewing subscription and its date, the expansion opportunity, the
latest stakeholder change. Conditions without such a thing (usage slide, support spike, low
feature adoption) are anchored on `since`, the first snapshot of the unbroken run in which
they fired. Documented in docs/trust.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core.config import load_yaml_config
from c360_dagster.domain.core.errors import ConfigError, ContractError
from c360_dagster.domain.core.scratch import scratch
from c360_dagster.domain.governance.lake import Lake
from c360_dagster.domain.ingest.shards import in_shard
from c360_dagster.domain.scoring.overrides import check_accounts, config_date
from c360_dagster.domain.scoring.signals import SIGNAL_CATALOG
from c360_dagster.domain.scoring.signals import SIGNALS_COLUMNS as SIGNAL_SCHEMA

STATUSES = ("new", "ongoing")
RESOLVED = "resolved"
ID_HEX_DIGITS = 16


def _evidence(path: str) -> pl.Expr:
    return pl.col("evidence").str.json_path_match(path)


# Per code: the evidence that names what the signal is about (absent: anchored on `since`).
ANCHORS: dict[str, pl.Expr] = {
    "SIG_EXPANSION_TRAIL": _evidence("$.opp_id"),
    "SIG_PAYMENT_OVERDUE": _evidence("$.invoice_id"),
    "SIG_RENEWAL_SOON": pl.format("{}@{}", _evidence("$.subscription_id"), _evidence("$.renewal_date")),
    "SIG_STAKEHOLDER_CHANGE": pl.format(
        "{} {} {}",
        _evidence("$.changes[-1].on"),
        _evidence("$.changes[-1].change"),
        _evidence("$.changes[-1].contact_id"),
    ),
}

_TEXT = {"type": "string", "minLength": 1}
SNOOZES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["snoozes"],
    "properties": {
        "snoozes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["account", "code", "until", "reason"],
                "properties": {
                    "account": _TEXT,
                    "code": {"enum": sorted(SIGNAL_CATALOG)},
                    "until": {"description": "a date, YYYY-MM-DD (checked in code: YAML may parse it)"},
                    "reason": _TEXT,
                },
            },
        }
    },
}


@dataclass(frozen=True)
class Snooze:
    """One entry of snoozes.yaml; `key` is where it sits in the file (`snoozes.0`)."""

    key: str
    account: str
    code: str
    until: dt.date
    reason: str


@dataclass(frozen=True)
class Lifecycle:
    """Fired signals with their lifecycle columns, the resolved ones, and snooze warnings."""

    frame: pl.DataFrame  # the signals frame + signal_id, status, since, snoozed_until, snooze_reason
    resolved: pl.DataFrame  # account_id, code, kind, signal_id, since, last_seen, evidence
    previous_as_of: dt.date | None
    warnings: tuple[str, ...]


def load_snoozes(path: Path | str) -> tuple[Snooze, ...]:
    """Read and validate snoozes.yaml: account, code, until and reason are all required."""
    source = str(path)
    snoozes, seen = [], set()
    for index, entry in enumerate(load_yaml_config(path, SNOOZES_SCHEMA)["snoozes"]):
        key = f"snoozes.{index}"
        if (entry["account"], entry["code"]) in seen:
            raise ConfigError(f"{source}: {key}.code: {entry['code']} of {entry['account']!r} is snoozed twice")
        seen.add((entry["account"], entry["code"]))
        until = config_date(entry["until"], f"{key}.until", source)
        snoozes.append(Snooze(key, entry["account"], entry["code"], until, entry["reason"]))
    return tuple(snoozes)


def _sha16(keys: pl.Series) -> pl.Series:
    """sha256 of each key, first 16 hex digits, computed by DuckDB in one vectorized pass."""
    with scratch() as con:
        con.register("keys", pl.DataFrame({"key": keys}).with_row_index("row").to_arrow())
        hashed = con.sql(f"SELECT left(sha256(key), {ID_HEX_DIGITS}) AS id FROM keys ORDER BY row").pl()
    return hashed["id"]


def _anchor() -> pl.Expr:
    """The code's anchor from the evidence; "" for codes anchored on `since`."""
    expr = pl.lit("")
    for code, anchor in ANCHORS.items():
        expr = pl.when(pl.col("code") == code).then(anchor.fill_null("")).otherwise(expr)
    return expr.alias("anchor")


def previous_signals(lake: Lake, as_of: dt.date) -> tuple[dt.date | None, pl.DataFrame | None]:
    """The lake's latest customer_signals snapshot strictly before `as_of` (None, None when there is none)."""
    earlier = [d for d in lake.snapshots("customer_signals") if d < as_of]
    if not earlier:
        return None, None
    previous = lake.read_snapshot("customer_signals", earlier[-1])
    if "since" not in previous.columns:
        raise ContractError(
            f"lake table customer_signals in {lake.where} predates signal lifecycles (no since column); "
            "migrate the table or start a new lake file"
        )
    return earlier[-1], previous


def track_signals(
    signals: pl.DataFrame, previous: pl.DataFrame | None, as_of: dt.date, previous_as_of: dt.date | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(signals + signal_id, status, since; the previous snapshot's signals that no longer fire)."""
    if previous is None:
        previous = pl.DataFrame(schema={**SIGNAL_SCHEMA, "signal_id": pl.Utf8, "since": pl.Date})
    keys = ["account_id", "code", "anchor"]
    before = previous.with_columns(_anchor())
    current = signals.with_columns(_anchor()).join(
        before.select(*keys, prev_since="since"), on=keys, how="left", maintain_order="left"
    )
    current = current.with_columns(
        status=pl.when(pl.col("prev_since").is_not_null()).then(pl.lit("ongoing")).otherwise(pl.lit("new")),
        since=pl.coalesce("prev_since", pl.lit(as_of)),
    )
    anchor_or_since = pl.when(pl.col("anchor") == "").then(pl.col("since").dt.to_string("%Y-%m-%d")).otherwise("anchor")
    id_keys = current.select(pl.format("{}|{}|{}", "account_id", "code", anchor_or_since))[:, 0]
    frame = current.with_columns(signal_id=_sha16(id_keys)).select(*signals.columns, "signal_id", "status", "since")
    resolved = (
        before.join(current.select(keys), on=keys, how="anti")
        .select(
            "account_id",
            "code",
            "kind",
            "signal_id",
            "since",
            pl.lit(previous_as_of, pl.Date).alias("last_seen"),
            "evidence",
        )
        .sort("account_id", "code", "signal_id")
    )
    return frame, resolved


def apply_snoozes(
    signals: pl.DataFrame,
    snoozes: Sequence[Snooze],
    as_of: dt.date,
    account_ids: pl.Series,
    source: str = "snoozes.yaml",
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """`snoozed_until`/`snooze_reason` on signals snoozed on `as_of` (until ≥ as_of); warnings for ended snoozes."""
    check_accounts(snoozes, account_ids, source)
    active = [s for s in snoozes if s.until >= as_of]
    table = pl.DataFrame(
        {
            "account_id": [s.account for s in active],
            "code": [s.code for s in active],
            "snoozed_until": [s.until for s in active],
            "snooze_reason": [s.reason for s in active],
        },
        schema={"account_id": pl.Utf8, "code": pl.Utf8, "snoozed_until": pl.Date, "snooze_reason": pl.Utf8},
    )
    joined = signals.join(table, on=["account_id", "code"], how="left", maintain_order="left")
    return joined, snooze_warnings(snoozes, as_of)


def snooze_warnings(snoozes: Sequence[Snooze], as_of: dt.date) -> tuple[str, ...]:
    """The snoozes that ended before `as_of`, in the file's order."""
    return tuple(
        f"snooze of {s.code} for {s.account} ({s.key}) ended on {s.until.isoformat()}, before as_of "
        f"{as_of.isoformat()}: the signal drives plays again"
        for s in snoozes
        if s.until < as_of
    )


def signal_lifecycle(
    signals: pl.DataFrame,
    lake: Lake,
    as_of: dt.date,
    snoozes: Sequence[Snooze],
    account_ids: pl.Series,
    snoozes_source: str = "snoozes.yaml",
    shard: int = 0,
    shards: int = 1,
) -> Lifecycle:
    """Track `signals` against the lake's previous snapshot and apply the snoozes.

    With several shards, `signals` are shard `shard`'s and so are the previous signals it is
    compared with (a signal of another shard's account is not resolved here).
    """
    previous_as_of, previous = previous_signals(lake, as_of)
    if previous is not None:
        previous = in_shard(previous, shard, shards)
    tracked, resolved = track_signals(signals, previous, as_of, previous_as_of)
    frame, warnings = apply_snoozes(tracked, snoozes, as_of, account_ids, snoozes_source)
    return Lifecycle(frame, resolved, previous_as_of, warnings)


def driving_signals(signals: pl.DataFrame) -> pl.DataFrame:
    """The signals that drive playbooks and the renewal risk count: all but the snoozed ones."""
    if "snoozed_until" not in signals.columns:
        return signals
    return signals.filter(pl.col("snoozed_until").is_null())


def lifecycle_summary(lifecycle: Lifecycle) -> dict[str, Any]:
    """Counts of new, ongoing, resolved and snoozed signals, for asset metadata and signals.json."""
    frame = lifecycle.frame
    return {
        "previous_as_of": lifecycle.previous_as_of.isoformat() if lifecycle.previous_as_of else None,
        **{status: frame.filter(pl.col("status") == status).height for status in STATUSES},
        RESOLVED: lifecycle.resolved.height,
        "snoozed": frame.filter(pl.col("snoozed_until").is_not_null()).height,
    }


def resolved_records(resolved: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Account → its resolved signals, for signals.json's `resolved` section (formatting, so per row)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in resolved.with_columns(pl.col("since", "last_seen").dt.to_string("%Y-%m-%d")).iter_rows(named=True):
        grouped.setdefault(row.pop("account_id"), []).append(
            {**row, "status": RESOLVED, "evidence": json.loads(row["evidence"])}
        )
    return grouped
