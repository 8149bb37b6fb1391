"""Lake contracts: the columnar validator agrees with `jsonschema`, and each rule bites."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pytest

from c360_dagster.domain.core.errors import ContractError
from c360_dagster.domain.governance.contracts import (
    _FRAMED,
    Violation,
    _matches,
    check_supported,
    load_contract,
    validate_frame,
)
from c360_dagster.domain.governance.lake import DeltaLake, DuckDBLake
from c360_dagster.domain.governance.lake_tables import COMPONENT_PART_WORDS, frame_column_words
from c360_dagster.domain.scoring.health import COMPONENT_PARTS

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "schemas"
AS_OF = dt.date(2026, 9, 30)
HASH = "sha256:" + "ab" * 32

# One valid row per table (the lake row, as_of included) and its Polars column types.
VALID: dict[str, dict[str, Any]] = {
    "crm_opps": {
        "as_of": AS_OF,
        "shard": 2,
        "opp_id": "OPP-1",
        "account_id": "ACME-001",
        "name": "Renewal FY27",
        "type": "renewal",
        "stage": "open",
        "amount": 1200.5,
        "currency": "USD",
        "close_date": dt.date(2026, 11, 1),
    },
    "account_health": {
        "as_of": AS_OF,
        "shard": 2,
        "account_id": "ACME-001",
        "segment": "enterprise",
        "scorecard": "default",
        "score": 87,
        "tier": "green",
        "tier_reason": None,
        "status": "scored",
        "status_reason": None,
        "lifecycle": "active",
        "config_hash": HASH,
        "computed_score": 60,
        "computed_tier": "amber",
        "override_reason": "sponsor confirmed renewal",
        "override_author": "dana",
        "override_expires_on": dt.date(2026, 12, 31),
        "components": '{"adoption":{"score":0.9}}',
    },
    "customer_signals": {
        "as_of": AS_OF,
        "shard": 2,
        "account_id": "ACME-001",
        "code": "SIG_USAGE_SLIDE_4W",
        "kind": "risk",
        "evidence": '{"drop_pct":32.5}',
        "signal_id": "0123456789abcdef",
        "status": "new",
        "since": AS_OF,
        "snoozed_until": None,
    },
    "renewal_forecasts": {
        "as_of": AS_OF,
        "shard": 2,
        "subscription_id": "SUB-1",
        "account_id": "ACME-001",
        "account_name": "Acme",
        "segment": "smb",
        "csm_owner": None,
        "product": "core",
        "plan": "growth",
        "renewal_date": dt.date(2026, 10, 30),
        "days_to_renewal": 30,
        "arr": 50000.0,
        "currency": "EUR",
        "auto_renew": False,
        "tier": "amber",
        "risk_signal_count": 2,
        "renewal_prob": '{"bucket":"Medium","probability":0.6}',
        "expected_arr": 30000.0,
        "risk_reasons": '[{"code":"SIG_X","text":"t"}]',
        "suggested_playbook": "adoption_push",
    },
}
TYPES = {
    "crm_opps": {
        "as_of": pl.Date,
        "shard": pl.Int64,
        "opp_id": pl.Utf8,
        "account_id": pl.Utf8,
        "name": pl.Utf8,
        "type": pl.Utf8,
        "stage": pl.Utf8,
        "amount": pl.Float64,
        "currency": pl.Utf8,
        "close_date": pl.Date,
    },
    "account_health": {
        "as_of": pl.Date,
        "shard": pl.Int64,
        "account_id": pl.Utf8,
        "segment": pl.Utf8,
        "scorecard": pl.Utf8,
        "score": pl.Int64,
        "tier": pl.Utf8,
        "tier_reason": pl.Utf8,
        "status": pl.Utf8,
        "status_reason": pl.Utf8,
        "lifecycle": pl.Utf8,
        "config_hash": pl.Utf8,
        "computed_score": pl.Int64,
        "computed_tier": pl.Utf8,
        "override_reason": pl.Utf8,
        "override_author": pl.Utf8,
        "override_expires_on": pl.Date,
        "components": pl.Utf8,
    },
    "customer_signals": {
        "as_of": pl.Date,
        "shard": pl.Int64,
        "account_id": pl.Utf8,
        "code": pl.Utf8,
        "kind": pl.Utf8,
        "evidence": pl.Utf8,
        "signal_id": pl.Utf8,
        "status": pl.Utf8,
        "since": pl.Date,
        "snoozed_until": pl.Date,
    },
    "renewal_forecasts": {
        "as_of": pl.Date,
        "shard": pl.Int64,
        "subscription_id": pl.Utf8,
        "account_id": pl.Utf8,
        "account_name": pl.Utf8,
        "segment": pl.Utf8,
        "csm_owner": pl.Utf8,
        "product": pl.Utf8,
        "plan": pl.Utf8,
        "renewal_date": pl.Date,
        "days_to_renewal": pl.Int64,
        "arr": pl.Float64,
        "currency": pl.Utf8,
        "auto_renew": pl.Boolean,
        "tier": pl.Utf8,
        "risk_signal_count": pl.Int64,
        "renewal_prob": pl.Utf8,
        "expected_arr": pl.Float64,
        "risk_reasons": pl.Utf8,
        "suggested_playbook": pl.Utf8,
    },
}
# Values to mix into generated rows, valid and not, by Polars type (dates also as text).
STRINGS = [
    None,
    "",
    "x",
    "USD",
    "usd",
    "SIG_OK",
    "sig_bad",
    "-lead",
    "A" * 65,
    "ACME-001",
    "risk",
    "enterprise",
    "Medium",
    "red",
    "scored",
    "active",
    "{}",
    "[]",
    "{x",
    HASH,
    "sha256:00",
    "ünï",
    "renewal",
    "won",
]
NUMBERS = {pl.Int64: [None, -1, 0, 1, 100, 101, 5000], pl.Float64: [None, -0.5, 0.0, 0.6, 1.0, 1.5, 99.0, 1e9]}
DATES = [None, dt.date(2026, 1, 31), dt.date(1, 1, 1)]
BOOLEANS = [None, True, False]
DATE_TEXTS = [None, "2026-01-31", "2026-02-30", "2026-1-31", "20260131", "0000-01-01", "2026-13-01", "x"]


def frame(table: str, rows: list[dict[str, Any]], types: dict | None = None) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=types or TYPES[table], orient="row")


def jsonschema_failing_rows(df: pl.DataFrame, schema: dict) -> set[int]:
    """The reference verdict: jsonschema on each row, dates written as ISO text as in JSON."""
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return {
        index
        for index, row in enumerate(df.to_dicts())
        if not validator.is_valid({k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()})
    }


def generated_rows(table: str, types: dict, count: int, seed: int) -> list[dict[str, Any]]:
    """Rows that start valid; each cell is swapped for a random candidate one time in four."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        row = {}
        for name, dtype in types.items():
            valid = VALID[table][name]
            if dtype == pl.Utf8 and isinstance(valid, dt.date):
                valid, pool = valid.isoformat(), DATE_TEXTS
            else:
                pool = {pl.Utf8: STRINGS, pl.Date: DATES, pl.Boolean: BOOLEANS}.get(dtype) or NUMBERS[dtype]
            row[name] = rng.choice(pool) if rng.random() < 0.25 else valid
        rows.append(row)
    return rows


@pytest.mark.parametrize("table", sorted(VALID))
@pytest.mark.parametrize("dates_as_text", [False, True])
def test_agrees_with_jsonschema_on_generated_rows(table: str, dates_as_text: bool) -> None:
    schema = load_contract(table, CONTRACTS)
    types = dict(TYPES[table])
    if dates_as_text:
        types = {k: pl.Utf8 if v == pl.Date else v for k, v in types.items()}
    # Float columns where the contract says integer: 3.0 is an integer to JSON, 3.5 is not.
    if table == "account_health":
        types["score"] = pl.Float64
    df = frame(table, generated_rows(table, types, 600, seed=len(table) + dates_as_text), types)
    ours = {v.row for v in validate_frame(df, schema, table)}
    expected = jsonschema_failing_rows(df, schema)
    assert 0 < len(expected) < df.height  # the sample holds both valid and invalid rows
    assert ours == expected


@pytest.mark.parametrize("table", sorted(VALID))
def test_agrees_with_jsonschema_on_whole_column_faults(table: str) -> None:
    schema = load_contract(table, CONTRACTS)
    df = frame(table, [VALID[table]] * 3)
    first, last = df.columns[1], df.columns[-1]
    variants = [
        df.drop(first),  # a required field missing
        df.with_columns(pl.lit(1).alias("surplus")),  # a field the contract does not know
        df.with_columns(pl.lit(7 if df.schema[last] in (pl.Utf8, pl.Date) else "7").alias(last)),  # wrong type
    ]
    for variant in variants:
        assert (
            {v.row for v in validate_frame(variant, schema, table)}
            == jsonschema_failing_rows(variant, schema)
            == {0, 1, 2}
        )


@pytest.mark.parametrize("table", sorted(VALID))
def test_valid_rows_pass(table: str) -> None:
    schema = load_contract(table, CONTRACTS)
    assert validate_frame(frame(table, [VALID[table]] * 5), schema, table) == []


# Per table: (field, bad value, expected message fragment). The out-of-range case for
# customer_signals, which has no numbers, is a code outside the catalog's pattern.
BREAKS = {
    "crm_opps": {
        "missing": "close_date",
        "wrong_type": ("amount", "12"),
        "range": ("amount", -0.01, "below the minimum 0"),
        "enum": ("stage", "pending"),
    },
    "account_health": {
        "missing": "score",
        "wrong_type": ("score", "87"),
        "range": ("score", 101, "above the maximum 100"),
        "enum": ("tier", "yellow"),
    },
    "customer_signals": {
        "missing": "evidence",
        "wrong_type": ("evidence", 3),
        "range": ("code", "sig_low", "does not match"),
        "enum": ("kind", "churn"),
    },
    "renewal_forecasts": {
        "missing": "renewal_prob",
        "wrong_type": ("days_to_renewal", 1.5),
        "range": ("expected_arr", -0.01, "below the minimum 0"),
        "enum": ("segment", "giant"),
    },
}


@pytest.mark.parametrize("table", sorted(VALID))
def test_each_kind_of_fault_fails_the_row(table: str) -> None:
    schema = load_contract(table, CONTRACTS)
    cases = BREAKS[table]
    good = frame(table, [VALID[table]] * 3)

    missing = good.drop(cases["missing"])
    assert validate_frame(missing, schema, table, limit=1) == [
        Violation(table, 0, cases["missing"], "required field is missing")
    ]

    field, value = cases["wrong_type"]
    wrong = good.with_columns(pl.lit(value).alias(field))
    assert [(v.row, v.field) for v in validate_frame(wrong, schema, table)] == [(0, field), (1, field), (2, field)]

    field, value, message = cases["range"]
    out_of_range = frame(table, [VALID[table], {**VALID[table], field: value}, VALID[table]])
    assert [(v.row, v.field) for v in validate_frame(out_of_range, schema, table)] == [(1, field)]
    assert message in validate_frame(out_of_range, schema, table)[0].message

    field, value = cases["enum"]
    unknown = frame(table, [VALID[table], VALID[table], {**VALID[table], field: value}])
    found = validate_frame(unknown, schema, table)
    assert [(v.row, v.field) for v in found] == [(2, field)] and "is not one of" in found[0].message


@pytest.mark.parametrize(
    ("renewal_prob", "valid"),
    [
        ('{"bucket":"Low","probability":0.25}', True),
        ('{"bucket":"High","probability":1.0}', True),
        ('{"bucket":"Certain","probability":0.9}', False),
        ('{"bucket":"High","probability":1.01}', False),
        ('{"probability":0.9,"bucket":"High"}', False),  # not canonical: keys out of order
        ("High", False),
    ],
)
def test_renewal_prob_is_canonical_json_of_a_bucket_and_its_probability(renewal_prob: str, valid: bool) -> None:
    schema = load_contract("renewal_forecasts", CONTRACTS)
    found = validate_frame(
        frame("renewal_forecasts", [{**VALID["renewal_forecasts"], "renewal_prob": renewal_prob}]),
        schema,
        "renewal_forecasts",
    )
    assert [v.field for v in found] == ([] if valid else ["renewal_prob"])


@pytest.mark.parametrize("pattern", [r"^\{.*\}$", r"^a.*b$", r"^ab.*ba$", r"^\\.*\.$", r"^.*$", r"^é.*\$$"])
def test_a_framed_pattern_is_checked_as_the_regex_checks_it(pattern: str) -> None:
    # `^<literal>.*<literal>$` skips the regex engine (`contracts._matches`); it must agree with it.
    texts = ["{}", "{", "}", "{\"a\":1}", "{\n}", "{\r}", "x{}", "{}x", "{}\n", "\n{}", "", "ab", "aba", "abba",
             "ab\nba", "a", "b", "a\\b.", "\\.", ".", "é$", "éx$", "é", "$", None]  # fmt: skip
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.Utf8})
    framed = frame.select(_matches(pl.col("text"), pattern))["text"].to_list()
    assert framed == frame.select(pl.col("text").str.contains(pattern))["text"].to_list()
    assert _FRAMED.fullmatch(pattern)  # the fast path was taken
    assert any(framed) and not all(value for value in framed if value is not None)


def test_nullable_field_accepts_null_and_required_field_rejects_it() -> None:
    schema = load_contract("renewal_forecasts", CONTRACTS)
    rows = [
        {**VALID["renewal_forecasts"], "csm_owner": None, "tier": None},
        {**VALID["renewal_forecasts"], "plan": None},
    ]
    found = validate_frame(frame("renewal_forecasts", rows), schema, "renewal_forecasts")
    assert found == [Violation("renewal_forecasts", 1, "plan", "is null but the field is not nullable")]


def test_null_fails_an_enum_without_null_even_when_the_type_allows_it() -> None:
    # jsonschema checks type and enum apart: null passes ["string", "null"] but not enum [a, b].
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["t"],
        "properties": {"t": {"type": ["string", "null"], "enum": ["a", "b"]}},
    }
    df = pl.DataFrame({"t": ["a", None, "c"]})
    assert [v.row for v in validate_frame(df, schema, "x")] == sorted(jsonschema_failing_rows(df, schema)) == [1, 2]


def test_frame_of_only_unknown_columns_fails_every_row() -> None:
    schema = load_contract("customer_signals", CONTRACTS)
    df = pl.DataFrame({"surplus": [1, 2, 3]})
    assert (
        {v.row for v in validate_frame(df, schema, "customer_signals")}
        == jsonschema_failing_rows(df, schema)
        == {0, 1, 2}
    )


@pytest.mark.parametrize("table", sorted(VALID))
def test_an_empty_frame_breaks_nothing_even_with_a_field_the_contract_lacks(table: str) -> None:
    # An empty shard writes an empty frame to the lake.
    schema = load_contract(table, CONTRACTS)
    empty = frame(table, [VALID[table]]).clear()
    assert validate_frame(empty, schema, table) == []
    assert validate_frame(empty.with_columns(surplus=pl.lit(1)), schema, table) == []


def test_limit_keeps_the_first_violations_in_row_order() -> None:
    schema = load_contract("customer_signals", CONTRACTS)
    rows = [{**VALID["customer_signals"], "kind": "bad" if i % 2 else "risk"} for i in range(20)]
    found = validate_frame(frame("customer_signals", rows), schema, "customer_signals", limit=3)
    assert [v.row for v in found] == [1, 3, 5]


def test_unsupported_keyword_is_refused() -> None:
    schema = load_contract("customer_signals", CONTRACTS)
    schema["properties"]["code"]["maxLength"] = 10
    with pytest.raises(ContractError, match="code: keyword 'maxLength' is not supported"):
        validate_frame(frame("customer_signals", [VALID["customer_signals"]]), schema, "customer_signals")
    with pytest.raises(ContractError, match="format 'email'"):
        check_supported(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"e": {"type": "string", "format": "email"}},
            },
            "t",
        )
    with pytest.raises(ContractError, match="additionalProperties"):
        check_supported({"type": "object", "properties": {}}, "t")


def test_missing_or_broken_contract_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no contract for lake table 'nope'"):
        load_contract("nope", tmp_path)
    (tmp_path / "bad.schema.json").write_text('{"type": "object", "required": "x"}')
    with pytest.raises(ContractError, match="not a valid JSON Schema"):
        load_contract("bad", tmp_path)


def test_every_contract_describes_one_row_with_every_column_required() -> None:
    for table in VALID:
        schema = load_contract(table, CONTRACTS)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False
        assert schema["required"] == list(schema["properties"]) == list(TYPES[table])


@pytest.mark.untraced
@pytest.mark.parametrize("backend", [DuckDBLake, DeltaLake])
@pytest.mark.parametrize("table", sorted(VALID))
def test_each_lake_backend_stores_a_valid_row_as_is_and_refuses_a_broken_one(tmp_path: Path, backend, table) -> None:
    lake = backend(str(tmp_path / "lake"), CONTRACTS)
    row = frame(table, [VALID[table]])
    assert lake.write_snapshot(table, row.drop("as_of", "shard"), AS_OF, shard=2, shards=3) == 1
    assert lake.read_snapshot(table).equals(row)  # every value and type, as_of and shard included
    field, value, message = BREAKS[table]["range"]
    broken = frame(table, [{**VALID[table], field: value}]).drop("as_of", "shard")
    with pytest.raises(ContractError, match=f"row 0 \\(0-based\\), field {field}: (is )?{message}"):
        lake.write_snapshot(table, broken, AS_OF, shard=2, shards=3)
    assert lake.read_snapshot(table).equals(row)


def test_a_frames_columns_take_the_first_contracts_words_then_the_frames_own() -> None:
    renewals, health = (load_contract(table, CONTRACTS) for table in ("renewal_forecasts", "account_health"))
    words = frame_column_words(["account_id", "tier_reason", "bucket", "adoption_points", "nowhere"], renewals, health)
    # account_id is in both contracts: the first one's words, the renewing subscription's account.
    assert words["account_id"] == "The subscription's account."
    assert words["tier_reason"] == health["properties"]["tier_reason"]["description"]
    assert words["bucket"].startswith("Renewal likelihood: High, Medium or Low")
    assert words["adoption_points"].startswith("The adoption component's points: score x weight / 100")
    assert "nowhere" not in words  # a column nobody describes gets no words rather than wrong ones
    assert sorted(COMPONENT_PART_WORDS) == sorted(COMPONENT_PARTS)


def test_a_contract_is_checked_once_per_text_and_each_reader_gets_its_own_copy(tmp_path: Path) -> None:
    from c360_dagster.domain.governance import contracts

    path = tmp_path / "crm_opps.schema.json"
    text = (CONTRACTS / "crm_opps.schema.json").read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    first = load_contract("crm_opps", tmp_path)
    first["properties"].clear()  # one reader's change reaches no other
    shipped = load_contract("crm_opps", CONTRACTS)
    checked = contracts._check_contract.cache_info().misses
    assert load_contract("crm_opps", tmp_path) == shipped
    assert contracts._check_contract.cache_info().misses == checked  # not checked again
    path.write_text(text.replace('"additionalProperties": false', '"additionalProperties": true'), encoding="utf-8")
    for _ in range(2):  # the file as it is now, refused every time
        with pytest.raises(ContractError, match="additionalProperties other than false"):
            load_contract("crm_opps", tmp_path)
