"""Manual health overrides: a person's tier and/or score for an account, with a reason and an end date.

The computed values stay in the frame (`computed_score`, `computed_tier`) beside the overridden
`score`/`tier`, so nothing the model said is lost; an override past its `expires_on` is ignored
with a warning. Documented in docs/trust.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core.config import load_yaml_config
from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.text import did_you_mean
from c360_dagster.domain.core.words import fmt_date

TIERS = ("red", "amber", "green")
# The health frame's override columns, placed right after `config_hash`.
OVERRIDE_COLUMNS = ("computed_score", "computed_tier", "override_reason", "override_author", "override_expires_on")

_TEXT = {"type": "string", "minLength": 1}
OVERRIDES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["overrides"],
    "properties": {
        "overrides": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["account", "reason", "author", "expires_on"],
                "properties": {
                    "account": _TEXT,
                    "tier": {"enum": list(TIERS)},
                    "score": {"type": "integer", "minimum": 0, "maximum": 100},
                    "reason": _TEXT,
                    "author": _TEXT,
                    "expires_on": {"description": "a date, YYYY-MM-DD (checked in code: YAML may parse it)"},
                },
            },
        }
    },
}


@dataclass(frozen=True)
class Override:
    """One entry of overrides.yaml; `key` is where it sits in the file (`overrides.2`)."""

    key: str
    account: str
    tier: str | None
    score: int | None
    reason: str
    author: str
    expires_on: dt.date


@dataclass(frozen=True)
class OverrideOutcome:
    """The health frame with overrides applied, what was applied (for the event log) and warnings."""

    frame: pl.DataFrame
    applied: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]


def config_date(value: Any, key: str, source: str) -> dt.date:
    """A YAML date (parsed or quoted ISO text), else a ConfigError naming the key."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key}: expected a date YYYY-MM-DD, got {value!r}") from None


def load_overrides(path: Path | str) -> tuple[Override, ...]:
    """Read and validate overrides.yaml; a bad entry is a ConfigError naming its key."""
    source = str(path)
    entries = load_yaml_config(path, OVERRIDES_SCHEMA)["overrides"]
    overrides: list[Override] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        key = f"overrides.{index}"
        if "tier" not in entry and "score" not in entry:
            raise ConfigError(f"{source}: {key}: needs a tier, a score or both")
        if entry["account"] in seen:
            raise ConfigError(f"{source}: {key}.account: a second override for {entry['account']!r}")
        seen.add(entry["account"])
        overrides.append(
            Override(
                key=key,
                account=entry["account"],
                tier=entry.get("tier"),
                score=entry.get("score"),
                reason=entry["reason"],
                author=entry["author"],
                expires_on=config_date(entry["expires_on"], f"{key}.expires_on", source),
            )
        )
    return tuple(overrides)


def check_accounts(overrides: Sequence[Any], account_ids: pl.Series, source: str) -> None:
    """Every entry (override or snooze, with `key` and `account`) names a known account."""
    named = pl.DataFrame({"account_id": [o.account for o in overrides]}, schema={"account_id": pl.Utf8})
    unknown = set(named.join(pl.DataFrame({"account_id": account_ids}), on="account_id", how="anti")["account_id"])
    for entry in overrides:
        if entry.account in unknown:
            suggestion = did_you_mean(entry.account, account_ids.to_list())
            raise ConfigError(
                f"{source}: {entry.key}.account: expected an account_id of the input accounts, "
                f"got {entry.account!r}{suggestion}"
            )


def _tier_of(score: pl.Expr, red_below: float, green_from: float) -> pl.Expr:
    """The tier a score falls in (the thresholds of health.yaml)."""
    return (
        pl.when(score < red_below)
        .then(pl.lit("red"))
        .when(score >= green_from)
        .then(pl.lit("green"))
        .otherwise(pl.lit("amber"))
    )


def apply_overrides(
    health: pl.DataFrame,
    overrides: Sequence[Override],
    as_of: dt.date,
    red_below: float,
    green_from: float,
    source: str = "overrides.yaml",
) -> OverrideOutcome:
    """Overridden `score`/`tier` plus the computed ones and the override's reason, author, end date.

    A score-only override takes the tier its score falls in; a tier-only one keeps the computed
    score. Unknown accounts are a ConfigError; expired overrides (expires_on < as_of) are ignored,
    and so are overrides of accounts without a score (status not `scored`: churned, not started,
    insufficient data), because a person's view cannot stand in for a customer who is not there.
    """
    check_accounts(overrides, health["account_id"], source)
    status = dict(
        health.filter(pl.col("account_id").is_in([o.account for o in overrides]))
        .select("account_id", "status")
        .iter_rows()
    )
    active = [o for o in overrides if o.expires_on >= as_of and status[o.account] == "scored"]
    table = pl.DataFrame(
        {
            "account_id": [o.account for o in active],
            "_score": [o.score for o in active],
            "_tier": [o.tier for o in active],
            "override_reason": [o.reason for o in active],
            "override_author": [o.author for o in active],
            "override_expires_on": [o.expires_on for o in active],
        },
        schema={
            "account_id": pl.Utf8,
            "_score": pl.Int64,
            "_tier": pl.Utf8,
            "override_reason": pl.Utf8,
            "override_author": pl.Utf8,
            "override_expires_on": pl.Date,
        },
    )
    columns = list(health.columns)
    at = columns.index("config_hash") + 1
    frame = (
        health.rename({"score": "computed_score", "tier": "computed_tier"})
        .join(table, on="account_id", how="left", maintain_order="left")
        .with_columns(
            score=pl.coalesce("_score", "computed_score"),
            tier=pl.coalesce(
                "_tier",
                pl.when(pl.col("_score").is_not_null()).then(_tier_of(pl.col("_score"), red_below, green_from)),
                "computed_tier",
            ),
        )
        .select(*columns[:at], *OVERRIDE_COLUMNS, *columns[at:])
    )
    return OverrideOutcome(frame, applied_overrides(frame), override_warnings(overrides, as_of, health))


def applied_overrides(frame: pl.DataFrame) -> tuple[dict[str, Any], ...]:
    """What the overrides in a health frame changed (for the event log), in the frame's order."""
    applied = (
        frame.filter(pl.col("override_author").is_not_null())
        .select(
            account=pl.col("account_id"),
            computed=pl.struct(score="computed_score", tier="computed_tier"),
            overridden=pl.struct("score", "tier"),
            reason=pl.col("override_reason"),
            author=pl.col("override_author"),
            expires_on=pl.col("override_expires_on").dt.to_string("%Y-%m-%d"),
        )
        .to_dicts()
    )
    return tuple(applied)


def override_warnings(overrides: Sequence[Override], as_of: dt.date, health: pl.DataFrame) -> tuple[str, ...]:
    """The overrides ignored on `as_of`: expired ones, then those of accounts without a score
    (`health` holds each overridden account's `status`), each in the file's order."""
    status = dict(
        health.filter(pl.col("account_id").is_in([o.account for o in overrides]))
        .select("account_id", "status")
        .iter_rows()
    )
    expired = [o for o in overrides if o.expires_on < as_of]
    unscored = [o for o in overrides if o.expires_on >= as_of and status[o.account] != "scored"]
    return tuple(
        f"override of {o.account} ({o.key}) expired on {o.expires_on.isoformat()}, before as_of "
        f"{as_of.isoformat()}: ignored"
        for o in expired
    ) + tuple(
        f"override of {o.account} ({o.key}) ignored: the account has no score to override (status {status[o.account]})"
        for o in unscored
    )


def override_phrase(record: Mapping[str, Any]) -> str:
    """`Tier overridden from amber to red by A: reason, until 31 Dec 2026` (the score when the tier
    is unchanged): prose for the console, playbooks, review pages and risk reasons, so the date is
    in words; `record` is a health.json record of an overridden account (see `override_record`),
    which keeps the ISO date as data.
    """
    if record["tier"] != record["computed_tier"]:
        what = f"Tier overridden from {record['computed_tier']} to {record['tier']}"
    else:
        what = f"Score overridden from {record['computed_score']} to {record['score']}"
    override = record["override"]
    return f"{what} by {override['author']}: {override['reason']}, until {fmt_date(override['expires_on'])}"


def override_record(row: dict[str, Any]) -> dict[str, Any]:
    """The health.json fields of one health-frame row: computed values and the override (or None)."""
    expires_on = row["override_expires_on"]
    override = None
    if row["override_author"] is not None:
        override = {
            "author": row["override_author"],
            "reason": row["override_reason"],
            "expires_on": expires_on.isoformat(),
        }
    return {"computed_score": row["computed_score"], "computed_tier": row["computed_tier"], "override": override}


def override_fields() -> list[pl.Expr]:
    """`override_record` as Polars expressions, for the columnar health.json encoder (same bytes)."""
    override = pl.struct(
        author="override_author",
        reason="override_reason",
        expires_on=pl.col("override_expires_on").dt.to_string("%Y-%m-%d"),
    )
    return [
        pl.col("computed_score"),
        pl.col("computed_tier"),
        pl.when(pl.col("override_author").is_not_null()).then(override).alias("override"),
    ]
