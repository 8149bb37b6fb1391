"""The `shard` partitions of the chain's assets: "0".."N-1", N from `configs/customer/scale.yaml`.

The assets are declared with one shard; `definitions.definitions_for(n)` gives them N.
"""

from __future__ import annotations

import dagster as dg

from c360_dagster.domain.ingest.shards import shard_keys


def shard_partitions(shards: int) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(shard_keys(shards))


ONE_SHARD = shard_partitions(1)


def run_shard(context: dg.AssetExecutionContext) -> tuple[int, int]:
    """(k, N): the shard this materialization is for and how many shards the definitions have."""
    partitions = context.assets_def.partitions_def
    assert partitions is not None
    return int(context.partition_key), len(partitions.get_partition_keys())


def with_shards(asset: dg.AssetsDefinition, shards: int) -> dg.AssetsDefinition:
    """`asset` partitioned into `shards` shards instead of one."""
    partitions = shard_partitions(shards)
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=partitions))
