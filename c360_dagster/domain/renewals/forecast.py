"""Renewal forecast: a deterministic tier × risk-band matrix over the subscriptions renewing soon.

Everything is columnar: one Polars plan over all subscriptions; the reason phrases are built
per signal code (a handful of columnar passes), never per row.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from c360_dagster.domain.core import json_text
from c360_dagster.domain.core.config import config_hash, load_yaml_config
from c360_dagster.domain.core.errors import C360Error, ConfigError
from c360_dagster.domain.core.io import canonical_json
from c360_dagster.domain.core.text import format_amount, render_template
from c360_dagster.domain.core.words import DATE_WORDS_FORMAT, segment_label, signal_name
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.renewals.playbooks import (
    TIERS,
    PlaybookLibrary,
    load_playbook_library,
    measured_columns,
    suggested_playbook_ids,
)
from c360_dagster.domain.scoring.lifecycle import driving_signals
from c360_dagster.domain.scoring.overrides import (
    OVERRIDE_COLUMNS,
    override_phrase,
    override_record,
)

BUCKETS = ("High", "Medium", "Low")
SUMMARY_TEMPLATE = "renewals_summary.md.j2"
UNASSIGNED = "(unassigned)"
OVERRIDE_CODE = "TIER_OVERRIDE"  # the first risk reason of an account whose health was overridden
OVERRIDE_LABEL = "Tier overridden"
FRAME_COLUMNS = (
    "subscription_id",
    "account_id",
    "account_name",
    "segment",
    "csm_owner",
    "product",
    "plan",
    "renewal_date",
    "days_to_renewal",
    "arr",
    "currency",
    "auto_renew",
    "tier",
    "tier_reason",
    "risk_signal_count",
    "bucket",
    "probability",
    "expected_arr",
    "risk_reasons",
    "suggested_playbook",
)
# A row as the JSON and the lake publish it (the spec's field names): `bucket` and
# `probability` travel together as `renewal_prob`; `tier_reason` is health's (account_health),
# carried only for the summary's top risks.
PUBLISHED_COLUMNS = tuple(
    "renewal_prob" if name == "bucket" else name for name in FRAME_COLUMNS if name not in ("probability", "tier_reason")
)
# `risk_reasons` holds canonical JSON of this shape (see `_risk_reasons`).
_REASONS_DTYPE = pl.List(pl.Struct({"code": pl.Utf8, "text": pl.Utf8}))

_CODE = {"type": "string", "pattern": "^SIG_[A-Z0-9_]+$"}
_EVIDENCE_KEY = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "playbook_library",
        "buckets",
        "at_risk_buckets",
        "unscored_bucket",
        "risk_signals",
        "risk_bands",
        "matrix",
        "top_risks",
        "reasons",
    ],
    "properties": {
        "playbook_library": {"type": "string", "minLength": 1},
        "buckets": {
            "type": "object",
            "additionalProperties": False,
            "required": list(BUCKETS),
            "properties": {b: {"type": "number", "minimum": 0, "maximum": 1} for b in BUCKETS},
        },
        "at_risk_buckets": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(BUCKETS)}},
        "unscored_bucket": {"enum": list(BUCKETS)},
        "risk_signals": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ignored_codes", "weights"],
            "properties": {
                "ignored_codes": {"type": "array", "uniqueItems": True, "items": _CODE},
                "weights": {
                    "type": "object",
                    "propertyNames": _CODE,
                    "additionalProperties": {"type": "integer", "minimum": 1},
                },
            },
        },
        "risk_bands": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["band", "min_points"],
                "properties": {
                    "band": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "min_points": {"type": "integer", "minimum": 0},
                },
            },
        },
        "matrix": {
            "type": "object",
            "additionalProperties": False,
            "required": list(TIERS),
            "properties": {tier: {"type": "object", "additionalProperties": {"enum": list(BUCKETS)}} for tier in TIERS},
        },
        "top_risks": {"type": "integer", "minimum": 1},
        "reasons": {
            "type": "object",
            "propertyNames": _CODE,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["template"],
                "properties": {
                    "template": {"type": "string", "minLength": 1},
                    "amounts": {
                        "type": "object",
                        "propertyNames": _EVIDENCE_KEY,
                        "additionalProperties": _EVIDENCE_KEY,
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class ReasonTemplate:
    """How a risk code becomes a phrase: `template` over evidence keys, else the signal's name + numbers."""

    pattern: str  # the template with each placeholder as `{}`, for pl.format
    fields: tuple[str, ...]  # the placeholders in order, repeats included
    amounts: Mapping[str, str]  # evidence key of an amount → evidence key of its currency


@dataclass(frozen=True)
class RenewalsConfig:
    buckets: Mapping[str, float]
    at_risk_buckets: tuple[str, ...]
    unscored_bucket: str
    ignored_codes: tuple[str, ...]
    weights: Mapping[str, int]
    bands: tuple[tuple[str, int], ...]  # (band, min_points), ascending
    matrix: Mapping[str, Mapping[str, str]]
    top_risks: int
    reasons: Mapping[str, ReasonTemplate]
    library: PlaybookLibrary
    config_hash: str

    def reason_label(self, code: str) -> str:
        """The short name of a risk reason, for table cells (its phrase goes in prose): the
        signal's name, as every report names it."""
        return OVERRIDE_LABEL if code == OVERRIDE_CODE else signal_name(code)


def _reason_template(template: str, amounts: Mapping[str, str], key: str, source: str) -> ReasonTemplate:
    """Parse a reason template; only plain `{evidence_key}` placeholders are allowed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{source}: {key}: not a valid template: {exc}") from None
    pattern, fields = "", []
    for literal, name, spec, conversion in parsed:
        if "{" in literal or "}" in literal:
            raise ConfigError(f"{source}: {key}: literal braces are not supported")
        pattern += literal
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ConfigError(f"{source}: {key}: placeholder {{{name}}} must be a plain evidence key")
        pattern += "{}"
        fields.append(name)
    return ReasonTemplate(pattern, tuple(fields), dict(amounts))


def load_renewals_config(path: Path | str) -> RenewalsConfig:
    """Read and validate renewals.yaml and the playbook library it names; errors name the key."""
    path = Path(path)
    raw = load_yaml_config(path, SCHEMA)
    source = str(path)

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{source}: {key}: {message}")

    buckets = raw["buckets"]
    for higher, lower in itertools.pairwise(BUCKETS):
        if not buckets[higher] > buckets[lower]:
            fail(f"buckets.{lower}", f"must be below buckets.{higher} ({buckets[higher]})")
    bands = [(item["band"], item["min_points"]) for item in raw["risk_bands"]]
    if bands[0][1] != 0:
        fail("risk_bands.0.min_points", "the first band must start at 0")
    for index in range(1, len(bands)):
        if bands[index][1] <= bands[index - 1][1]:
            fail(f"risk_bands.{index}.min_points", "must be above the previous band's min_points")
        if bands[index][0] in dict(bands[:index]):
            fail(f"risk_bands.{index}.band", f"duplicate band {bands[index][0]!r}")
    band_names = [name for name, _ in bands]
    for tier in TIERS:
        row = raw["matrix"][tier]
        for band in band_names:
            if band not in row:
                fail(f"matrix.{tier}.{band}", "missing cell (every tier × band needs a bucket)")
        for band in sorted(set(row) - set(band_names)):
            fail(f"matrix.{tier}.{band}", f"unknown band (bands: {', '.join(band_names)})")
    reasons = {
        code: _reason_template(item["template"], item.get("amounts", {}), f"reasons.{code}.template", source)
        for code, item in sorted(raw["reasons"].items())
    }
    library = load_playbook_library(path.parent / raw["playbook_library"])
    return RenewalsConfig(
        buckets=dict(buckets),
        at_risk_buckets=tuple(raw["at_risk_buckets"]),
        unscored_bucket=raw["unscored_bucket"],
        ignored_codes=tuple(raw["risk_signals"]["ignored_codes"]),
        weights=dict(raw["risk_signals"]["weights"]),
        bands=tuple(bands),
        matrix={tier: dict(raw["matrix"][tier]) for tier in TIERS},
        top_risks=raw["top_risks"],
        reasons=reasons,
        library=library,
        # One hash for the forecast's whole configuration, the playbook rules included.
        config_hash=config_hash({"renewals": raw, "playbook_library": library.config_hash}),
    )


def _counted_risk_signals(signals: pl.DataFrame, config: RenewalsConfig) -> pl.DataFrame:
    """Risk signals that count toward the band, with their weight."""
    return signals.filter((pl.col("kind") == "risk") & ~pl.col("code").is_in(list(config.ignored_codes))).with_columns(
        weight=pl.col("code").replace_strict(dict(config.weights), default=1, return_dtype=pl.Int64)
    )


def _evidence_texts(evidence: pl.DataFrame) -> dict[str, pl.Expr]:
    """Display text per evidence key, as the decks write it: floats to at most one decimal
    (`31.2`, `15`), ISO dates in words (`31 Aug 2026`), lists as `<key>_count`."""
    texts = {}
    for column in sorted(evidence.columns):
        name, dtype = column.removeprefix("evidence."), evidence.schema[column]
        if dtype.is_float():
            rounded = pl.col(column).round(1).cast(pl.Utf8)
            texts[name] = rounded.str.replace(r"\.0$", "").str.replace(r"^-0$", "0")
        elif dtype == pl.List:
            texts[f"{name}_count"] = pl.col(column).list.len().cast(pl.Utf8)
        elif dtype == pl.Utf8:
            day = pl.col(column).str.to_date("%Y-%m-%d", strict=False)
            texts[name] = pl.coalesce(day.dt.to_string(DATE_WORDS_FORMAT), pl.col(column))
        elif not dtype.is_nested() and dtype != pl.Null:
            texts[name] = pl.col(column).cast(pl.Utf8)
    return texts


def _amount_texts(evidence: pl.DataFrame, amounts: Mapping[str, str]) -> dict[str, pl.Expr]:
    """Each configured amount as `format_amount` writes it, computed once per distinct (currency, value)."""
    texts = {}
    for amount, currency in sorted(amounts.items()):
        value, unit = f"evidence.{amount}", f"evidence.{currency}"
        if value not in evidence.columns or unit not in evidence.columns or not evidence.schema[value].is_numeric():
            continue
        key = pl.format("{} {}", pl.col(unit), pl.col(value))
        pairs = evidence.select(key.alias("key"), value, unit).drop_nulls().unique()
        lookup = {text: format_amount(number, code) for text, number, code in pairs.iter_rows()}
        texts[amount] = key.replace_strict(lookup, default=None, return_dtype=pl.Utf8)
    return texts


def _reason_texts(risk: pl.DataFrame, config: RenewalsConfig) -> pl.DataFrame:
    """`account_id`, `code`, `weight`, `text`: each signal's phrase from its template and evidence."""
    parts = [pl.DataFrame(schema={"account_id": pl.Utf8, "code": pl.Utf8, "weight": pl.Int64, "text": pl.Utf8})]
    for code in sorted(risk["code"].unique().to_list()):
        subset = risk.filter(pl.col("code") == code)
        evidence = subset["evidence"].fill_null("{}").str.json_decode(infer_schema_length=None).struct.unnest()
        evidence = evidence.rename({name: f"evidence.{name}" for name in evidence.columns})
        reason = config.reasons.get(code, ReasonTemplate("", (), {}))
        texts = {**_evidence_texts(evidence), **_amount_texts(evidence, reason.amounts)}
        numbers = [pl.format("{} {}", pl.lit(name.replace("_", " ")), expr) for name, expr in texts.items()]
        text = pl.lit(signal_name(code))
        if numbers:
            text = text + pl.lit(": ") + pl.concat_str(numbers, separator=", ", ignore_nulls=True)
        if reason.fields and all(name in texts for name in reason.fields):
            # A null evidence value in one row falls back for that row only.
            text = pl.coalesce(pl.format(reason.pattern, *(texts[name] for name in reason.fields)), text)
        parts.append(
            pl.concat([subset.select("account_id", "code", "weight"), evidence], how="horizontal").select(
                "account_id", "code", "weight", text.alias("text")
            )
        )
    return pl.concat(parts)


def _risk_reasons(risk: pl.DataFrame, config: RenewalsConfig) -> pl.DataFrame:
    """`account_id`, `risk_reasons`: canonical JSON list of `{"code", "text"}`, heaviest code first."""
    return (
        _reason_texts(risk, config)
        .with_columns(reason=pl.struct("code", "text").struct.json_encode())
        .sort(["account_id", "weight", "code"], descending=[False, True, False])
        .group_by("account_id", maintain_order=True)
        .agg(pl.col("reason").str.join(","))
        .select("account_id", risk_reasons=pl.lit("[") + pl.col("reason") + pl.lit("]"))
    )


def _override_reasons(health: pl.DataFrame) -> pl.DataFrame:
    """`account_id`, `override_reason_json`: a `TIER_OVERRIDE` reason per overridden account (a handful: config-sized)."""
    schema = {"account_id": pl.Utf8, "override_reason_json": pl.Utf8}
    if "override_author" not in health.columns:
        return pl.DataFrame(schema=schema)
    overridden = health.filter(pl.col("override_author").is_not_null()).select(
        "account_id", "score", "tier", *OVERRIDE_COLUMNS
    )
    return pl.DataFrame(
        [
            (
                row["account_id"],
                canonical_json({"code": OVERRIDE_CODE, "text": override_phrase(row | override_record(row))}),
            )
            for row in overridden.iter_rows(named=True)
        ],
        schema=schema,
        orient="row",
    )


def _with_override_first(reasons: pl.Expr) -> pl.Expr:
    """The JSON list `reasons` with the account's override reason, when it has one, in front."""
    override = pl.col("override_reason_json")
    return (
        pl.when(override.is_null())
        .then(reasons)
        .when(reasons == "[]")
        .then(pl.format("[{}]", override))
        .otherwise(pl.format("[{},{}", override, reasons.str.slice(1)))
        .alias("risk_reasons")
    )


def _band_expr(config: RenewalsConfig) -> pl.Expr:
    expr = pl.lit(config.bands[0][0])
    for band, min_points in config.bands[1:]:
        expr = pl.when(pl.col("risk_points") >= min_points).then(pl.lit(band)).otherwise(expr)
    return expr


MAX_WINDOW_DAYS = 36_500  # a century of renewals
# The view's tables `forecast_renewals` reads: a run opens only these.
VIEW_TABLES = ("accounts", "subs")


def forecast_renewals(
    view: Customer360,
    health: pl.DataFrame,
    signals: pl.DataFrame,
    config: RenewalsConfig,
    window_days: int = 120,
) -> pl.DataFrame:
    """One row per active subscription renewing in [as_of, as_of + window_days], both ends included."""
    if not 0 <= window_days <= MAX_WINDOW_DAYS:  # beyond, as_of + window_days can pass year 9999
        raise C360Error(
            f"window_days must be between 0 and {MAX_WINDOW_DAYS} (days), got {window_days}; give a shorter --window-days"
        )
    as_of = view.as_of
    subs = view.subs.filter(
        (pl.col("status") == "active")
        & pl.col("renewal_date").is_between(as_of, as_of + dt.timedelta(days=window_days), closed="both")
    )
    # Only the accounts renewing in the window need their reasons phrased; snoozed signals don't count.
    signals = driving_signals(signals).filter(pl.col("account_id").is_in(subs["account_id"].implode()))
    risk = _counted_risk_signals(signals, config)
    risk_per_account = risk.group_by("account_id").agg(
        risk_signal_count=pl.len().cast(pl.Int64), risk_points=pl.col("weight").sum()
    )
    cells = pl.DataFrame(
        [(tier, band, bucket) for tier, row in config.matrix.items() for band, bucket in row.items()],
        schema={"tier": pl.Utf8, "band": pl.Utf8, "bucket": pl.Utf8},
        orient="row",
    )
    frame = (
        subs.join(
            view.accounts.select("account_id", "segment", "csm_owner", account_name="name"),
            on="account_id",
            how="left",
        )
        .join(health.select("account_id", "tier", "tier_reason"), on="account_id", how="left")
        .join(risk_per_account, on="account_id", how="left")
        .join(_risk_reasons(risk, config), on="account_id", how="left")
        .join(_override_reasons(health), on="account_id", how="left")
        .with_columns(
            pl.col("risk_signal_count").fill_null(0),
            pl.col("risk_points").fill_null(0),
            _with_override_first(pl.col("risk_reasons").fill_null("[]")),
            days_to_renewal=(pl.col("renewal_date") - pl.lit(as_of)).dt.total_days().cast(pl.Int64),
        )
        .with_columns(band=_band_expr(config))
        .join(cells, on=["tier", "band"], how="left")
        .with_columns(pl.col("bucket").fill_null(config.unscored_bucket))
        .with_columns(probability=pl.col("bucket").replace_strict(dict(config.buckets), return_dtype=pl.Float64))
        .with_columns(expected_arr=(pl.col("arr") * pl.col("probability")).round(2))
    )
    accounts = (
        frame.select("account_id", "tier")
        .unique("account_id")
        .join(config.library.renewal_due.accounts(frame), on="account_id", how="left")
        .join(health.select("account_id", *measured_columns(config.library)), on="account_id", how="left")
    )
    suggested = suggested_playbook_ids(accounts, signals, config.library)
    return (
        frame.join(suggested, on="account_id", how="left").select(FRAME_COLUMNS).sort("renewal_date", "subscription_id")
    )


def _sums(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per value of `keys`: subscriptions, ARR, expected ARR and ARR at risk, each currency apart."""
    return (
        frame.group_by(keys)
        .agg(
            subscriptions=pl.len(),
            arr=pl.col("arr").sum().round(2),
            expected_arr=pl.col("expected_arr").sum().round(2),
            arr_at_risk=pl.col("at_risk_arr").sum().round(2),
        )
        .sort(keys)
    )


def renewal_summary(frame: pl.DataFrame, config: RenewalsConfig) -> dict[str, Any]:
    """The forecast as revenue teams read it, per currency: ARR up for renewal, expected ARR, ARR
    per bucket and ARR at risk (`at_risk_buckets`), rollups by segment and owner, top risks.

    Amounts are never added across currencies: every figure is keyed by its currency.
    """
    at_risk = pl.col("bucket").is_in(list(config.at_risk_buckets))
    flagged = frame.with_columns(
        at_risk_arr=pl.when(at_risk).then(pl.col("arr")).otherwise(0.0),
        csm_owner=pl.col("csm_owner").fill_null(UNASSIGNED),
    )
    per_bucket = {(row["currency"], row["bucket"]): row for row in _sums(flagged, ["currency", "bucket"]).to_dicts()}
    accounts = flagged.group_by("currency").agg(accounts=pl.col("account_id").n_unique())
    by_currency = [
        {
            **row,
            "expected_loss": round(row["arr"] - row["expected_arr"], 2),
            "buckets": [
                {
                    "bucket": bucket,
                    **{
                        name: per_bucket.get((row["currency"], bucket), {}).get(name, empty)
                        for name, empty in (("subscriptions", 0), ("arr", 0.0), ("expected_arr", 0.0))
                    },
                }
                for bucket in BUCKETS
            ],
        }
        for row in _sums(flagged, ["currency"]).join(accounts, on="currency").sort("currency").to_dicts()
    ]
    # Largest at-risk ARR first within each currency (ties: earliest renewal); no ranking across currencies.
    top = (
        flagged.filter(at_risk)
        .sort(["currency", "arr", "renewal_date", "subscription_id"], descending=[False, True, False, False])
        .group_by("currency", maintain_order=True)
        .head(config.top_risks)
    )
    return {
        "at_risk_buckets": [b for b in BUCKETS if b in config.at_risk_buckets],
        "probabilities": {bucket: config.buckets[bucket] for bucket in BUCKETS},
        "config_hash": config.config_hash,
        "subscriptions": frame.height,
        "accounts": frame["account_id"].n_unique(),
        "by_currency": by_currency,
        "by_segment": _sums(flagged, ["segment", "currency"]).to_dicts(),
        "by_csm_owner": _sums(flagged, ["csm_owner", "currency"]).to_dicts(),
        "top_risks": [
            {
                "subscription_id": row["subscription_id"],
                "account_id": row["account_id"],
                "account_name": row["account_name"],
                "renewal_date": row["renewal_date"].isoformat(),
                "tier": row["tier"],
                # Why an amber account is not green although its score is (too little measured).
                "tier_reason": row["tier_reason"] if row["tier"] == "amber" else None,
                "bucket": row["bucket"],
                "arr": row["arr"],
                "currency": row["currency"],
                "main_reason": config.reason_label(reasons[0]["code"]) if reasons else None,
                "reasons": [reason["text"] for reason in reasons],
                "suggested_playbook": row["suggested_playbook"],
                "suggested_playbook_title": config.library.playbooks[row["suggested_playbook"]].title,
            }
            for row in top.to_dicts()
            for reasons in [json.loads(row["risk_reasons"])]
        ],
    }


def render_renewal_summary_md(summary: Mapping[str, Any], as_of: dt.date, window_days: int) -> str:
    """`summary.md`: bucket, currency, segment, owner and top-risk tables with prose around them."""
    window_end = as_of + dt.timedelta(days=window_days)
    return render_template(
        SUMMARY_TEMPLATE,
        s=summary,
        as_of=as_of,
        window_days=window_days,
        window_end=window_end,
        segment=segment_label,
    )


def published(frame: pl.DataFrame) -> pl.DataFrame:
    """The forecast rows with `renewal_prob` = {"bucket", "probability"} in place of the two columns."""
    return frame.with_columns(renewal_prob=pl.struct("bucket", "probability")).select(PUBLISHED_COLUMNS)


def renewal_records(frame: pl.DataFrame) -> Iterator[dict[str, Any]]:
    """Each forecast row as `renewals_{YYYYMM}.json` holds it: dates as ISO text, reasons decoded."""
    rows = published(frame).with_columns(pl.col("renewal_date").dt.to_string("%Y-%m-%d"))
    for row in rows.iter_rows(named=True):
        yield {**row, "risk_reasons": json.loads(row["risk_reasons"])}


def renewal_json_items(frame: pl.DataFrame, chunk_rows: int = 20_000) -> Iterator[bytes]:
    """The `renewals` array's item lines in chunks, encoded column-wise: the bytes of
    `renewal_records` as compact canonical JSON (`io.canonical_json`).

    A row whose reasons would not decode and re-encode to the very same text sends the whole
    array down the json.dumps path.
    """
    rows = published(frame)
    reasons = pl.col("risk_reasons").str.json_decode(_REASONS_DTYPE)
    as_written = pl.concat_str(pl.lit('{"r":'), pl.col("risk_reasons"), pl.lit("}"))
    row = pl.struct(
        reasons.alias(name)
        if name == "risk_reasons"
        else pl.col(name).dt.to_string("%Y-%m-%d")
        if dtype == pl.Date
        else pl.col(name)
        for name, dtype in rows.schema.items()
    )
    return json_text.items(
        rows,
        row,
        chunk_rows=chunk_rows,
        fallback=lambda _published: renewal_records(frame),
        unsafe=pl.struct(reasons.alias("r")).struct.json_encode() != as_written,
    )


def acted_on_accounts(health: pl.DataFrame, forecast: pl.DataFrame) -> list[str]:
    """The accounts a team acts on this cycle, sorted: every red one (its QBR needs a playbook)
    and every amber one with a renewal in the forecast's window (a renewal at stake).

    These get their `account` partition at once (docs/operations.md "Account partitions"); at
    the generator's mix they are about 8% of a book, so a million accounts stay under Dagster's
    advised 100k partitions per asset. Unscored accounts have no tier, so never count.
    """
    red = health.filter(pl.col("tier") == "red")["account_id"]
    amber_renewing = forecast.filter(pl.col("tier") == "amber")["account_id"]
    return sorted(set(red.to_list()) | set(amber_renewing.to_list()))
