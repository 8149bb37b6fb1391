"""Canonical JSON text of whole Polars columns, byte-equal to `io.canonical_json` (sorted keys, compact).

`json.dumps` needs every row as Python objects first (a dict per account, a million at 1M
accounts); Polars' own JSON encoder works on the columns and prints what `json.dumps` prints once
every struct's fields are in name order, except floats below 1e-4 or from 1e16 on (exponent
notation), non-finite ones, and control characters other than the ones escaped here; where a
column holds one of those (`unsafe_leaves`), its values go through `json.dumps`, so the bytes
never differ.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from c360_dagster.domain.core.io import ITEM_SEPARATOR, canonical_json, entry_text, joined_items

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f"))
_OTHER_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"


def json_string(expr: pl.Expr) -> pl.Expr:
    """A Utf8 column as JSON string literals (ensure_ascii=False); nulls stay null."""
    # One pass for all escapes; each match is replaced once, so `\\` and `"` cannot compound.
    escaped = expr.str.replace_many([raw for raw, _ in _ESCAPES], [text for _, text in _ESCAPES])
    return pl.concat_str(pl.lit('"'), escaped, pl.lit('"'))


def unsafe_leaves(expr: pl.Expr, dtype: PolarsDataType) -> list[pl.Expr]:
    """Per leaf, true where Polars' text could differ from json.dumps."""
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


def canonical_text(expr: pl.Expr, dtype: PolarsDataType) -> pl.Expr:
    """Each struct value's canonical JSON by Polars (right where `unsafe_leaves` flags nothing)."""
    return _sorted_fields(expr, dtype).struct.json_encode()


def _sorted_fields(expr: pl.Expr, dtype: PolarsDataType) -> pl.Expr:
    """The same value with every struct's fields in name order, at any depth; null where it was."""
    if isinstance(dtype, pl.Struct):
        fields = sorted(dtype.fields, key=lambda f: f.name)
        rebuilt = pl.struct(_sorted_fields(expr.struct.field(f.name), f.dtype).alias(f.name) for f in fields)
        return pl.when(expr.is_not_null()).then(rebuilt)  # pl.struct alone makes {all fields null} of a null
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct | pl.List):
        return expr.list.eval(_sorted_fields(pl.element(), dtype.inner))
    return expr


def canonical_texts(values: pl.Series) -> pl.Series:
    """Each struct value as `io.canonical_json` prints it."""
    column = pl.col(values.name)
    frame = values.to_frame()
    unsafe = unsafe_leaves(column, values.dtype)
    if values.is_empty() or frame.select(pl.any_horizontal(pl.lit(False), *unsafe).any()).item():
        return pl.Series(values.name, [canonical_json(value) for value in values], pl.Utf8)
    return frame.select(canonical_text(column, values.dtype).alias(values.name))[:, 0]


def entries(
    frame: pl.DataFrame,
    key: str,
    value: pl.Expr,
    *,
    chunk_rows: int,
    fallback: Callable[[pl.DataFrame], Iterator[tuple[str, Any]]],
) -> Iterator[bytes]:
    """`"<key>": <value>` texts (the value a struct, as canonical JSON), in chunks of rows, in frame order.

    `fallback(frame)` gives the same (key, value) pairs as Python objects; it is used when a
    value could print differently column-wise (see the module docstring).
    """
    return _texts(
        frame.select(
            pl.col(key),
            value.alias("_value"),
            pl.col(key).str.contains(_OTHER_CONTROL).fill_null(False).alias("_unsafe"),
        ),
        pl.concat_str(json_string(pl.col(key)), pl.lit(": ")),
        chunk_rows,
        lambda: (entry_text(k, v) for k, v in fallback(frame)),
    )


def items(
    frame: pl.DataFrame,
    value: pl.Expr,
    *,
    chunk_rows: int,
    fallback: Callable[[pl.DataFrame], Iterator[Any]],
    unsafe: pl.Expr = pl.lit(False),
) -> Iterator[bytes]:
    """A JSON array's item texts (each a struct, as canonical JSON), in chunks of rows, in frame order.

    `fallback(frame)` gives the same items as Python objects; it is used when a value could
    print differently column-wise, or where the caller's `unsafe` (a row-wise flag over
    `frame`) is true.
    """
    return _texts(
        frame.select(value.alias("_value"), unsafe.alias("_unsafe")),
        None,
        chunk_rows,
        lambda: (canonical_json(item) for item in fallback(frame)),
    )


def _texts(
    values: pl.DataFrame,
    prefix: pl.Expr | None,
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
    text = canonical_text(pl.col("_value"), dtype)
    yield from joined_chunks(values, text if prefix is None else pl.concat_str(prefix, text), chunk_rows)


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
