"""Turn domain findings into Dagster asset-check results."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from c360_dagster.domain.quality import RULES, Finding


def check_specs(asset: str, names: Iterable[str]) -> list[dg.AssetCheckSpec]:
    """One asset check per domain quality rule, described as the rule is."""
    return [dg.AssetCheckSpec(name, asset=asset, description=RULES[name]) for name in names]


def check_result(found: Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=found.name,
        passed=found.passed,
        severity=dg.AssetCheckSeverity(found.severity),
        description=found.description or None,
        metadata={"count": found.count, "first_rows": dg.MetadataValue.json(found.sample)},
    )
