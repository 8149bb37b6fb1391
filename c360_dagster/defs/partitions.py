"""The `account` dynamic partitions that per-account assets (playbook, QBR pack) use."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

ACCOUNT_PARTITIONS = dg.DynamicPartitionsDefinition(name="account")

_BATCH = 10_000


def register_accounts(instance: dg.DagsterInstance, account_ids: Iterable[str]) -> int:
    """Add the account ids the instance does not know yet; return how many were added."""
    known = set(instance.get_dynamic_partitions(ACCOUNT_PARTITIONS.name))
    new = sorted(set(account_ids) - known)
    for start in range(0, len(new), _BATCH):
        instance.add_dynamic_partitions(ACCOUNT_PARTITIONS.name, new[start : start + _BATCH])
    return len(new)
