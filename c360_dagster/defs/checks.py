"""Turn domain findings into Dagster asset-check results."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

from c360_dagster.domain.core.io import canonical_json
from c360_dagster.domain.scoring.quality import RULES, Finding

# How the UI's table shows a cell of each Python type; anything else shows as text.
COLUMN_TYPES = {bool: "bool", int: "int", float: "float"}


def check_specs(asset: str, names: Iterable[str]) -> list[dg.AssetCheckSpec]:
    """One asset check per domain quality rule, described as the rule is."""
    return [dg.AssetCheckSpec(name, asset=asset, description=RULES[name]) for name in names]


def check_result(found: Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=found.name,
        passed=found.passed,
        severity=dg.AssetCheckSeverity(found.severity),
        description=found.description or None,
        metadata={"count": found.count, "failing_rows": failing_rows(found.sample)},
    )


def failing_rows(sample: Sequence[Mapping[str, Any]]) -> dg.TableMetadataValue:
    """The first rows that broke a check, as a table the UI draws on the check's page."""
    columns = list(dict.fromkeys(key for row in sample for key in row))
    types = {
        column: COLUMN_TYPES.get(
            type(next((row[column] for row in sample if row.get(column) is not None), "")), "string"
        )
        for column in columns
    }
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({column: _cell(row.get(column), types[column]) for column in columns}) for row in sample
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn(column, types[column]) for column in columns]),
    )


def _cell(value: Any, column_type: str) -> Any:
    if value is None or column_type != "string":
        return value
    return value if isinstance(value, str) else canonical_json(value)
