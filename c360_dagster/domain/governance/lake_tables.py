"""Shape the stage frames into the lake tables' rows (columns of contracts/schemas)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from c360_dagster.domain.core.json_text import canonical_texts
from c360_dagster.domain.renewals.forecast import published
from c360_dagster.domain.scoring.health import ACCOUNT_COLUMNS, COMPONENT_PARTS, COMPONENTS
from c360_dagster.domain.scoring.overrides import OVERRIDE_COLUMNS

# What a stage frame's columns mean where its lake table packs them into one JSON column
# (`components`, `renewal_prob`) or leaves them out; every other column's words are the
# contract's. `{component}` is one of health.COMPONENTS.
COMPONENT_PART_WORDS = {
    "score": "The {component} component's score out of 100; null when it had no data (not measured).",
    "weight": "The {component} component's effective weight: its configured weight shared out over the "
    "measured components (they add up to 100); 0 when not measured, null when the account has no score.",
    "points": "The {component} component's points: score x weight / 100, summed into the score; "
    "0 when not measured, null when the account has no score.",
    "reason": "Why the {component} component has no score; null when measured.",
    "evidence": "The measured numbers behind the {component} component's score, with its configured weight.",
}
FRAME_ONLY_WORDS = {
    "snooze_reason": "Why the signal is snoozed (snoozes.yaml); null when not snoozed.",
    "bucket": "Renewal likelihood: High, Medium or Low (the lake's renewal_prob.bucket).",
    "probability": "The bucket's probability of renewing, 0 to 1 (the lake's renewal_prob.probability).",
}


def frame_column_words(columns: Iterable[str], *contracts: Mapping[str, Any]) -> dict[str, str]:
    """What each of a stage frame's columns means: the first contract's description of a column
    of that name, else the frame's own words (the health components' parts, `FRAME_ONLY_WORDS`)."""
    words = {
        f"{component}_{part}": text.format(component=component)
        for component in COMPONENTS
        for part, text in COMPONENT_PART_WORDS.items()
    } | FRAME_ONLY_WORDS
    for contract in reversed(contracts):
        words |= {name: spec["description"] for name, spec in contract["properties"].items() if "description" in spec}
    return {name: words[name] for name in columns if name in words}


def health_rows(health: pl.DataFrame) -> pl.DataFrame:
    """account_health: the (overridden) score and tier, the computed ones, plus each component as canonical JSON."""
    components = pl.struct(
        [
            pl.struct([pl.col(f"{c}_{field}").alias(field) for field in sorted(COMPONENT_PARTS)]).alias(c)
            for c in sorted(COMPONENTS)
        ]
    ).struct.json_encode()
    return health.select(
        *ACCOUNT_COLUMNS,
        *OVERRIDE_COLUMNS,
        components.alias("components"),
    )


def signal_rows(signals: pl.DataFrame) -> pl.DataFrame:
    return signals.select("account_id", "code", "kind", "evidence", "signal_id", "status", "since", "snoozed_until")


def renewal_rows(renewals: pl.DataFrame) -> pl.DataFrame:
    """renewal_forecasts: the published rows, `renewal_prob` as canonical JSON text like `risk_reasons`."""
    rows = published(renewals)
    return rows.with_columns(canonical_texts(rows["renewal_prob"]))


def opp_rows(crm_opps: pl.DataFrame) -> pl.DataFrame:
    return crm_opps
