"""`360.json`: the Customer 360 view as one deterministic JSON document, streamed to disk.

Layout: sorted keys, 2-space indent; each record is one canonical JSON object (sorted keys,
compact) on its own line, so Polars can write records chunk by chunk without a Python object
per row, and the bytes do not depend on the chunk size.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import polars as pl

from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.scoring.quality import Finding

DECIMALS = 2
CHUNK_ROWS = 100_000
_RECORD_BREAK = b"\n" + b" " * 6


def normalized_records(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns in name order, dates as ISO text, decimals rounded to 2 places; nulls kept."""
    return frame.select(
        pl.col(name).dt.to_string("%Y-%m-%d")
        if dtype == pl.Date
        else pl.col(name).round(DECIMALS)
        if dtype == pl.Float64
        else pl.col(name)
        for name, dtype in sorted(frame.schema.items())
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


def customer_360_json_chunks(
    view: Customer360, checks: list[Finding], *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[bytes]:
    """The bytes of 360.json, records streamed `chunk_rows` at a time."""
    return json_chunks(_header(view, checks), {name: [frame] for name, frame in view.tables.items()}, chunk_rows)


def json_chunks(
    header: dict[str, Any], tables: Mapping[str, Iterable[pl.DataFrame]], chunk_rows: int = CHUNK_ROWS
) -> Iterator[bytes]:
    """The bytes of 360.json from its header and each table's rows in key order, given in any
    number of frames (the bytes do not depend on how the rows are cut), `chunk_rows` at a time."""
    keys = sorted([*header, "records"])
    yield b"{"
    for position, key in enumerate(keys):
        text = ("," if position else "") + f"\n  {json.dumps(key)}: "
        if key == "records":
            yield text.encode("utf-8")
            yield from _records_bytes(tables, chunk_rows)
        else:
            value = json.dumps(header[key], sort_keys=True, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            yield (text + value).encode("utf-8")
    yield b"\n}\n"


def _records_bytes(tables: Mapping[str, Iterable[pl.DataFrame]], chunk_rows: int) -> Iterator[bytes]:
    names = sorted(tables)
    yield b"{"
    for position, name in enumerate(names):
        yield (("," if position else "") + f"\n    {json.dumps(name)}: [").encode("utf-8")
        written = 0
        for part in tables[name]:
            frame = normalized_records(part)
            for offset in range(0, frame.height, chunk_rows):
                buffer = io.BytesIO()
                frame.slice(offset, chunk_rows).write_ndjson(buffer)
                # NDJSON escapes newlines inside strings, so each "\n" ends exactly one record;
                # working on the UTF-8 bytes spares decoding and re-encoding half a gigabyte at 100k.
                lines = buffer.getvalue()[:-1]
                yield (b"," if written else b"") + _RECORD_BREAK + lines.replace(b"\n", b"," + _RECORD_BREAK)
                written += 1
        yield b"\n    ]" if written else b"]"
    yield b"\n  }" if names else b"}"
