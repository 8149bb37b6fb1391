"""The fast writers keep the bytes: chunked atomic writes, list-aware columnar JSON, signals.json."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from pathlib import Path

import polars as pl
import pytest

from c360_dagster.domain.core import io as io_module
from c360_dagster.domain.core import json_text
from c360_dagster.domain.core.io import (
    canonical_json,
    sink_chunks,
    write_chunks_atomic,
    write_json_stream,
    write_json_stream_text,
)
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.view_json import record_lines
from c360_dagster.domain.scoring import signals
from c360_dagster.domain.scoring.health import load_health_config
from c360_dagster.domain.scoring.signals import (
    detect_signals,
    load_signals_config,
    signal_json_entries,
    signal_records,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "customer"


def test_write_chunks_atomic_writes_every_chunk_in_order_and_returns_its_hash(tmp_path):
    path = tmp_path / "out.bin"
    digest = write_chunks_atomic(path, iter([b"ab", b"", "cé".encode()]), queued=1)
    # By hand: the chunks joined are b"abc\xc3\xa9".
    assert path.read_bytes() == b"abc\xc3\xa9"
    assert digest == "sha256:" + hashlib.sha256(b"abc\xc3\xa9").hexdigest()


def test_write_chunks_atomic_leaves_the_old_file_when_the_producer_fails(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def chunks():
        yield b"new"
        raise RuntimeError("encoder broke")

    with pytest.raises(RuntimeError, match="encoder broke"):
        write_chunks_atomic(path, chunks())
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temp file left


def test_write_chunks_atomic_syncs_as_it_writes_on_the_writer_thread(tmp_path, monkeypatch):
    """Every SYNC_BYTES written, the writer flushes and fsyncs (not the producer's thread), so the
    final fsync has only the tail left; the bytes and hash are unchanged."""
    synced: list[tuple[str, int]] = []
    fsync = os.fsync

    def record(fd: int) -> None:
        synced.append((threading.current_thread().name, os.fstat(fd).st_size))
        fsync(fd)

    monkeypatch.setattr(io_module, "SYNC_BYTES", 4)
    monkeypatch.setattr(os, "fsync", record)
    path = tmp_path / "out.bin"
    digest = write_chunks_atomic(path, iter([b"abc", b"de", b"fghij", b"k"]), queued=1)
    # By hand: 3 bytes, then 5 (>= 4: sync at 5 bytes on disk), then 5 more (sync at 10), then 1;
    # the atomic write's own fsync at 11 bytes, in the caller's thread.
    assert synced == [("c360-chunk-consumer", 5), ("c360-chunk-consumer", 10), ("MainThread", 11)]
    assert path.read_bytes() == b"abcdefghijk"
    assert digest == "sha256:" + hashlib.sha256(b"abcdefghijk").hexdigest()


def test_write_chunks_atomic_raises_what_the_writer_thread_hit(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(TypeError):
        write_chunks_atomic(path, iter([b"fine", "not bytes", b"more"]))  # type: ignore[list-item]  # a str on purpose
    assert not path.exists()


def _written(tmp_path: Path, frame: pl.DataFrame) -> tuple[bytes, bytes]:
    header = {"as_of": "2024-06-30"}
    slow = write_json_stream(tmp_path / "slow.json", header, "accounts", signal_records(frame))
    fast = write_json_stream_text(tmp_path / "fast.json", header, "accounts", signal_json_entries(frame, chunk_rows=2))
    assert slow == fast
    return (tmp_path / "slow.json").read_bytes(), (tmp_path / "fast.json").read_bytes()


def test_columnar_signals_json_equals_the_python_encoder_on_the_fixtures(tmp_path, monkeypatch):
    config = load_signals_config(ROOT / "configs" / "customer" / "signals.yaml")
    lifecycle = load_health_config(ROOT / "configs" / "customer" / "health.yaml").lifecycle
    detected = detect_signals(read_customer_360(FIXTURES), config, lifecycle)
    assert "SIG_STAKEHOLDER_CHANGE" in detected["code"].to_list()  # its evidence nests a list of objects
    frame = detected.with_columns(
        signal_id=pl.lit("0123456789abcdef"),
        status=pl.lit("new"),
        since=pl.lit(dt.date(2024, 6, 30)),
        snoozed_until=pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit(dt.date(2024, 7, 31))),
        snooze_reason=pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit('waiting on "Q3"\nplan')),
    )
    slow, fast = _written(tmp_path, frame)
    assert fast == slow
    with monkeypatch.context() as patched:
        patched.setattr(signals, "signal_records", None)  # the columnar path must not need the fallback
        assert b",\n    ".join(signal_json_entries(frame)) in fast


def test_columnar_signals_json_takes_evidence_of_any_shape_as_written(tmp_path, monkeypatch):
    frame = pl.DataFrame(
        {
            "account_id": ["B", "A", "A"],
            "code": ["SIG_X", "SIG_X", "SIG_Y"],
            "kind": ["risk", "risk", "expansion"],
            # Canonical texts of different shapes, a float json.dumps prints in exponent form among them.
            "evidence": ['{"a":1}', '{"a":1,"b":0.5}', '{"tiny":1e-05}'],
        }
    )
    slow, fast = _written(tmp_path, frame)
    assert fast == slow
    monkeypatch.setattr(signals, "signal_records", None)  # the columnar path must not need the fallback
    # By hand: an account per line; its signals sorted by code, each object's keys sorted, compact.
    assert list(signal_json_entries(frame)) == [
        b'"A": [{"code":"SIG_X","evidence":{"a":1,"b":0.5},"kind":"risk"},'
        b'{"code":"SIG_Y","evidence":{"tiny":1e-05},"kind":"expansion"}],\n    '
        b'"B": [{"code":"SIG_X","evidence":{"a":1},"kind":"risk"}]'
    ]


def test_columnar_signals_json_falls_back_where_polars_would_print_differently(tmp_path):
    frame = pl.DataFrame(
        {
            "account_id": ["A", "B"],
            "code": ["SIG_X", "SIG_X"],
            "kind": ["risk", "risk"],
            "evidence": ['{"a":1}', '{"a":2}'],
            "snooze_reason": [None, "bell\x07"],
        }
    )
    slow, fast = _written(tmp_path, frame)
    assert fast == slow
    # By hand: json.dumps escapes BEL as \u0007.
    assert b'"B": [{"code":"SIG_X","evidence":{"a":2},"kind":"risk","snooze_reason":"bell\\u0007"}]' in fast


def test_columnar_signals_json_of_no_signals_is_an_empty_object(tmp_path):
    frame = pl.DataFrame(schema=signals.SIGNALS_COLUMNS)
    slow, fast = _written(tmp_path, frame)
    assert json.loads(fast) == {"accounts": {}, "as_of": "2024-06-30"}
    assert fast == slow


def _canonical_column(values: list, dtype: pl.DataType) -> tuple[list[str], list[str]]:
    series = pl.Series("evidence", values, dtype)
    return json_text.canonical_texts(series).to_list(), [canonical_json(value) for value in values]


def test_canonical_texts_sorts_fields_at_every_depth_and_prints_what_json_dumps_prints():
    dtype = pl.Struct(
        {
            "z": pl.Float64,
            "a": pl.Utf8,
            "changes": pl.List(pl.Struct({"on": pl.Utf8, "change": pl.Utf8})),
            "n": pl.Int32,
            "ok": pl.Boolean,
            "e": pl.Struct({"y": pl.Int64, "x": pl.Utf8}),
        }
    )
    values = [
        {
            "z": 1.0,
            "a": 'é "q" \\ /\n\t',
            "changes": [{"on": "2024-01-01", "change": "added"}],
            "n": None,
            "ok": True,
            "e": {"y": 1, "x": None},
        },
        {"z": 0.30000000000000004, "a": None, "changes": [], "n": -3, "ok": False, "e": None},
        {"z": 123456789.125, "a": "", "changes": None, "n": 7, "ok": None, "e": None},
        # The edges of Python's fixed notation, and a negative zero.
        *(
            {"z": z, "a": "x", "changes": [], "n": 0, "ok": True, "e": None}
            for z in (1e15, 0.0001, -0.0, 9999999999999998.0)
        ),
    ]
    columnar, python = _canonical_column(values, dtype)
    assert columnar == python
    # By hand: keys sorted at both depths, compact separators, text as written (no ASCII escapes).
    assert (
        columnar[0] == '{"a":"é \\"q\\" \\\\ /\\n\\t","changes":[{"change":"added","on":"2024-01-01"}],'
        '"e":{"x":null,"y":1},"n":null,"ok":true,"z":1.0}'
    )
    assert columnar[1].startswith('{"a":null,"changes":[],"e":null,')  # a null struct prints as null


@pytest.mark.parametrize("odd", [{"x": 1e-05, "s": "a"}, {"x": 1.0, "s": "bell\x07"}, {"x": float("inf"), "s": "a"}])
def test_canonical_texts_uses_json_dumps_where_polars_could_print_differently(odd):
    values = [{"x": 2.5, "s": "fine"}, odd]
    columnar, python = _canonical_column(values, pl.Struct({"x": pl.Float64, "s": pl.Utf8}))
    assert columnar == python


def test_canonical_texts_of_no_rows_is_empty():
    assert _canonical_column([], pl.Struct({"x": pl.Float64})) == ([], [])


def test_sink_chunks_hands_over_every_byte_a_polars_sink_writes_in_order():
    frame = pl.DataFrame({"n": range(200_000), "text": ["a,\nb"] * 200_000})
    chunks = list(sink_chunks(frame.lazy().sink_ndjson))
    assert len(chunks) > 1
    assert b"".join(chunks) == frame.write_ndjson().encode()


def test_sink_chunks_raises_the_sinks_error_and_stops_the_sink_of_a_reader_that_stops():
    def broken(writer):
        writer.write(b"part")
        raise ValueError("sink broke")

    with pytest.raises(ValueError, match="sink broke"):
        list(sink_chunks(broken))
    frame = pl.DataFrame({"n": range(500_000)})
    chunks = sink_chunks(frame.lazy().sink_ndjson, queued=1)
    next(chunks)
    chunks.close()  # would hang if the sink were left waiting to put its next chunk
    assert not [thread for thread in threading.enumerate() if thread.name == "c360-sink"]


def test_a_failed_write_stops_the_sink_feeding_it(tmp_path):
    frame = pl.DataFrame({"n": range(500_000)})

    def chunks():
        sunk = sink_chunks(frame.lazy().sink_ndjson, queued=1)
        yield next(sunk)
        yield "not bytes"  # the writer thread fails on it
        yield from sunk

    with pytest.raises(TypeError):
        write_chunks_atomic(tmp_path / "out.json", chunks())
    assert not [thread for thread in threading.enumerate() if thread.name == "c360-sink"]
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 10_000])
def test_record_lines_are_the_same_wherever_the_ndjson_is_cut(cut):
    ndjson = b'{"a":1}\n{"b":"x\\ny"}\n{"c":[1,2]}\n'
    pieces = [ndjson[start : start + cut] for start in range(0, len(ndjson), cut)]
    # By hand: each record on its own line, indented 6, a comma after all but the last.
    expected = b'\n      {"a":1},\n      {"b":"x\\ny"},\n      {"c":[1,2]}'
    assert b"".join(record_lines(pieces)) == expected
    assert b"".join(record_lines([b"", *pieces, b""])) == expected
    assert b"".join(record_lines([])) == b""
