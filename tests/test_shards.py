"""Shards: the rule that places an account, the split of the inputs, and roll-ups byte-identical for any N."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from c360_dagster.domain.core.config import load_scale_config
from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.ingest import loader, shards
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.scoring import health

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "customer"

# The first 8 bytes of sha256(id) in hex, as `printf %s ACME-001 | sha256sum` prints them.
HASH_PREFIXES = {
    "ACME-001": "fc1290cf0fab8819",
    "GLOBEX-002": "9b944ed7f76b9c70",
    "STARK-008": "f3992f2d5ae99ad6",
}


@pytest.mark.parametrize("count", [1, 2, 3, 8, 256])
def test_the_shard_of_an_account_is_its_ids_sha256_prefix_mod_n(count):
    for account_id, prefix in HASH_PREFIXES.items():
        assert shards.shard_of(account_id, count) == int(prefix, 16) % count
    # Worked by hand: 0x...8819 is odd, and its last 3 bits (1001) are 1 mod 8.
    assert shards.shard_of("ACME-001", 2) == 1 and shards.shard_of("ACME-001", 8) == 1
    assert shards.shard_of("STARK-008", 8) == 6  # ...d6 = 1101 0110: the last 3 bits are 110


def test_the_vectorised_rule_is_the_rule_and_adding_accounts_moves_none():
    ids = [f"ACC-{n:05d}" for n in range(500)] + list(HASH_PREFIXES) + ["Ünïcode-ÄÖ"]
    for count in (3, 8):
        table = shards.shard_table(pl.Series(ids), count)
        placed = dict(table.iter_rows())
        assert placed == {account_id: shards.shard_of(account_id, count) for account_id in ids}
        more = shards.shard_table(pl.Series(ids + [f"NEW-{n}" for n in range(300)]), count)
        assert {a: k for a, k in more.iter_rows() if a in placed} == placed
        assert table["shard"].dtype == pl.Int64


def test_the_split_puts_every_row_in_its_accounts_shard_exactly_once():
    view = loader.read_customer_360(FIXTURES)
    for count in (1, 3, 8):
        parts = shards.split_tables(view.tables, count)
        assert len(parts) == count
        for name, whole in view.tables.items():
            for shard, tables in enumerate(parts):
                part = tables[name]
                assert part.schema == whole.schema
                assert all(shards.shard_of(a, count) == shard for a in part["account_id"]), (name, shard)
            together = pl.concat([tables[name] for tables in parts])
            assert together.height == whole.height
            # Every row once: the parts, put back in key order, are the table itself.
            assert together.sort(list(ENTITIES[name].key)).equals(whole)
    # With 3 shards the fixtures' accounts spread over all of them (the test means something).
    assert all(tables["accounts"].height for tables in shards.split_tables(view.tables, 3))


def test_scale_yaml_defaults_to_one_shard_and_refuses_a_bad_count(tmp_path):
    assert load_scale_config(tmp_path)["shards"] == 1
    assert load_scale_config(REPO / "configs" / "customer")["shards"] == 1
    (tmp_path / "scale.yaml").write_text("shards: 0\n")
    with pytest.raises(ConfigError, match=r"scale.yaml: shards: 0 is less than the minimum of 1"):
        load_scale_config(tmp_path)
    (tmp_path / "scale.yaml").write_text("shards: 257\n")
    with pytest.raises(ConfigError, match=r"scale.yaml: shards"):
        load_scale_config(tmp_path)


def test_a_clamped_zero_is_always_positive_zero():
    # Polars' clip can keep a -0.0 depending on how a column is chunked (how many accounts are
    # scored together); health.json would print it as -0.0 for one book and 0.0 for another.
    ramped = pl.DataFrame({"x": [-0.0, -0.5, 0.0, 0.5]}).select(
        score=health._ramp(pl.col("x"), pl.lit(0.0), pl.lit(1.0))
    )["score"]
    assert ramped.to_list() == [0.0, 0.0, 0.0, 50.0]
    assert [math.copysign(1.0, value) for value in ramped] == [1.0, 1.0, 1.0, 1.0]
