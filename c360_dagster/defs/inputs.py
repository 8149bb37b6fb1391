"""The input files as external assets upstream of `customer_360`, so the lineage starts where the data does.

Their data versions are their content hashes: the jobs that load them observe them first (as
does "Observe" in the UI), so each materialization of `customer_360` records the versions of
the files it was made from, and the UI marks it stale when a file changes.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from c360_dagster.defs.resources import C360Project
from c360_dagster.domain.core.io import sha256_file
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.loader import FORMATS, find_sources

INPUTS_GROUP = "inputs"
# Observable source assets are what gives external files a data version in Dagster 1.13 (beta).
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*multi_observable_source_asset")

INPUT_SPECS = [
    dg.AssetSpec(
        key=[INPUTS_GROUP, name],
        group_name=INPUTS_GROUP,
        kinds={"file"},
        owners=["team:customer-success-ops"],
        description=(
            f"The `{name}` file of the input folder ({', '.join(f'{name}.{ext}' for ext in FORMATS)}; "
            + ("required" if spec.required else "optional")
            + "), exported from the source system; its contract is docs/inputs.md."
        ),
    )
    for name, spec in ENTITIES.items()
]


@dg.multi_observable_source_asset(specs=INPUT_SPECS, can_subset=True)
def input_files(context: dg.AssetExecutionContext, project: C360Project) -> Iterator[dg.ObserveResult]:
    """Hash the input folder's files: each one's content hash is its data version."""
    found = find_sources(Path(project.fixtures_dir))
    for name, path in found.items():
        key = dg.AssetKey([INPUTS_GROUP, name])
        if key in context.selected_asset_keys:
            digest = sha256_file(path)
            yield dg.ObserveResult(
                asset_key=key, data_version=dg.DataVersion(digest), metadata={"file": path.name, "sha256": digest}
            )
