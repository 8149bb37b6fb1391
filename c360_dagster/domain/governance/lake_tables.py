"""Shape the stage frames into the lake tables' rows (columns of contracts/schemas)."""

from __future__ import annotations

import polars as pl

from c360_dagster.domain.core.json_text import canonical_texts
from c360_dagster.domain.renewals.forecast import published
from c360_dagster.domain.scoring.health import ACCOUNT_COLUMNS, COMPONENT_PARTS, COMPONENTS
from c360_dagster.domain.scoring.overrides import OVERRIDE_COLUMNS


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
