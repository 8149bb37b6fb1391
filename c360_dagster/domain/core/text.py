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
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import markupsafe

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.words import fmt_date, tier_words

if TYPE_CHECKING:
    import jinja2

_WHITESPACE_RUN = re.compile(r"\s+")
# Markdown punctuation that can start emphasis, code, links, tables or escapes inline.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_INTRAWORD_UNDERSCORE = re.compile(r"(?<=[^\W_])\\_(?=[^\W_])")
# What `md_escape` would change in ASCII text: whitespace but a single space, an entity's
# character, Markdown punctuation, or a leading `#` or formula character. ASCII text without
# any comes back as it is (most of a report's values), without the escaping's five passes.
_ASCII_TO_ESCAPE = re.compile(r"[\t\n\x0b\x0c\r\x1c-\x1f&<>\\`*_\[\]|~]|  |^ *[#=+\-@]")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9][0-9,.]*%?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
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


def md_escape(value: Any) -> str:
    """Text made safe to print anywhere in a Markdown report, prose or table cell.

    One line (each whitespace run one space); `&`, `<`, `>` as entities; Markdown punctuation
    that could start emphasis, code, links or a table cell escaped (an `_` inside a word, as in `mid_market`, is not: Markdown
    never reads it as emphasis, so it stays readable as plain text); a leading `#` escaped so
    prose stays prose; a value starting with `=`, `+`, `-` or `@` prefixed with `'` (the OWASP
    defence against formula injection when a table is pasted into a spreadsheet) unless it is
    a plain number such as `-2` or `+3.5%`. Numbers pass through; None prints nothing.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)
    if value.isascii() and not _ASCII_TO_ESCAPE.search(value):
        return value
    return _escaped(value)


def _escaped(value: str) -> str:
    """`md_escape` of text, every rule applied."""
    text = _WHITESPACE_RUN.sub(" ", visible_text(value))  # not stripped: `", "` prints its space
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _INTRAWORD_UNDERSCORE.sub("_", _MARKDOWN_SPECIAL.sub(r"\\\1", text))
    body = text.lstrip(" ")
    space = text[: len(text) - len(body)]
    if body.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(body.rstrip(" ")):
        return f"{space}'{body}"
    return f"{space}\\{body}" if body.startswith("#") else text


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


# Evidence keys holding an amount, and the key of the currency it is in (the rest are counts, % and dates).
AMOUNT_CURRENCY = {
    "amount": "currency",
    "arr": "currency",
    "credits": "currency",
    "overdue_amount": "currency",
    "opp_amount": "opp_currency",
}


def evidence_text(evidence: Mapping[str, Any], leave_out: Collection[str] = ()) -> str:
    """Measured values in words, keys in order: `drop pct 35.5, recent avg active users 100`.

    Amounts print as `format_amount` does, in their currency (`overdue amount USD 150,000`); a
    list holds one entry per item, an entry with its own currency labelled by it:
    `by currency (EUR: arr EUR 50,000, ...; USD: ...)`, in parentheses, which no Markdown escapes. Keys in `leave_out` (and inside
    entries) are not shown.
    """
    currencies = {AMOUNT_CURRENCY[key] for key in evidence if key in AMOUNT_CURRENCY}
    pairs = []
    for key, value in sorted(evidence.items()):
        if key in currencies or key in leave_out:
            continue
        currency = evidence.get(AMOUNT_CURRENCY.get(key, ""))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and currency is not None:
            text = format_amount(value, currency)
        else:
            text = _evidence_value(value, leave_out)
        pairs.append(f"{key.replace('_', ' ')} {text}")
    return ", ".join(pairs)


def _evidence_value(value: Any, leave_out: Collection[str]) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return fmt_number(value)
    if isinstance(value, Mapping):
        text = evidence_text(value, leave_out)
        return f"{value['currency']}: {text}" if isinstance(value.get("currency"), str) else text
    if isinstance(value, (list, tuple)):
        return "(" + "; ".join(_evidence_value(item, leave_out) for item in value) + ")"
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):  # evidence keeps ISO dates; prose says them
        return fmt_date(value)
    return str(value)


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


def _finalize_markdown(value: Any) -> Any:
    """Every value a Markdown template prints is escaped, unless marked as Markdown already."""
    return value if isinstance(value, markupsafe.Markup) else md_escape(value)


def _finalize_markup(value: Any) -> Any:
    # Autoescape makes the value XML-safe afterwards; spoofing characters are shown first.
    return visible_text(value) if isinstance(value, str) and not isinstance(value, markupsafe.Markup) else value


@functools.cache
def _environment(markdown: bool = True) -> jinja2.Environment:
    """The one place templates are built: `.md.j2` escape for Markdown, the others (SVG) for XML.

    `finalize` runs on every printed value, so no template has to remember to escape input text
    and none can print a spoofing character; a template marks Markdown it built itself `| safe`.
    """
    import jinja2  # here, not at the top: c360:load, health and signals render no template

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("c360_dagster", "templates"),
        autoescape=not markdown,
        finalize=_finalize_markdown if markdown else _finalize_markup,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=format_amount, number=fmt_number, percent=fmt_percent, date=fmt_date, tier=tier_words)
    return env


def render_template(name: str, **context: Any) -> str:
    """Render a package template with its escaping and the number and date filters available."""
    return _environment(markdown=name.endswith(".md.j2")).get_template(name).render(**context)
