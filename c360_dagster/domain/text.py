"""Text that lands in reports: escaping for Markdown, safe file names, number formatting, templates.

Every report escapes input text through these helpers, so a name with `|`, a newline,
`<script>` or `=HYPERLINK(...)` cannot break a table, inject HTML or a spreadsheet formula,
and a right-to-left override or a zero-width character cannot disguise what it says.
"""

from __future__ import annotations

import decimal
import difflib
import functools
import re
import unicodedata
from typing import Any

import jinja2

from c360_dagster.domain.errors import C360Error

_WHITESPACE_RUN = re.compile(r"\s+")
# Markdown punctuation that can start emphasis, code, links, tables or escapes inline.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# A cell starting with one of these is run as a formula when pasted into a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_FILENAME = 64


def visible_text(value: Any) -> str:
    """Input text with every invisible format character shown as `<U+XXXX>`.

    Unicode "format" characters (category Cf) draw nothing yet change what a reader sees:
    bidi overrides and isolates (U+202A-202E, U+2066-2069, U+200E/F) reorder a line, so
    `invoice` + U+202E + `gpj.exe` displays as `invoiceexe.jpg`; zero-width characters (U+200B-200D,
    U+2060, U+FEFF) make two different names look alike. Every report passes input text
    through here, so such a character stays visible instead of acting.
    """
    text = "" if value is None else str(value)
    if text.isascii():  # the common case, and no ASCII character is a format character
        return text
    return "".join(f"<U+{ord(ch):04X}>" if unicodedata.category(ch) == "Cf" else ch for ch in text)


def md_text(value: Any) -> str:
    """Input text made safe for Markdown prose: one line, HTML and Markdown markup neutralised."""
    if value is None:
        return ""
    text = _WHITESPACE_RUN.sub(" ", visible_text(value)).strip()
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    # A leading `#`, `>` (already an entity) or list marker would turn prose into structure.
    return "\\" + text if text[:1] in ("#", "+", "-", "=") else text


def md_cell(value: Any) -> str:
    """A value made safe for a Markdown table cell (numbers pass through unchanged)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = _WHITESPACE_RUN.sub(" ", visible_text(value)).strip()
    if text.startswith(_FORMULA_START):
        text = "'" + text  # the OWASP defence against CSV/formula injection
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def safe_filename(value: Any) -> str:
    """A file name made only of `[A-Za-z0-9._-]`, never hidden, never empty, at most 64 chars."""
    name = _UNSAFE_FILENAME_CHARS.sub("_", str(value)).lstrip(".")[:MAX_FILENAME]
    return name or "_"


def close_matches(account_id: str, known_ids: list[str], limit: int = 3) -> list[str]:
    """Known ids that look like `account_id` (case-insensitive), best first, for "did you mean"."""
    by_folded: dict[str, str] = {}
    for known in sorted(known_ids):
        by_folded.setdefault(known.casefold(), known)
    matches = difflib.get_close_matches(account_id.casefold(), list(by_folded), n=limit, cutoff=0.6)
    return [by_folded[match] for match in matches]


def did_you_mean(account_id: str, known_ids: list[str]) -> str:
    """`; did you mean A, B?` when some known ids look alike, else nothing."""
    hint = close_matches(account_id, known_ids)
    return f"; did you mean {', '.join(hint)}?" if hint else ""


def unknown_account(account_id: str, known_ids: list[str]) -> C360Error:
    """The error for an account id that is not in the data, suggesting close matches."""
    return C360Error(f"unknown account id {account_id!r}{did_you_mean(account_id, known_ids)}", code="UNKNOWN_ACCOUNT")


def format_amount(value: float | None, currency: str) -> str:
    """Every amount in every report: `150000.0, "USD"` → `USD 150,000`; None → `n/a`.

    Whole currency units (reports are read, the JSON keeps the cents), rounded half up on the
    decimal the value prints as, so 0.5 never rounds to even and output never depends on binary noise.
    """
    if value is None:
        return "n/a"
    units = decimal.Decimal(repr(float(value))).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP)
    return f"{currency} {units + 0:,}"  # + 0 turns -0 into 0


def fmt_number(value: float | None) -> str:
    """At most two decimals, no trailing zeros: `70.0` → `70`, `41.666` → `41.67`; None → `n/a`."""
    if value is None:
        return "n/a"
    text = f"{round(float(value), 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def plural(count: int, word: str) -> str:
    """`1 event`, `3 events`."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def fmt_percent(value: float | None, decimals: int = 0) -> str:
    """`0.25` → `25%`; None → `n/a`."""
    if value is None:
        return "n/a"
    return f"{value * 100:.{decimals}f}%"


@functools.cache
def _environment() -> jinja2.Environment:
    # Markdown, not HTML: no autoescape; templates escape input text explicitly with the filters.
    # `finalize` runs on every printed value, so no template can print a spoofing character.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("c360_dagster", "templates"),
        autoescape=False,
        finalize=lambda value: visible_text(value) if isinstance(value, str) else value,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        md_cell=md_cell,
        md_text=md_text,
        money=format_amount,
        number=fmt_number,
        percent=fmt_percent,
    )
    return env


def render_template(name: str, **context: Any) -> str:
    """Render a package template with the escaping and number filters available."""
    return _environment().get_template(name).render(**context)
