"""Lake table contracts: JSON Schema (draft 2020-12) for one row, checked column by column.

`validate_frame` translates each property's keywords into Polars expressions over whole
columns, so a million rows validate in about a second. Only the keywords below are
understood; any other keyword is refused, so a contract can never ask for a rule that is
silently not enforced. A test checks that the verdicts agree with the `jsonschema` library.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl

from c360_dagster.domain.core.errors import ContractError

TOP_LEVEL_KEYWORDS = {
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "required",
    "additionalProperties",
    "properties",
}
PROPERTY_KEYWORDS = {
    "description",
    "title",
    "type",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "pattern",
    "minLength",
    "format",
    "contentMediaType",  # an annotation (JSON text in a string); the DuckDB lake stores such columns packed
}
JSON_TYPES = {"string", "integer", "number", "boolean", "null"}
ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


@dataclass(frozen=True)
class Violation:
    """One row breaking one rule of a table's contract (`row` is 0-based)."""

    table: str
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"table {self.table}, row {self.row}, field {self.field}: {self.message}"


def load_contract(table: str, contracts_dir: Path | str) -> dict[str, Any]:
    """Read `<table>.schema.json`, check it is a valid draft 2020-12 schema we can enforce."""
    path = Path(contracts_dir) / f"{table}.schema.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContractError(f"no contract for lake table {table!r}: {path} not found") from None
    # Checking a schema against the draft's meta-schema costs about 15 ms, and a run loads each
    # contract several times: checked once per text in a process, parsed afresh for each caller.
    _check_contract(table, str(path), text)
    return json.loads(text)


@functools.lru_cache(maxsize=64)
def _check_contract(table: str, path: str, text: str) -> None:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path}: not valid JSON: {exc}") from None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ContractError(f"{path}: not a valid JSON Schema: {exc.message}") from None
    check_supported(schema, table)


def check_supported(schema: Mapping[str, Any], table: str) -> None:
    """Refuse a contract that uses a keyword (or value) the columnar validator cannot enforce."""

    def refuse(where: str, what: str) -> ContractError:
        return ContractError(f"contract {table}: {where}: {what} is not supported by the validator")

    unknown = sorted(set(schema) - TOP_LEVEL_KEYWORDS)
    if unknown:
        raise refuse("(top level)", f"keyword {unknown[0]!r}")
    if schema.get("type") != "object":
        raise refuse("(top level)", f"type {schema.get('type')!r} (a row must be 'object')")
    if schema.get("additionalProperties") is not False:
        raise refuse("(top level)", "additionalProperties other than false")
    for name, spec in schema.get("properties", {}).items():
        unknown = sorted(set(spec) - PROPERTY_KEYWORDS)
        if unknown:
            raise refuse(name, f"keyword {unknown[0]!r}")
        types = _types(spec)
        if not types or not types <= JSON_TYPES:
            raise refuse(name, f"type {spec.get('type')!r} (give one or more of {sorted(JSON_TYPES)})")
        if spec.get("format", "date") != "date":
            raise refuse(name, f"format {spec['format']!r}")


def validate_frame(
    frame: pl.DataFrame, schema: Mapping[str, Any], table: str, *, limit: int | None = None
) -> list[Violation]:
    """Every (row, field) that breaks the contract, sorted by row then field; `limit` keeps the first."""
    check_supported(schema, table)
    properties: Mapping[str, Any] = schema.get("properties", {})
    failing: list[pl.Expr] = []  # one boolean column per rule: True where the row breaks it
    messages: list[tuple[str, str]] = []
    for name in frame.columns:
        if name not in properties:
            failing.append(pl.lit(True))
            messages.append((name, f"unknown field (the contract allows: {', '.join(sorted(properties))})"))
    for name in schema.get("required", []):
        if name not in frame.columns:
            failing.append(pl.lit(True))
            messages.append((name, "required field is missing"))
    for name, spec in properties.items():
        if name in frame.columns:
            for broken, message in _property_rules(name, frame.schema[name], spec):
                failing.append(broken)
                messages.append((name, message))
    if not failing or frame.height == 0:
        return []
    # The row index column also makes literal-only rules (unknown field) span every row.
    masks = frame.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        *[rule.fill_null(False).alias(f"r{i}") for i, rule in enumerate(failing)],
    )
    bad = masks.filter(pl.any_horizontal(pl.exclude("_row")))
    if limit is not None:
        bad = bad.head(limit)  # the first `limit` violations lie within the first `limit` bad rows
    found: list[tuple[int, int]] = []  # (row, rule index)
    for i in range(len(failing)):
        found.extend((row, i) for row in bad.filter(pl.col(f"r{i}"))["_row"].to_list())
    found.sort(key=lambda hit: (hit[0], messages[hit[1]][0], hit[1]))
    if limit is not None:
        found = found[:limit]
    return [Violation(table, row, messages[i][0], messages[i][1]) for row, i in found]


def _types(spec: Mapping[str, Any]) -> set[str]:
    declared = spec.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def _property_rules(name: str, dtype: pl.DataType, spec: Mapping[str, Any]) -> list[tuple[pl.Expr, str]]:
    """(expression true where a row breaks the rule, message) for each keyword of one property."""
    types = _types(spec)
    column = pl.col(name)
    present = column.is_not_null()
    kind = _json_kind(dtype)
    rules: list[tuple[pl.Expr, str]] = []
    if "null" not in types:
        rules.append((column.is_null(), "is null but the field is not nullable"))
    if "enum" in spec and None not in spec["enum"] and "null" in types:
        # Like jsonschema: a nullable field's null still fails an enum that does not list null.
        rules.append((column.is_null(), f"is null, not one of {_listing(spec['enum'])}"))
    if kind is None or not _kind_fits(kind, types):
        expected = " or ".join(sorted(types - {"null"}))
        return [*rules, (present, f"has type {dtype} but the contract wants {expected}")]
    if kind == "null":
        return rules
    # A Date column is judged as its ISO text, the form it takes in JSON.
    value = column.dt.to_string("%Y-%m-%d") if kind == "date" else column
    if "enum" in spec:
        allowed = [v for v in spec["enum"] if _json_kind_of(v) in _comparable(kind)]
        rules.append((present & ~value.is_in(allowed), f"is not one of {_listing(spec['enum'])}"))
    if kind in ("integer", "number"):
        if kind == "number" and "number" not in types:
            rules.append((present & (column != column.floor()), "is not a whole number"))
        # JSON has no NaN or infinity, so a row holding one cannot satisfy any JSON Schema.
        rules.append((present & ~column.cast(pl.Float64).is_finite(), "is not a finite number"))
        for keyword, breaks, word in (
            ("minimum", pl.Expr.lt, "below the minimum"),
            ("maximum", pl.Expr.gt, "above the maximum"),
            ("exclusiveMinimum", pl.Expr.le, "not above the exclusive minimum"),
        ):
            if keyword in spec:
                rules.append((present & breaks(column, spec[keyword]), f"is {word} {spec[keyword]}"))
    if kind in ("string", "date"):
        if "pattern" in spec:
            rules.append((present & ~_matches(value, spec["pattern"]), f"does not match {spec['pattern']}"))
        if "minLength" in spec:
            rules.append(
                (
                    present & (value.str.len_chars() < spec["minLength"]),
                    f"is shorter than {spec['minLength']} characters",
                )
            )
        if spec.get("format") == "date" and kind == "string":
            parsed = value.str.to_date("%Y-%m-%d", strict=False)
            valid = value.str.contains(ISO_DATE) & parsed.is_not_null() & (parsed.dt.year() >= 1)
            rules.append((present & ~valid.fill_null(False), "is not a valid YYYY-MM-DD date"))
    return rules


# `^<literal>.*<literal>$`, the literals' metacharacters escaped: a JSON text's shape (`^\{.*\}$`).
_LITERAL = r"(?:[^\\.*+?()\[\]{}|^$]|\\[\\.*+?()\[\]{}|^$])*"  # no metacharacter but escaped ones
_FRAMED = re.compile(rf"\^({_LITERAL})\.\*({_LITERAL})\$")


def _matches(value: pl.Expr, pattern: str) -> pl.Expr:
    """Whether each text matches `pattern`, as Polars' `str.contains` (Rust's regex) decides.

    A pattern framing `.*` between two literals is checked without the regex engine: in Rust's
    regex `.` is any character but LF and `^`, `$` anchor the whole text, so it holds exactly when
    the text starts and ends with the literals (not overlapping) and holds no LF. Checking
    `account_health`'s `components` (a JSON object's shape, 150 MB of text at 100k accounts) so
    takes a few hundredths of a second instead of a third.
    """
    framed = _FRAMED.fullmatch(pattern)
    if framed is None:
        return value.str.contains(pattern)
    head, tail = (re.sub(r"\\(.)", r"\1", part) for part in framed.groups())
    return (
        value.str.starts_with(head)
        & value.str.ends_with(tail)
        & (value.str.len_bytes() >= len(head.encode()) + len(tail.encode()))
        & ~value.str.contains("\n", literal=True)
    )


def _listing(values: list[Any]) -> str:
    return ", ".join(json.dumps(v) for v in values)


def _json_kind(dtype: pl.DataType) -> str | None:
    """The JSON type a Polars column's values take (dates as ISO strings), None if unsupported."""
    if dtype == pl.Utf8:
        return "string"
    if dtype == pl.Date:
        return "date"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "number"
    if dtype == pl.Null:
        return "null"
    return None


def _json_kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "other"


def _comparable(kind: str) -> set[str]:
    """Kinds of enum members a column of `kind` can equal (JSON: 1 == 1.0, never True == 1)."""
    return {"date": {"string"}, "integer": {"number"}}.get(kind, {kind})


def _kind_fits(kind: str, types: set[str]) -> bool:
    """Whether values of a column of `kind` can have one of the contract's types."""
    accepted = {"date": {"string"}, "integer": {"integer", "number"}, "number": {"integer", "number"}}
    return bool(accepted.get(kind, {kind}) & types)
