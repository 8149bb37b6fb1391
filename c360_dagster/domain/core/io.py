"""Deterministic, atomic file output: canonical JSON, content hashes, write-then-rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from c360_dagster.domain.core.failpoints import failpoint


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """JSON with sorted keys and fixed separators, so equal data gives equal bytes."""
    if indent is None:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(value, sort_keys=True, indent=indent, ensure_ascii=False) + "\n"


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", *, sync: bool = True) -> Iterator[Any]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    The temp file's name carries the writer's pid, so the next writer of `path` removes the
    temp files of writers that died (SIGKILL, power cut) before their rename. Without `sync`
    the data is not synced to disk before the rename: the caller syncs it (`sync_paths`) before
    anything that must survive a power cut points at it (a stage's files, see stages.py).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        newline = None if "b" in mode else "\n"
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            failpoint(f"write:{path.name}")
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; outputs are meant to be read
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _remove_dead_temps(path: Path) -> None:
    """Remove `atomic_writer` temp files of `path` whose writing process no longer exists."""
    prefix = f".{path.name}."
    with os.scandir(path.parent) as entries:
        temps = [entry.name for entry in entries if entry.name.startswith(prefix) and entry.name.endswith(".tmp")]
    for name in temps:
        pid = name[len(prefix) :].partition(".")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.parent / name)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def fsync_path(path: Path) -> None:
    """Sync a file's data, or a folder's entries (the names of the files made in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, *, sync: bool = True) -> str:
    """Write `data` atomically and return its content hash."""
    with atomic_writer(path, "wb", sync=sync) as handle:
        handle.write(data)
    return sha256_bytes(data)


# A big file's written bytes are flushed to disk every this many bytes while the next ones are
# made, so the fsync that ends an atomic write has little left to wait for.
SYNC_BYTES = 64 << 20


def write_chunks_atomic(path: Path, chunks: Iterable[bytes], *, queued: int = 4, sync: bool = True) -> str:
    """Write byte chunks atomically and return their content hash."""
    digest = hashlib.sha256()
    with atomic_writer(path, "wb", sync=sync) as handle:
        _fan_out(chunks, [_synced_writer(handle), digest.update], queued)
    return "sha256:" + digest.hexdigest()


def _synced_writer(handle: Any) -> Callable[[bytes], None]:
    """`handle.write`, with the file's data flushed to disk every `SYNC_BYTES` on the writer's own
    thread: the disk writes behind the encoding instead of all at the final fsync (at 100k
    accounts 360.json's 470 MB took about 0.8 s of fsync at its end)."""
    unsynced = 0

    def write(chunk: bytes) -> None:
        nonlocal unsynced
        handle.write(chunk)
        unsynced += len(chunk)
        if unsynced >= SYNC_BYTES:
            handle.flush()
            os.fsync(handle.fileno())
            unsynced = 0

    return write


def _fan_out(chunks: Iterable[bytes], consumers: list[Callable[[bytes], object]], queued: int) -> None:
    """Hand every chunk to each consumer, each on its own thread, in order.

    File writes and sha256 release the GIL, so copying a chunk into the page cache, hashing
    it and producing the next one overlap. The first error in a consumer stops the producer
    and is raised here.
    """
    queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=queued) for _ in consumers]
    failed: list[BaseException] = []

    def drain(pending: queue.Queue[bytes | None], consume: Callable[[bytes], object]) -> None:
        while (chunk := pending.get()) is not None:
            if not failed:  # after a failure keep draining, so the producer never blocks
                try:
                    consume(chunk)
                except Exception as exc:  # any: re-raised in the caller's thread
                    failed.append(exc)

    threads = [
        threading.Thread(target=drain, args=(pending, consume), name="c360-chunk-consumer", daemon=True)
        for pending, consume in zip(queues, consumers, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        for chunk in chunks:
            if failed:
                break
            for pending in queues:
                pending.put(chunk)
    finally:
        for pending in queues:
            pending.put(None)
        for thread in threads:
            thread.join()
        # A producer left part-way (a consumer failed) stops now, not when the error's
        # traceback lets it go: a Polars sink feeding it (`sink_chunks`) would wait until then.
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if failed:
        raise failed[0]


class _SinkStopped(Exception):
    """Raised into a sink whose reader went away, so that it stops."""


def sink_chunks(sink: Callable[[Any], object], *, queued: int = 4) -> Iterator[bytes]:
    """The bytes `sink(writer)` writes into its file-like `writer` (a Polars `sink_*` method), as
    chunks, in order, while the sink runs on a thread of its own.

    A sink pushes its bytes; a document's writer pulls its chunks: the queue between them holds
    at most `queued` chunks, so the sink never runs ahead of the writing by more. An error in
    the sink is raised here; a reader that stops early stops the sink.
    """
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=queued)
    stopped = threading.Event()
    failed: list[BaseException] = []

    class Writer:
        def write(self, data: bytes) -> int:
            if stopped.is_set():
                raise _SinkStopped
            pending.put(bytes(data))
            return len(data)

        def flush(self) -> None:
            pass

    def run() -> None:
        try:
            sink(Writer())
        except BaseException as exc:  # any: re-raised in the reader's thread
            failed.append(exc)
        finally:
            pending.put(None)

    thread = threading.Thread(target=run, name="c360-sink", daemon=True)
    thread.start()
    try:
        while (chunk := pending.get()) is not None:
            yield chunk
    finally:
        stopped.set()
        while thread.is_alive():  # keep taking chunks, so the sink is never left waiting to put one
            with contextlib.suppress(queue.Empty):
                pending.get(timeout=0.05)
        thread.join()
    if failed:
        raise failed[0]


def write_text_atomic(path: Path, text: str, *, sync: bool = True) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"), sync=sync)


def write_json_atomic(path: Path, value: Mapping[str, Any] | list[Any], *, sync: bool = True) -> str:
    """Pretty, canonical JSON (sorted keys, 2-space indent, trailing newline)."""
    return write_text_atomic(path, canonical_json(value, indent=2), sync=sync)


# How many files and folders `sync_paths` syncs at a time.
SYNC_THREADS = 16


def sync_paths(paths: Iterable[Path]) -> None:
    """Sync each file or folder to disk, several at once.

    The file system commits its journal once for all the syncs waiting on it, so on ext4 a
    hundred small files synced together take a few journal commits where one by one they took
    a hundred (about 1 ms a file against 7, measured on this project's machine).
    """
    pending = list(paths)
    if len(pending) <= 1:
        for path in pending:
            fsync_path(path)
        return
    with ThreadPoolExecutor(min(SYNC_THREADS, len(pending)), thread_name_prefix="c360-sync") as pool:
        for _ in pool.map(fsync_path, pending):
            pass


# Between two items of the streamed object or array, each on a line of its own at depth 4
# (see `write_json_stream_text`).
ITEM_SEPARATOR = ",\n    "


def write_json_stream(
    path: Path,
    header: Mapping[str, Any],
    streamed_key: str,
    items: Iterator[tuple[str, Any]],
) -> str:
    """Write `{**header, streamed_key: dict(items)}` one item at a time, so a million accounts
    never have to sit in memory as one Python object.

    The layout: the envelope as `write_json_atomic` writes it (sorted keys, 2-space indent), and
    each item one line of compact canonical JSON (`"key": {...}` at depth 4), as 360.json writes
    its rows: a line per account for line tools, `jq` reads the whole, and 100k accounts'
    health.json is 188 MB instead of 323. `items` must come sorted by key.
    """
    entries = (joined_items([entry_text(key, value)]) for key, value in items)
    return write_json_stream_text(path, header, streamed_key, entries)


def entry_text(key: str, value: Any) -> str:
    """One item of a streamed object: `"key": value`, the value compact canonical JSON."""
    return json.dumps(key, ensure_ascii=False) + ": " + canonical_json(value)


def joined_items(texts: list[str]) -> bytes:
    """One chunk for `write_json_stream_text` from item texts."""
    return ITEM_SEPARATOR.join(texts).encode("utf-8")


def write_json_stream_text(
    path: Path,
    header: Mapping[str, Any],
    streamed_key: str,
    item_chunks: Iterator[bytes],
    *,
    array: bool = False,
) -> str:
    """`write_json_stream` with the items already encoded: `"key": value` texts (the value
    compact canonical JSON), sorted by key, so a columnar encoder can write a chunk at a time. Each chunk
    is UTF-8 text of one or more items joined by `ITEM_SEPARATOR` (`joined_items`); an empty
    chunk holds no item. With `array`, the streamed value is a JSON array and the texts are
    its items, in order.
    """
    return write_chunks_atomic(path, json_stream(header, streamed_key, item_chunks, array=array))


def json_stream(
    header: Mapping[str, Any], streamed_key: str, item_chunks: Iterator[bytes], *, array: bool = False
) -> Iterator[bytes]:
    """The bytes `write_json_stream_text` writes, as chunks (to write them somewhere else)."""
    if streamed_key in header:
        raise ValueError(f"{streamed_key!r} is both streamed and in the header")
    return _stream_bytes(header, streamed_key, item_chunks, "[]" if array else "{}")


def _stream_bytes(
    header: Mapping[str, Any], streamed_key: str, item_chunks: Iterator[bytes], brackets: str
) -> Iterator[bytes]:
    opening, closing = brackets[0], brackets[1]
    yield b"{"
    for position, key in enumerate(sorted([*header, streamed_key])):
        yield (("," if position else "") + "\n  " + json.dumps(key, ensure_ascii=False) + ": ").encode("utf-8")
        if key != streamed_key:
            yield _indented(header[key], 2).encode("utf-8")
            continue
        first = True
        for chunk in item_chunks:
            if chunk:
                yield (opening + "\n    " if first else ITEM_SEPARATOR).encode("utf-8")
                yield chunk
                first = False
        yield (brackets if first else "\n  " + closing).encode("utf-8")
    yield b"\n}\n"


def _indented(value: Any, depth: int) -> str:
    text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    return text.replace("\n", "\n" + " " * depth)
