"""Read a folder of exported customer data into a validated Customer 360 view (docs/inputs.md).

Every file is read as text first, then parsed and checked column by column with Polars
expressions, so a million accounts cost a few vectorised passes, not a Python loop per row.

Row numbers in errors: CSV rows count from 1 after the header, JSON Lines rows are the
1-based line, and JSON rows are the 0-based array index, as docs/inputs.md says. CSV syntax errors are reported on the physical line's row, which differs only
after a quoted value spanning several lines.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import queue
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import duckdb
import polars as pl

from c360_dagster.domain.core.errors import InputError
from c360_dagster.domain.core.scratch import scratch
from c360_dagster.domain.core.text import visible_text
from c360_dagster.domain.ingest.entities import ENTITIES, EntitySpec, FieldSpec
from c360_dagster.domain.ingest.integrity import Rule, contract_rules, referenced_columns, run_integrity_checks
from c360_dagster.domain.ingest.view import Customer360, empty_table
from c360_dagster.domain.ingest.view_json import customer_360_document

FORMATS = ("csv", "json", "jsonl")
ROW = "__row"  # the row number the user sees, carried beside the data
T = TypeVar("T")

# docs/inputs.md "Text and limits": bounds that keep a hostile file from exhausting memory.
MAX_FIELD_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
# C0 and C1 control characters and DEL, except tab, LF and CR (which only a quoted CSV field
# or a JSON string can hold: anywhere else they end the line).
_CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
# The same in a UTF-8 file's bytes: C0 and DEL are single bytes, C1 is \xc2 then \x80-\x9f.
_NOT_C0_OR_DEL = bytes(b for b in range(256) if not re.fullmatch(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", bytes([b])))
_C1_BYTES = re.compile(rb"\xc2[\x80-\x9f]")

_DATE_SHAPE = r"^\d{4}-\d{2}-\d{2}$"
_INT_SHAPE = r"^[+-]?\d+$"
_DECIMAL_SHAPE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def read_customer_360(fixtures_dir: Path | str, as_of: dt.date | None = None) -> Customer360:
    """Load, validate and type every entity file in `fixtures_dir`; raise InputError on the first defect."""
    inputs = ValidatedInputs(fixtures_dir, as_of)
    tables = dict(inputs)
    return Customer360(as_of=inputs.as_of, tables=tables, source_hashes=inputs.source_hashes, warnings=inputs.warnings)


class ValidatedInputs:
    """The entity files of an input folder, validated one file at a time.

    Iterating yields (entity, typed table) in entity order, an absent optional file as an empty
    table, and raises the first defect of each file as it comes to it, so the defects and their
    order are those of one whole-book load. Of each table it keeps (in `kept`) only the columns
    later files' rules look up (`integrity.referenced_columns`) plus those `keep` asks for, so a
    consumer that writes and drops each table holds about one file at a time, not the book.
    Once iterated, `source_hashes`, `warnings`, `counts` and `as_of` describe the whole input.
    """

    def __init__(
        self, folder: Path | str, as_of: dt.date | None = None, keep: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"input folder {self.folder} is a file; give the folder that holds accounts and subs")
        if not self.folder.is_dir():
            raise InputError(f"input folder {self.folder} not found")
        self.sources = find_sources(self.folder)
        kept_columns = {name: set(columns) for name, columns in referenced_columns().items()}
        for name, columns in (keep or {}).items():
            kept_columns.setdefault(name, set()).update(columns)
        self._kept_columns = kept_columns
        self.kept: dict[str, pl.DataFrame] = {}
        self.source_hashes: dict[str, str] = {}
        self.warnings: tuple[str, ...] = ()
        self.counts: dict[str, int] = {}
        self._as_of = as_of
        self._latest_usage_end: dt.date | None = None  # docs/inputs.md "Time": as_of's first choice
        self._latest_dates: list[dt.date] = []  # each date column's latest value: the fallback

    def __iter__(self) -> Iterator[tuple[str, pl.DataFrame]]:
        present = [(spec, self.sources[name]) for name, spec in ENTITIES.items() if name in self.sources]
        warnings: list[str] = []
        source_hashes: dict[str, str] = {}
        # A thread reads (and hashes) the files in row batches with DuckDB, a few batches ahead,
        # while this one validates them with Polars; both release the GIL. Defects are still
        # raised in entity order: each file's marks where it ends.
        stream = _read_ahead(_raw_stream(present))
        for name, spec in ENTITIES.items():
            if name in self.sources:
                path = self.sources[name]
                extra, source_hashes[path.name], controls = cast(tuple[list[str], str, bool], next(stream))
                warnings += [
                    f"file {path.name}: column {column} is not in the contract and was ignored" for column in extra
                ]
                table = _validate(path, spec, _file_batches(stream), self.kept, controls=controls)
            else:
                table = empty_table(name)
            self._note(name, table)
            yield name, table
        self.source_hashes = dict(sorted(source_hashes.items()))
        self.warnings = tuple(sorted(warnings))

    def _note(self, name: str, table: pl.DataFrame) -> None:
        """Keep what the rest of the input and the whole-input summary need of `table`."""
        self.counts = dict(sorted({**self.counts, name: table.height}.items()))
        if name in self._kept_columns:
            self.kept[name] = table.select(sorted(self._kept_columns[name]))
        dates = [f.name for f in ENTITIES[name].fields if f.type == "date"]
        self._latest_dates += [latest for latest in table.select(pl.col(dates).max()).row(0) if latest is not None]
        if name == "usage":
            self._latest_usage_end = table["window_end"].max()  # type: ignore[assignment]  # a date column's max is a date or None

    @property
    def as_of(self) -> dt.date:
        """The `as_of` given, else docs/inputs.md "Time": the latest usage window_end, else the latest date in any input."""
        if self._as_of:
            return self._as_of
        latest = self._latest_usage_end or max(self._latest_dates, default=None)
        if latest is None:
            raise InputError("as_of cannot be derived: the inputs hold no dates; pass as_of explicitly")
        return latest


def load_customer_360(fixtures_dir: Path | str, as_of: dt.date | str | None = None) -> dict[str, Any]:
    """The public API: the 360.json document (as_of, counts, checks, hashes, warnings, records)."""
    if isinstance(as_of, str):
        try:
            as_of = dt.date.fromisoformat(as_of)
        except ValueError:
            raise InputError(f"as_of: expected a date YYYY-MM-DD, got {as_of}") from None
    view = read_customer_360(fixtures_dir, as_of=as_of)
    return customer_360_document(view, run_integrity_checks(view, contract_enforced=True))


def find_sources(folder: Path) -> dict[str, Path]:
    """The input file of each entity in `folder`, by entity; InputError for a missing or doubled one."""
    sources = {}
    for name, spec in ENTITIES.items():
        found = [folder / f"{name}.{ext}" for ext in FORMATS if (folder / f"{name}.{ext}").is_file()]
        if len(found) > 1:
            raise InputError(
                f"{' and '.join(p.name for p in found)} both hold {name}: keep exactly one format per entity",
                file=found[0].name,
            )
        if found:
            sources[name] = found[0]
        elif spec.required:
            raise InputError(
                f"required file {name}.csv (or {name}.json / {name}.jsonl) not found in {folder}", file=f"{name}.csv"
            )
    return sources


# Rows read and validated at a time: a file's text and the checks over it are held one batch
# at a time; only its typed table is held whole (docs/performance.md "The split's memory").
BATCH_ROWS = 131_072
_END_OF_FILE = None  # in `_raw_stream`, after a file's batches


def _raw_stream(
    present: list[tuple[EntitySpec, Path]],
) -> Iterator[tuple[list[str], str, bool] | pl.DataFrame | None]:
    """For each file in turn: (its extra column names, its hash, whether its values may hold
    control characters), its raw batches, then `_END_OF_FILE`."""
    for spec, path in present:
        batches, extra, (digest, controls) = _read_raw(path, spec)
        yield extra, digest, controls
        yield from batches
        yield _END_OF_FILE


def _file_batches(stream: Iterator[tuple[list[str], str, bool] | pl.DataFrame | None]) -> Iterator[pl.DataFrame]:
    """The raw batches of the file `stream` is at, up to its end (never reading into the next)."""
    while (batch := next(stream)) is not _END_OF_FILE:
        yield cast(pl.DataFrame, batch)


def _read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, made on a thread at most `depth` ahead of the consumer; an error making one is
    raised where that item would have come. A consumer that stops early stops the thread."""
    pending: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                pending.put((item, None))
            pending.put((done, None))
        except Exception as exc:  # any: raised in the consumer's thread, in order
            pending.put((done, exc))

    thread = threading.Thread(target=produce, name="c360-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = pending.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # take what it made, so a put waiting for room returns
            with contextlib.suppress(queue.Empty):
                pending.get(timeout=0.05)


def _read_raw(path: Path, spec: EntitySpec) -> tuple[Iterator[pl.DataFrame], list[str], tuple[str, bool]]:
    """The entity's columns as text (empty = null) plus the row number, in batches of at most
    BATCH_ROWS (at least one, maybe empty); the extra column names; the file's hash and whether
    its values may hold control characters (`_scan_lines_and_hash`).

    A CSV file's rows are read as the batches are taken, so a defect past the header is raised then.
    """
    fmt = path.suffix[1:]
    scanned = _scan_lines_and_hash(path, fmt)
    if path.stat().st_size == 0:  # docs/inputs.md: no rows, unless the entity is required
        if spec.required:
            raise InputError("the file is empty: expected a header row naming the columns", file=path.name)
        return iter([pl.DataFrame(schema=dict.fromkeys(spec.field_names, pl.Utf8)).with_row_index(ROW)]), [], scanned
    if fmt == "csv":
        columns, batches = _read_csv(path)
    else:
        frame = _read_json(path, lines=fmt == "jsonl")
        # An empty JSON array names no columns, and lacks none.
        columns = frame.columns if frame.height else list(spec.field_names)
        batches = (frame.slice(start, BATCH_ROWS) for start in range(0, frame.height, BATCH_ROWS))
    missing = [f.name for f in spec.fields if f.name not in columns and not f.optional]

    def as_text(batch: pl.DataFrame, start: int) -> pl.DataFrame:
        return batch.select(
            pl.col(f.name).replace("", None)
            if f.name in columns
            else pl.repeat(None, batch.height, dtype=pl.Utf8).alias(f.name)
            for f in spec.fields
        ).with_row_index(ROW, offset=start)

    def numbered() -> Iterator[pl.DataFrame]:
        start = first = 0 if fmt == "json" else 1
        for batch in batches:
            yield as_text(batch, start)
            start += batch.height
        if missing:  # once every row is read, as a whole-file read did: a broken CSV row comes first
            raise InputError(
                f"missing required column (the file has: {', '.join(columns) or 'no columns'})",
                file=path.name,
                column=missing[0],
            )
        if start == first:  # no rows: one empty batch all the same, which types the empty table
            yield as_text(pl.DataFrame(schema=dict.fromkeys(columns, pl.Utf8)), start)

    return numbered(), sorted(set(columns) - set(spec.field_names)), scanned


def _scan_lines_and_hash(path: Path, fmt: str) -> tuple[str, bool]:
    """The file's sha256 and whether its values may hold control characters, refusing a
    physical line longer than MAX_LINE_BYTES on the way.

    The file is read in chunks of MAX_LINE_BYTES: a line that starts and ends inside one chunk
    is short enough, so only the run of bytes across chunk borders needs counting, and memory
    stays at one chunk however long a line is. A CSV file's values are its bytes, so one without
    a control character's bytes (tab, LF and CR aside) needs no per-value check for them: the
    byte scan costs a few percent of that check. JSON may escape one (\\u0000): always checked.
    """
    digest = hashlib.sha256()
    controls = fmt != "csv"
    with open(path, "rb") as handle:
        run = lines_before = offset = 0  # bytes since the last newline; newlines before this chunk
        last = b""  # the previous chunk's last byte: a C1 character may straddle the border
        while chunk := handle.read(MAX_LINE_BYTES):
            digest.update(chunk)
            if not controls:
                controls = bool(chunk.translate(None, _NOT_C0_OR_DEL)) or (
                    (b"\xc2" in chunk or last == b"\xc2") and bool(_C1_BYTES.search(last + chunk))
                )
                last = chunk[-1:]
            first = chunk.find(b"\n")
            if run + (len(chunk) if first < 0 else first) > MAX_LINE_BYTES:
                raise _long_line_error(handle, path, fmt, line=lines_before + 1, start=offset - run)
            if first >= 0:
                lines_before += chunk.count(b"\n")
                run = len(chunk) - chunk.rfind(b"\n") - 1
            else:
                run += len(chunk)
            offset += len(chunk)
    return "sha256:" + digest.hexdigest(), controls


def _long_line_error(handle: Any, path: Path, fmt: str, *, line: int, start: int) -> InputError:
    """The error for the over-long line starting at byte `start`, from its first MAX_LINE_BYTES only."""
    handle.seek(start)
    prefix = handle.read(MAX_LINE_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff")
    limit = f"a line of at most {MAX_LINE_BYTES} bytes (1 MiB), got a longer one"
    if fmt == "csv":
        if line == 1:
            return InputError(f"the header row: expected {limit}", file=path.name)
        header = next(csv.reader([_first_line(path)]), [])
        index, field_too_long = _csv_field_index(prefix)
        if field_too_long:
            limit = f"a value of at most {MAX_FIELD_BYTES} bytes (64 KiB), got a longer one"
        column = header[index] if index < len(header) else f"field {index + 1}"
        return InputError(f"expected {limit}", file=path.name, row=line - 1, column=column)
    keys = re.findall(r'(?<!\\)"((?:[^"\\]|\\.){1,200})"\s*:', prefix)  # the last key named before the end
    row = line if fmt == "jsonl" else None
    where = "" if row else f" (line {line})"
    return InputError(f"expected {limit}{where}", file=path.name, row=row, column=keys[-1] if keys else None)


def _first_line(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle.readline(MAX_LINE_BYTES).decode("utf-8-sig", errors="replace").rstrip("\r\n")


def _csv_field_index(prefix: str) -> tuple[int, bool]:
    """(0-based field, True) of the first field longer than MAX_FIELD_BYTES in a CSV line's
    prefix, else (the field the prefix ends in, False)."""
    index, quoted, field_start = 0, False, 0
    for match in re.finditer(r'[",]', prefix):  # only quotes and commas change the field; "" toggles twice
        if match.group() == '"':
            quoted = not quoted
        elif not quoted:
            if len(prefix[field_start : match.start()].encode("utf-8")) > MAX_FIELD_BYTES:
                return index, True
            index, field_start = index + 1, match.end()
    return index, len(prefix[field_start:].encode("utf-8")) > MAX_FIELD_BYTES


def _read_csv(path: Path) -> tuple[list[str], Iterator[pl.DataFrame]]:
    """The header's column names, and the rows as text in batches, read as they are taken."""
    with open(path, "rb") as handle:
        first_line = handle.readline()
    try:
        header_text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the header row is not valid UTF-8", file=path.name) from None
    header = next(csv.reader([header_text.rstrip("\r\n")]), [])
    if not header:
        raise InputError("the file is empty: expected a header row naming the columns", file=path.name)
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise InputError("the header names this column more than once", file=path.name, column=duplicates[0])
    # Positional names keep any header text away from DuckDB's SQL; strict mode enforces RFC 4180.
    positional = {f"c{i}": "VARCHAR" for i in range(len(header))}

    def batches() -> Iterator[pl.DataFrame]:
        try:
            with scratch() as con:
                con.execute("SET enable_progress_bar = false")
                reader = con.sql(
                    "SELECT * FROM read_csv($path, columns=$columns, header=true, auto_detect=false, delim=',',"
                    " quote='\"', escape='\"', strict_mode=true, null_padding=false, encoding='utf-8')",
                    params={"path": str(path), "columns": positional},
                ).to_arrow_reader(BATCH_ROWS)
                for batch in reader:
                    yield cast(pl.DataFrame, pl.from_arrow(batch)).rename(dict(zip(positional, header, strict=True)))
        except duckdb.Error as exc:
            raise _csv_error(path, str(exc)) from None

    return header, batches()


def _csv_error(path: Path, message: str) -> InputError:
    """Translate DuckDB's CSV error into the file's row and a plain reason."""
    line = re.search(r"CSV Error on Line: (\d+)", message)
    row = int(line.group(1)) - 1 if line else None
    columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
    if "unicode" in message.lower() or "utf-8" in message.lower():
        reason = "not valid UTF-8 (the file must be UTF-8 encoded)"
    elif columns:
        reason = f"broken CSV: expected {columns.group(1)} fields as in the header, found {columns.group(2)}"
    elif "quote" in message.lower():
        reason = (
            "broken CSV quoting: a quoted value is not closed or has text after its closing quote"
            ' (write a quote inside a quoted value as "")'
        )
    else:
        reason = "not valid CSV (RFC 4180): " + message.splitlines()[0]
    return InputError(reason, file=path.name, row=row)


def _read_json(path: Path, *, lines: bool) -> pl.DataFrame:
    data = path.read_bytes()
    text = _decode(path, data, lines=lines)
    body = text.lstrip("\ufeff \t\r\n")
    if not lines and not body.startswith("["):
        raise InputError("expected a JSON array of objects ([{...}, ...])", file=path.name)
    blank = re.search(r"(?:^|\n)[ \t\r]*(?=\n)", text.rstrip()) if lines else None
    if blank:
        # Polars skips blank lines, which would shift every row number after them.
        row = text[: blank.end()].count("\n") + 1
        raise InputError("blank line in JSON Lines: write one object per line", file=path.name, row=row)
    if not body.strip() or (not lines and re.fullmatch(r"\[\s*\]\s*", body)):
        return pl.DataFrame()
    reader = pl.read_ndjson if lines else pl.read_json
    try:
        # Pass 1 finds every key of every object; pass 2 reads them all as text.
        keys = reader(io.BytesIO(data), infer_schema_length=None).columns
        frame = reader(io.BytesIO(data), schema=dict.fromkeys(keys, pl.Utf8))
    except pl.exceptions.PolarsError as exc:
        raise _json_error(path, text, lines=lines, fallback=str(exc)) from None
    return frame


def _decode(path: Path, data: bytes, *, lines: bool) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        if lines:
            raise InputError("not valid UTF-8 (the file must be UTF-8 encoded)", file=path.name, row=line) from None
        where = f" at line {line}, byte {exc.start}"
        raise InputError(f"not valid UTF-8{where} (the file must be UTF-8 encoded)", file=path.name) from None


def _json_error(path: Path, text: str, *, lines: bool, fallback: str) -> InputError:
    """Find what Polars refused, with Python's JSON parser for the position (error path only)."""
    if lines:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                reason = f"not valid JSON at line {number}, column {exc.colno}: {exc.msg}"
                return InputError(reason, file=path.name, row=number)
            problem = _object_problem(value)
            if problem:
                return InputError(problem[1], file=path.name, row=number, column=problem[0])
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            return InputError(
                f"not valid JSON at line {exc.lineno}, column {exc.colno} (character {exc.pos}): {exc.msg}",
                file=path.name,
            )
        for index, value in enumerate(values):
            problem = _object_problem(value)
            if problem:
                return InputError(problem[1], file=path.name, row=index, column=problem[0])
    return InputError(f"not readable as JSON rows: {fallback.splitlines()[0]}", file=path.name)


def _object_problem(value: Any) -> tuple[str | None, str] | None:
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {json.dumps(value)[:60]}"
    for key, item in value.items():
        if isinstance(item, dict | list):
            kind = "object" if isinstance(item, dict) else "array"
            return key, f"expected a plain value (text, number, true/false or null), got a JSON {kind}"
    return None


def _validate(
    path: Path,
    spec: EntitySpec,
    batches: Iterator[pl.DataFrame],
    tables: dict[str, pl.DataFrame],
    *,
    controls: bool,
) -> pl.DataFrame:
    """Parse and check every column; raise the first defect by row, then column, then rule
    (`controls`: whether the file may hold control characters, else their rule is left out).

    The rules that judge a row alone are checked batch by batch, on its text and typed values;
    those comparing rows (`Rule.beyond_row`) once the whole file is typed. Each rule's first
    offending row is the same either way, so the defect raised is that of one whole-file pass.
    """
    csv_bools = path.suffix == ".csv"
    parsed = [f for f in spec.fields if f.type in _PARSE_EXPECTED]
    # `given_x` beside the parsed `x` tells a text that did not parse from an empty cell.
    parse_rules = [
        Rule(
            "values_in_range",
            f.name,
            pl.col(f"given_{f.name}") & pl.col(f.name).is_null(),
            _parse_expected(f, csv_bools),
        )
        for f in parsed
    ]

    def rules(typed: pl.DataFrame) -> list[Rule]:
        return _text_rules(spec, controls=controls) + parse_rules + contract_rules(spec.file, typed, tables)

    firsts: dict[int, int] = {}  # rule position -> its first offending row
    typed_batches: list[pl.DataFrame] = []
    for raw in batches:
        typed = raw.select(ROW, *(_typed(f, csv_bools=csv_bools) for f in spec.fields))
        if not typed_batches:  # made once: a rule looking another file up holds a copy of its ids
            row_rules = rules(typed.clear())
        checked = typed.hstack(raw.select(pl.col(f.name).is_not_null().alias(f"given_{f.name}") for f in parsed))
        _note_first_failures(firsts, checked, row_rules, beyond_row=False)
        typed_batches.append(typed)
    whole = pl.concat(typed_batches)
    del typed_batches, typed
    checked_rules = rules(whole)
    _note_first_failures(firsts, whole, checked_rules, beyond_row=True)
    if firsts:
        # An unparseable text comes before the rules judging its (null) parsed value: lower index.
        column_order = {name: position for position, name in enumerate(spec.field_names)}
        row, position = min(
            ((row, position) for position, row in firsts.items()),
            key=lambda found: (found[0], column_order[checked_rules[found[1]].column], found[1]),
        )
        raise _rule_error(path, spec, row, checked_rules[position])
    return whole.drop(ROW).sort(list(spec.key)).cast(spec.polars_schema)  # type: ignore[arg-type]  # Polars types cast()'s dict keys as an invariant union


def _text_rules(spec: EntitySpec, *, controls: bool) -> list[Rule]:
    """docs/inputs.md "Text and limits" on every text field (other types must parse, which refuses both);
    without `controls` (the file holds no control character) the rule refusing them is left out."""
    rules = []
    for field in spec.fields:
        if field.type in ("str", "enum"):
            text = pl.col(field.name)
            too_long = (text.str.len_bytes() > MAX_FIELD_BYTES).fill_null(False)
            rules.append(
                Rule("values_in_range", field.name, too_long, f"a value of at most {MAX_FIELD_BYTES} bytes (64 KiB)")
            )
            if controls:
                control = text.str.contains(_CONTROL_CHARS).fill_null(False)
                rules.append(
                    Rule("values_in_range", field.name, control, "text without control characters (NUL, ESC, ...)")
                )
    return rules


def _note_first_failures(firsts: dict[int, int], frame: pl.DataFrame, rules: list[Rule], *, beyond_row: bool) -> None:
    """Note in `firsts` the first offending row of every broken rule whose `beyond_row` is
    `beyond_row` (by its position in `rules`), if before the one noted, in one pass over `frame`."""
    judged = [(position, rule) for position, rule in enumerate(rules) if rule.beyond_row == beyond_row]
    if frame.is_empty() or not judged:
        return
    found = frame.select(pl.col(ROW).filter(rule.failing).min().alias(f"r{position}") for position, rule in judged)
    for (position, _), row in zip(judged, found.row(0), strict=True):
        if row is not None and row < firsts.get(position, row + 1):
            firsts[position] = row


def _rule_error(path: Path, spec: EntitySpec, row: int, rule: Rule) -> InputError:
    values = _raw_row(path, spec, row)
    shown = "".join(f" ({values[column] if values[column] is not None else 'empty'})" for column in rule.shows)
    return InputError(
        f"expected {rule.expected}{shown}, got {_show(values[rule.column])}",
        file=path.name,
        row=row,
        column=rule.column,
    )


def _raw_row(path: Path, spec: EntitySpec, row: int) -> dict[str, Any]:
    """The text of one row of the file, read again (only a defect's message needs it)."""
    batches, _, _ = _read_raw(path, spec)
    for batch in batches:
        found = batch.filter(pl.col(ROW) == row)
        if found.height:
            return found.row(0, named=True)
    raise ValueError(f"{path.name} has no row {row}")


def _show(value: str | None) -> str:
    if value is None:
        return "nothing"
    text = value if len(value) <= 80 else value[:77] + "..."
    if re.fullmatch(r"[\w.:@+/-]+", text):
        return text
    # Quoted, with control characters escaped and invisible ones shown, so the terminal shows what the file holds.
    quoted = json.dumps(visible_text(text), ensure_ascii=False)
    return re.sub(_CONTROL_CHARS, lambda match: f"\\u{ord(match.group()):04x}", quoted)


_PARSE_EXPECTED = {
    "date": "a date YYYY-MM-DD (a real calendar date)",
    "int": "an integer",
    "decimal": "a decimal number",
    "bool": "true or false",
}


def _parse_expected(spec: FieldSpec, csv_bools: bool) -> str:
    return _PARSE_EXPECTED[spec.type] + (" (or 1/0)" if csv_bools and spec.type == "bool" else "")


def _typed(spec: FieldSpec, *, csv_bools: bool) -> pl.Expr:
    """The column parsed to its contract type; null where the text does not parse."""
    text = pl.col(spec.name)
    if spec.type == "date":
        value = text.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        # strptime also takes `2024-1-5`; year 0 has no calendar date in Python.
        return pl.when(text.str.contains(_DATE_SHAPE) & (value.dt.year() > 0)).then(value).alias(spec.name)
    if spec.type == "int":
        return pl.when(text.str.contains(_INT_SHAPE)).then(text.cast(pl.Int64, strict=False)).alias(spec.name)
    if spec.type == "decimal":
        value = pl.when(text.str.contains(_DECIMAL_SHAPE)).then(text.cast(pl.Float64, strict=False))
        return pl.when(value.is_finite()).then(value).alias(spec.name)
    if spec.type == "bool":
        word = text.str.to_lowercase()
        true, false = (["true", "1"], ["false", "0"]) if csv_bools else (["true"], ["false"])
        return pl.when(word.is_in(true)).then(True).when(word.is_in(false)).then(False).alias(spec.name)
    return text
