"""`360.json`: the Customer 360 view as one deterministic JSON document, streamed to disk.

Layout: sorted keys, 2-space indent; each record is one canonical JSON object (sorted keys,
compact) on its own line, so Polars can write records chunk by chunk without a Python object
per row, and the bytes do not depend on the chunk size.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import polars as pl

from c360_dagster.domain.core.io import sink_chunks
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.quality import Finding

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

DECIMALS = 2
_RECORD_BREAK = b"\n" + b" " * 6


def normalized_records(frame: FrameT) -> FrameT:
    """Columns in name order, dates as ISO text, decimals rounded to 2 places; nulls kept."""
    return frame.select(
        pl.col(name).dt.to_string("%Y-%m-%d")
        if dtype == pl.Date
        else pl.col(name).round(DECIMALS)
        if dtype == pl.Float64
        else pl.col(name)
        for name, dtype in sorted(frame.collect_schema().items())
    )


def document_header(
    as_of: str, counts: dict[str, int], source_hashes: dict[str, str], warnings: Iterable[str], checks: list[Finding]
) -> dict[str, Any]:
    """Everything of 360.json but its records; `as_of` in ISO form, `counts` per table."""
    return {
        "as_of": as_of,
        "checks": [dataclasses.asdict(check) for check in checks],
        "counts": counts,
        "source_hashes": dict(sorted(source_hashes.items())),
        "warnings": list(warnings),
    }


def _header(view: Customer360, checks: list[Finding]) -> dict[str, Any]:
    return document_header(view.as_of.isoformat(), view.counts(), view.source_hashes, view.warnings, checks)


def customer_360_document(view: Customer360, checks: list[Finding]) -> dict[str, Any]:
    """The whole document as plain data (equal to `json.loads` of the written file)."""
    records = {name: normalized_records(view.tables[name]).to_dicts() for name in sorted(view.tables)}
    return {**_header(view, checks), "records": records}


def customer_360_json_chunks(view: Customer360, checks: list[Finding]) -> Iterator[bytes]:
    """The bytes of 360.json of one view."""
    return json_chunks(_header(view, checks), {name: frame.lazy() for name, frame in view.tables.items()})


def json_chunks(header: dict[str, Any], tables: Mapping[str, pl.LazyFrame]) -> Iterator[bytes]:
    """The bytes of 360.json from its header and each table's rows in key order, as a lazy frame
    (a Parquet scan, say) that Polars streams: no table is held whole, as rows or as text."""
    keys = sorted([*header, "records"])
    yield b"{"
    for position, key in enumerate(keys):
        text = ("," if position else "") + f"\n  {json.dumps(key)}: "
        if key == "records":
            yield text.encode("utf-8")
            yield from _records_bytes(tables)
        else:
            value = json.dumps(header[key], sort_keys=True, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            yield (text + value).encode("utf-8")
    yield b"\n}\n"


def _records_bytes(tables: Mapping[str, pl.LazyFrame]) -> Iterator[bytes]:
    names = sorted(tables)
    yield b"{"
    for position, name in enumerate(names):
        yield (("," if position else "") + f"\n    {json.dumps(name)}: [").encode("utf-8")
        records = record_lines(sink_chunks(normalized_records(tables[name]).sink_ndjson))
        written = False
        for chunk in records:
            written = True
            yield chunk
        yield b"\n    ]" if written else b"]"
    yield b"\n  }" if names else b"}"


def record_lines(ndjson: Iterable[bytes]) -> Iterator[bytes]:
    """NDJSON bytes (cut anywhere) as the array items of `records`: each record on a line of its
    own at depth 6, records separated by commas; nothing for no record.

    Polars' NDJSON writer prints each record as `json.dumps` does compactly, keys in frame order,
    and escapes newlines inside strings, so each `\n` ends exactly one record; working on the
    UTF-8 bytes spares decoding and re-encoding half a gigabyte at 100k accounts.
    """
    separator = b"," + _RECORD_BREAK
    starts_record, first = True, True
    for chunk in ndjson:
        if not chunk:
            continue
        if starts_record:
            yield _RECORD_BREAK if first else separator
            first = False
        starts_record = chunk.endswith(b"\n")
        yield (chunk[:-1] if starts_record else chunk).replace(b"\n", separator)
