"""The `account` dynamic partitions that per-account assets (playbook, QBR pack) use.

Not every account is one: `renewal_forecasts` registers the accounts a team acts on, and the
CLI registers any account a user asks for (docs/operations.md "Account partitions").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import dagster as dg

ACCOUNT_PARTITIONS_NAME = "account"
ACCOUNT_PARTITIONS = dg.DynamicPartitionsDefinition(name=ACCOUNT_PARTITIONS_NAME)
# A backfill over a range of accounts runs them in batches of this many: Dagster's own cost
# per run (about 0.3 s: creating the run, storing its events) is then paid once per batch.
ACCOUNTS_PER_RUN = 200
ACCOUNT_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=ACCOUNTS_PER_RUN)

# Backfill policies (beta) and partitioned asset checks (preview) are what per-account batches
# and per-account gates need in Dagster 1.13.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy")
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec")

_BATCH = 10_000


def register_accounts(instance: dg.DagsterInstance, account_ids: Iterable[str]) -> int:
    """Add the account ids the instance does not know yet; return how many were added."""
    known = set(instance.get_dynamic_partitions(ACCOUNT_PARTITIONS_NAME))
    new = sorted(set(account_ids) - known)
    for start in range(0, len(new), _BATCH):
        instance.add_dynamic_partitions(ACCOUNT_PARTITIONS_NAME, new[start : start + _BATCH])
    return len(new)
