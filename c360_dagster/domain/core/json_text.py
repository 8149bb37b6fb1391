"""Pretty JSON text of whole Polars columns, byte-equal to `json.dumps(..., sort_keys=True, indent=2)`.

Python's indenting JSON encoder is pure Python (about 10 µs per value); a million health
records would spend minutes in it. Here each row's text is assembled by Polars expressions
from its leaves instead. Polars prints floats as Python's `repr` does except for values
below 1e-4 or from 1e16 on (exponent notation) and non-finite ones, and `entries` checks for
those, and for control characters other than the ones escaped here, before using the
columnar path; otherwise it falls back to `json.dumps`, so the bytes never differ.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from c360_dagster.domain.core.io import ITEM_SEPARATOR, canonical_json, joined_items

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

_INDENT = 2
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f"))
_OTHER_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"


def json_string(expr: pl.Expr) -> pl.Expr:
    """A Utf8 column as JSON string literals (ensure_ascii=False); nulls stay null."""
    return pl.concat_str(pl.lit('"'), _escaped(expr), pl.lit('"'))


def _escaped(expr: pl.Expr) -> pl.Expr:
    # One pass for all escapes; each match is replaced once, so `\\` and `"` cannot compound.
    return expr.str.replace_many([raw for raw, _ in _ESCAPES], [text for _, text in _ESCAPES])


def object_text(members: dict[str, pl.Expr], depth: int) -> pl.Expr:
    """A JSON object from its members' texts (already pretty at `depth` + 2), keys in sorted order."""
    return _concatenated(_object_parts({name: [text] for name, text in members.items()}, depth))


# A text as pieces to concatenate: literal text, or a column's text per row.
Parts = list[str | pl.Expr]
ValuePath = tuple[str, ...]  # a part of a value: the field names leading to it ((): the value)


def _object_parts(members: dict[str, Parts], depth: int) -> Parts:
    """The pieces of the object of these members (each given in pieces)."""
    if not members:
        return ["{}"]
    inner = "\n" + " " * (depth + _INDENT)
    parts: Parts = []
    for position, name in enumerate(sorted(members)):
        parts.append(("{" if position == 0 else ",") + inner + json.dumps(name, ensure_ascii=False) + ": ")
        parts.extend(members[name])
    parts.append("\n" + " " * depth + "}")
    return parts


def _concatenated(parts: Parts) -> pl.Expr:
    """One text of the pieces, adjacent literals joined first."""
    merged: Parts = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    exprs = [pl.lit(part) if isinstance(part, str) else part for part in merged]
    return exprs[0] if len(exprs) == 1 else pl.concat_str(exprs)


def json_text(
    expr: pl.Expr, dtype: PolarsDataType, depth: int, null_free: frozenset[ValuePath] = frozenset()
) -> pl.Expr:
    """Each value's pretty JSON, continuation lines indented by `depth` spaces; null is `null`.

    The parts of the value at the paths in `null_free` are null in no row (`null_free_parts`):
    their text is made in one concatenation with the text around it, not apart and copied in.
    """
    return _concatenated(_parts(expr, dtype, depth, null_free, ()))


def _parts(expr: pl.Expr, dtype: PolarsDataType, depth: int, null_free: frozenset[ValuePath], path: ValuePath) -> Parts:
    """The pieces of `json_text`'s text."""
    whole = path in null_free
    if isinstance(dtype, pl.Struct):
        members = {
            f.name: _parts(expr.struct.field(f.name), f.dtype, depth + _INDENT, null_free, (*path, f.name))
            for f in dtype.fields
        }
        parts = _object_parts(members, depth)
        return parts if whole else [pl.when(expr.is_null()).then(pl.lit("null")).otherwise(_concatenated(parts))]
    if isinstance(dtype, pl.List):
        inner = "\n" + " " * (depth + _INDENT)
        items = expr.list.eval(json_text(pl.element(), dtype.inner, depth + _INDENT)).list.join("," + inner)
        empty = pl.when(expr.list.len() == 0).then(pl.lit("[]"))
        listed = empty.otherwise(pl.concat_str(pl.lit("[" + inner), items, pl.lit("\n" + " " * depth + "]")))
        return [listed.fill_null("null")]
    if dtype == pl.Utf8 and whole:
        return ['"', _escaped(expr), '"']
    text: pl.Expr
    if dtype == pl.Utf8:
        text = json_string(expr)
    elif dtype == pl.Boolean:
        text = pl.when(expr).then(pl.lit("true")).when(~expr).then(pl.lit("false"))
    elif dtype.is_integer() or dtype.is_float():
        text = expr.cast(pl.Utf8)
    elif dtype == pl.Null:
        text = pl.lit(None, pl.Utf8)
    else:
        raise TypeError(f"no columnar JSON text for {dtype}")
    return [text if whole else text.fill_null("null")]


def null_free_parts(frame: pl.DataFrame, column: str) -> frozenset[ValuePath]:
    """The parts of `column`'s values (structs and their fields, outside lists) null in no row."""
    paths: list[ValuePath] = []
    checks: list[pl.Expr] = []

    def visit(expr: pl.Expr, dtype: PolarsDataType, path: ValuePath) -> None:
        paths.append(path)
        checks.append(expr.is_null().any().alias(str(len(checks))))
        if isinstance(dtype, pl.Struct):
            for f in dtype.fields:
                visit(expr.struct.field(f.name), f.dtype, (*path, f.name))

    visit(pl.col(column), frame.schema[column], ())
    has_nulls = frame.select(checks).row(0)
    return frozenset(path for path, nulls in zip(paths, has_nulls, strict=True) if not nulls)


def unsafe_leaves(expr: pl.Expr, dtype: PolarsDataType) -> list[pl.Expr]:
    """Per leaf, true where the columnar text could differ from json.dumps."""
    if isinstance(dtype, pl.Struct):
        return [check for f in dtype.fields for check in unsafe_leaves(expr.struct.field(f.name), f.dtype)]
    if isinstance(dtype, pl.List):
        inner = unsafe_leaves(pl.element(), dtype.inner)
        return [expr.list.eval(pl.any_horizontal(inner)).list.any().fill_null(False)] if inner else []
    if dtype.is_float():
        size = expr.abs()
        return [(~expr.is_finite() | ((size > 0) & (size < 1e-4)) | (size >= 1e16)).fill_null(False)]
    if dtype == pl.Utf8:
        return [expr.str.contains(_OTHER_CONTROL).fill_null(False)]
    return []


def canonical_texts(values: pl.Series) -> pl.Series:
    """Each struct value as `io.canonical_json` prints it (sorted keys, compact separators).

    Polars' JSON encoder prints what `json.dumps` prints once the fields are in sorted order,
    except for the values `unsafe_leaves` flags; then every value goes through json.dumps.
    """
    column = pl.col(values.name)
    frame = values.to_frame()
    unsafe = unsafe_leaves(column, values.dtype)
    if values.is_empty() or frame.select(pl.any_horizontal(pl.lit(False), *unsafe).any()).item():
        return pl.Series(values.name, [canonical_json(value) for value in values], pl.Utf8)
    return frame.select(_sorted_fields(column, values.dtype).struct.json_encode().alias(values.name))[:, 0]


def _sorted_fields(expr: pl.Expr, dtype: PolarsDataType) -> pl.Expr:
    """The same value with every struct's fields in name order, at any depth."""
    if isinstance(dtype, pl.Struct):
        fields = sorted(dtype.fields, key=lambda f: f.name)
        return pl.struct(_sorted_fields(expr.struct.field(f.name), f.dtype).alias(f.name) for f in fields)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct | pl.List):
        return expr.list.eval(_sorted_fields(pl.element(), dtype.inner))
    return expr


def entries(
    frame: pl.DataFrame,
    key: str,
    value: pl.Expr,
    *,
    depth: int,
    chunk_rows: int,
    fallback: Callable[[pl.DataFrame], Iterator[tuple[str, Any]]],
) -> Iterator[bytes]:
    """`"<key>": <value>` texts (value pretty at `depth`), in chunks of rows, in frame order.

    `fallback(frame)` gives the same (key, value) pairs as Python objects; it is used when a
    value could print differently column-wise (see the module docstring).
    """
    prefix = pl.concat_str(json_string(pl.col(key)), pl.lit(": "))
    return _texts(
        frame.select(
            pl.col(key),
            value.alias("_value"),
            pl.col(key).str.contains(_OTHER_CONTROL).fill_null(False).alias("_unsafe"),
        ),
        prefix,
        depth,
        chunk_rows,
        lambda: (json.dumps(k, ensure_ascii=False) + ": " + python_text(v, depth) for k, v in fallback(frame)),
    )


def items(
    frame: pl.DataFrame,
    value: pl.Expr,
    *,
    depth: int,
    chunk_rows: int,
    fallback: Callable[[pl.DataFrame], Iterator[Any]],
    unsafe: pl.Expr = pl.lit(False),
) -> Iterator[bytes]:
    """A JSON array's item texts (pretty at `depth`), in chunks of rows, in frame order.

    `fallback(frame)` gives the same items as Python objects; it is used when a value could
    print differently column-wise, or where the caller's `unsafe` (a row-wise flag over
    `frame`) is true.
    """
    return _texts(
        frame.select(value.alias("_value"), unsafe.alias("_unsafe")),
        None,
        depth,
        chunk_rows,
        lambda: (python_text(item, depth) for item in fallback(frame)),
    )


def _texts(
    values: pl.DataFrame,
    prefix: pl.Expr | None,
    depth: int,
    chunk_rows: int,
    fallback: Callable[[], Iterator[str]],
) -> Iterator[bytes]:
    """Each row's `prefix` + `_value` text in chunks (`io.joined_items`); the `fallback` texts
    instead if any leaf could print differently or any row's `_unsafe` flag is not false."""
    dtype = values.schema["_value"]
    unsafe = [*unsafe_leaves(pl.col("_value"), dtype), pl.col("_unsafe").fill_null(True)]
    if values.select(pl.any_horizontal(unsafe).any()).item():
        texts = fallback()
        while chunk := list(itertools.islice(texts, chunk_rows)):
            yield joined_items(chunk)
        return
    text = json_text(pl.col("_value"), dtype, depth, null_free_parts(values, "_value"))
    line = text if prefix is None else pl.concat_str(prefix, text)
    yield from joined_chunks(values, line, chunk_rows)


def joined_chunks(frame: pl.DataFrame, text: pl.Expr, chunk_rows: int) -> Iterator[bytes]:
    """`text` of every row, `chunk_rows` at a time, joined as `io.joined_items` joins them.

    Polars joins the texts, so no row becomes a Python object. The texts are made once for the
    whole frame (planning a record's expression costs more than small chunks' rows), then joined
    chunk by chunk, so a chunk's bytes stay small.
    """
    texts = frame.select(text.alias("text"))
    joined = pl.col("text").str.join(ITEM_SEPARATOR)
    for offset in range(0, texts.height, chunk_rows):
        # A str of the chunk, encoded: half the CPU of Polars casting it to Binary first.
        yield texts.slice(offset, chunk_rows).select(joined).item().encode("utf-8")


def python_text(value: Any, depth: int) -> str:
    """What `json_text` produces, by the standard library."""
    return json.dumps(value, sort_keys=True, indent=_INDENT, ensure_ascii=False).replace("\n", "\n" + " " * depth)
