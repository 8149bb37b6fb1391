"""The two QBR decks as slide models: the customer's story and the account team's internal review.

Both renderers (python-pptx and the Markdown fallback) draw exactly these slides. Lists and
tables longer than a slide holds are split over continuation slides and, past a few, cut with
a pointer to the Markdown file that has every row; the sizes come from real font metrics
(`qbr_layout`), so what is on a slide fits it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from c360_dagster.domain.core.text import format_amount, visible_text
from c360_dagster.domain.core.words import MONTHS, fmt_date, fmt_label, renewal_odds, role_label, segment_label
from c360_dagster.domain.qbr.layout import Font, truncate, wrap
from c360_dagster.domain.qbr.models import Component, QbrContext, WeekPoint
from c360_dagster.domain.scoring.health import INSUFFICIENT_DATA, SCORED, STATUS_WORDS

CUSTOMER, REVIEW = "customer", "review"
NEXT_STEPS = 3  # the closing slide names the first few joint steps
MAX_PAGES = {CUSTOMER: 2, REVIEW: 3}  # continuation slides per list before the rest is cut
# Characters XML 1.0 cannot hold: python-pptx would fail on them, so they are dropped.
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_WHITESPACE_RUN = re.compile(r"\s+")
_FORMULA_START = ("=", "+", "-", "@")
COMPONENT_LABELS = {
    "adoption": "Adoption",
    "value": "Value From Features",
    "support": "Support Experience",
    "commercial": "Billing and Contract",
    "sentiment": "Satisfaction",
}


# --- formatting for people -------------------------------------------------------------------


def fmt_short_date(day: dt.date) -> str:
    """`15 Nov`: a chart's date axis label."""
    return f"{day.day} {MONTHS[day.month - 1]}"


def fmt_period(start: dt.date, end: dt.date) -> str:
    """`29 Jun – 27 Sep 2026`, the year once when both ends share it (and the month: `15 – 27 Sep 2026`)."""
    if (start.year, start.month) == (end.year, end.month):
        return f"{start.day} – {fmt_date(end)}"
    first = fmt_short_date(start) if start.year == end.year else fmt_date(start)
    return f"{first} – {fmt_date(end)}"


def span_name(ctx: QbrContext) -> str:
    """What the review covers, in words: `the quarter`, or `your first weeks` for an account
    whose first subscription started within the quarter (never a quarter it was not a customer for)."""
    return "your first weeks" if ctx.period_start > ctx.quarter_start else "the quarter"


def span_with_dates(ctx: QbrContext) -> str:
    """`the quarter (1 Jul – 27 Sep 2026)`: the span's name with its dates in brackets."""
    return f"{span_name(ctx)} ({fmt_period(ctx.period_start, ctx.as_of)})"


def _first_upper(text: str) -> str:
    """`Your first weeks (10 – 30 Jun 2024)`: `str.capitalize` would lower the month too."""
    return text[:1].upper() + text[1:]


def fmt_count(value: float | None) -> str:
    """`1,234`: a whole number with thousands separators."""
    return "n/a" if value is None else f"{round(value):,}"


def _plural(count: Any, noun: str) -> str:
    return f"{fmt_count(count)} {noun}{'' if count == 1 else 's'}"


def fmt_one(value: float | None) -> str:
    """A whole number, or one decimal when it has a fraction: `53`, `37.5`, `1,234.5`."""
    if value is None:
        return "n/a"
    rounded = round(float(value), 1)
    return f"{rounded:,.0f}" if rounded == int(rounded) else f"{rounded:,.1f}"


def fmt_pct(value: float | None) -> str:
    """A percentage already in percent: `53%`, `37.5%`."""
    return "n/a" if value is None else f"{fmt_one(value)}%"


def component_label(name: str) -> str:
    """`commercial` → `Billing and Contract`: a health component as both decks name it."""
    return COMPONENT_LABELS.get(name, fmt_label(name))


def fmt_customer_role(role: str) -> str:
    """A playbook's customer role (`Customer Executive Sponsor`) as the stakeholder table names the
    same person (`Executive Sponsor`): playbooks.yaml names them in `words.CONTACT_ROLE_WORDS`."""
    return fmt_label(role.removeprefix("Customer ").lower())


def slide_text(value: Any) -> str:
    """Input text made safe for a slide: one line, XML-safe, spoofing characters shown, no formula start."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = _WHITESPACE_RUN.sub(" ", visible_text(XML_INVALID.sub("", str(value)))).strip()
    return "'" + text if text.startswith(_FORMULA_START) else text


# --- the slide model -------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    kind: str  # line / bar
    title: str  # what the chart shows
    categories: tuple[str, ...]
    series: tuple[tuple[str, tuple[float, ...]], ...]
    x_title: str
    y_title: str
    labels: bool = False  # data labels on every point: where each value matters
    y_max: float | None = None


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    widths: tuple[float, ...]  # relative column widths


@dataclass(frozen=True)
class Tile:
    value: str
    label: str


@dataclass(frozen=True)
class Column:
    heading: str
    bullets: tuple[str, ...]


@dataclass(frozen=True)
class Slide:
    title: str
    subtitle: str | None = None  # the title slide only
    lead: str | None = None  # one sentence above the body: the slide's message
    bullets: tuple[str, ...] = ()
    tiles: tuple[Tile, ...] = ()
    columns: tuple[Column, ...] = ()
    table: Table | None = None
    chart: Chart | None = None
    note: str | None = None  # a pointer at the foot of the body (e.g. where the other rows are)
    more_in: str | None = field(default=None, compare=False)  # the file that holds every row


# --- geometry (points) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rect:
    left: float
    top: float
    width: float
    height: float

    @property
    def bottom(self) -> float:
        return self.top + self.height


@dataclass(frozen=True)
class Geometry:
    """Where things go on a slide of the deck's template, in points."""

    width: float = 960.0  # 13.333 in: 16:9
    height: float = 540.0
    title: Rect = Rect(36, 18, 888, 70)
    body: Rect = Rect(36, 100, 888, 386)
    footer: Rect = Rect(36, 502, 700, 24)
    number: Rect = Rect(840, 502, 84, 24)
    body_font: str = "Calibri"
    title_font: str = "Calibri"


INSET_X, INSET_Y = 7.2, 3.6  # a text frame's margins (0.1 in, 0.05 in)
SIZES = SimpleNamespace(
    title=30,
    title_min=16,
    subtitle=22,
    subtitle_min=12,
    lead=20,
    lead_min=14,
    body=18,
    body_min=12,
    table=14,
    tile_value=36,
    tile_value_min=16,
    tile_label=14,
    tile_label_min=10,
    heading=20,
    note=12,
    footer=10,
)
TILE_HEIGHT = 96.0
LEAD_GAP = 8.0
NOTE_HEIGHT = 2 * SIZES.note * 1.22 + 2 * INSET_Y
BULLET_INDENT = 18.0
PARAGRAPH_GAP = 6.0


def inner_width(width: float) -> float:
    return width - 2 * INSET_X


def body_regions(slide: Slide, geom: Geometry) -> dict[str, Rect]:
    """The body split into the slide's parts, top to bottom: lead, tiles, main part, note."""
    body = geom.body
    top, bottom = body.top, body.bottom
    regions = {}
    if slide.note or slide.more_in:
        regions["note"] = Rect(body.left, bottom - NOTE_HEIGHT, body.width, NOTE_HEIGHT)
        bottom -= NOTE_HEIGHT + 4
    if slide.lead:
        font = Font(geom.body_font, SIZES.lead)
        height = min(2, len(wrap(slide.lead, font, inner_width(body.width)))) * font.line_height + 2 * INSET_Y
        regions["lead"] = Rect(body.left, top, body.width, height)
        top += height + LEAD_GAP
    if slide.tiles:
        regions["tiles"] = Rect(body.left, top, body.width, TILE_HEIGHT)
        top += TILE_HEIGHT + LEAD_GAP
    regions["main"] = Rect(body.left, top, body.width, max(0.0, bottom - top))
    return regions


# --- pagination --------------------------------------------------------------------------------


def table_font(geom: Geometry) -> Font:
    return Font(geom.body_font, SIZES.table)


def column_widths(table: Table, width: float) -> list[float]:
    total = sum(table.widths)
    return [width * share / total for share in table.widths]


def page_lines(height: float, font: Font, gap: float = 2 * INSET_Y) -> int:
    """The lines of `font` a box `height` tall holds beside `gap`: a text is cut only when it
    would not fit a whole page, and then to what a page holds (the Markdown keeps it all)."""
    return max(1, int((height - gap) // font.line_height))


def fitted_cells(row: tuple[str, ...], widths: list[float], font: Font, max_lines: int) -> tuple[str, ...]:
    return tuple(truncate(cell, font, inner_width(w), max_lines) for cell, w in zip(row, widths, strict=True))


def row_height(row: tuple[str, ...], widths: list[float], font: Font) -> float:
    lines = max(len(wrap(cell, font, inner_width(w))) for cell, w in zip(row, widths, strict=True))
    return lines * font.line_height + 2 * INSET_Y


def bullet_height(text: str, font: Font, width: float) -> float:
    return len(wrap(text, font, inner_width(width) - BULLET_INDENT)) * font.line_height + PARAGRAPH_GAP


def paginate(slides: list[Slide], geom: Geometry, audience: str) -> tuple[Slide, ...]:
    """Each slide whose table or bullets overflow becomes continuation slides; past the last
    allowed one the rest is cut with a note naming how many rows and where they are."""
    out: list[Slide] = []
    for slide in slides:
        if slide.table is not None:
            out += _paginate_table(slide, geom, MAX_PAGES[audience])
        elif slide.bullets and not slide.chart:
            out += _paginate_bullets(slide, geom, MAX_PAGES[audience])
        else:
            out.append(_with_note(slide, 0, "items"))
    return tuple(out)


def _with_note(slide: Slide, cut: int, kind: str) -> Slide:
    """The slide with its pointer resolved: how many rows were cut and where they all are."""
    note = slide.note
    if cut:
        pointer = f"{cut} more {kind} in {slide.more_in}" if slide.more_in else f"{cut} more {kind} not shown"
        note = f"{note} {pointer}." if note else f"{pointer}."
    return replace(slide, note=note, more_in=None)


def _pages(heights: list[float], capacity: float, max_pages: int) -> list[tuple[int, int]]:
    """(start, end) of the items on each page, at most `max_pages` pages. When everything fits,
    the pages are evened out (the lowest fill that needs no more pages), so a last page never
    holds one lonely row that the others had room to share."""
    pages = _filled(heights, capacity)
    if 1 < len(pages) <= max_pages:
        low, high = 0.0, capacity
        for _ in range(40):  # bisection on the fill; deterministic, and exact enough for points
            middle = (low + high) / 2
            if len(_filled(heights, middle)) == len(pages):
                high = middle
            else:
                low = middle
        pages = _filled(heights, high)
    return pages[:max_pages]


def _filled(heights: list[float], capacity: float) -> list[tuple[int, int]]:
    """(start, end) of the items on each page, each page filled up to `capacity` in turn."""
    pages, start, used = [], 0, 0.0
    for index, height in enumerate(heights):
        if used + height > capacity and index > start:
            pages.append((start, index))
            start, used = index, 0.0
        used += height
    pages.append((start, len(heights)))
    return pages


def _split(slide: Slide, spans: list[tuple[int, int]], total: int, kind: str, part) -> list[Slide]:
    """One slide per span; continuations drop the lead, the last one says what was cut."""
    slides = []
    for page, (start, end) in enumerate(spans, 1):
        title = slide.title if len(spans) == 1 else f"{slide.title} ({page} of {len(spans)})"
        one = replace(part(start, end), title=title)
        if page > 1:
            one = replace(one, lead=None, tiles=())
        last = page == len(spans)
        slides.append(
            _with_note(one, total - end if last else 0, kind) if last else replace(one, note=None, more_in=None)
        )
    return slides


def _paginate_table(slide: Slide, geom: Geometry, max_pages: int) -> list[Slide]:
    table = slide.table
    assert table is not None
    font = table_font(geom)
    bold = Font(font.typeface, font.size, True)
    main = body_regions(slide, geom)["main"]
    widths = column_widths(table, main.width)
    header = fitted_cells(table.header, widths, bold, page_lines(main.height / 2, bold))  # our words: short
    capacity = main.height - row_height(header, widths, bold)
    rows = [fitted_cells(row, widths, font, page_lines(capacity, font)) for row in table.rows]
    spans = _pages([row_height(row, widths, font) for row in rows], capacity, max_pages)
    return _split(
        slide,
        spans,
        len(rows),
        "rows",
        lambda start, end: replace(slide, table=replace(table, header=header, rows=tuple(rows[start:end]))),
    )


def _paginate_bullets(slide: Slide, geom: Geometry, max_pages: int) -> list[Slide]:
    main = body_regions(slide, geom)["main"]
    font = Font(geom.body_font, SIZES.body)
    width = inner_width(main.width) - BULLET_INDENT
    bullets = [truncate(b, font, width, page_lines(main.height, font, PARAGRAPH_GAP)) for b in slide.bullets]
    spans = _pages([bullet_height(b, font, main.width) for b in bullets], main.height, max_pages)
    return _split(
        slide, spans, len(bullets), "items", lambda start, end: replace(slide, bullets=tuple(bullets[start:end]))
    )


# --- the customer's story ----------------------------------------------------------------------


def customer_slides(ctx: QbrContext, geom: Geometry = Geometry()) -> tuple[Slide, ...]:
    """Title, agenda, then the quarter as an executive follows it, ending with next steps."""
    story = [
        s
        for s in (
            _outcomes(ctx),
            _health_in_words(ctx),
            _adoption_chart(ctx),
            _features_chart(ctx),
            _support(ctx),
            _what_we_heard(ctx),
            _success_plan(ctx),
            _road_ahead(ctx),
            _next_steps(ctx),
        )
        if s is not None
    ]
    title = Slide(
        f"Quarterly Business Review: {ctx.account_name}",
        subtitle=f"{fmt_period(ctx.period_start, ctx.as_of)}",
    )
    agenda = Slide("Agenda", bullets=tuple(s.title for s in story))
    return paginate([title, agenda, *story], geom, CUSTOMER)


def _latest_week(ctx: QbrContext):
    return ctx.weekly_usage[-1] if ctx.weekly_usage else None


def _avg(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _outcomes(ctx: QbrContext) -> Slide:
    tiles = []
    weeks = ctx.weekly_usage
    if weeks:
        users = _avg([w.active_users for w in weeks])
        tiles.append(Tile(fmt_count(users), f"Weekly Active Users, {_weeks(len(weeks))} Average"))
        seats = weeks[-1].seats
        if seats:
            tiles.append(
                Tile(
                    fmt_pct(100.0 * weeks[-1].active_users / seats),
                    f"Of Seats Active, Week to {fmt_short_date(weeks[-1].week_end)}",
                )
            )
        tiles.append(
            Tile(
                fmt_one(_avg([w.features_used for w in weeks])), f"Features Used per Week, {_weeks(len(weeks))} Average"
            )
        )
    if ctx.support.closed:
        span = "the Quarter" if span_name(ctx) == "the quarter" else fmt_label(span_name(ctx))
        tiles.append(Tile(fmt_count(ctx.support.closed), f"Support Cases Resolved in {span}"))
    if ctx.nps:
        tiles.append(Tile(str(ctx.nps[-1].score), f"Latest NPS Answer (0–10), {fmt_date(ctx.nps[-1].on)}"))
    bullets = []
    if weeks:
        first, last = weeks[0], weeks[-1]
        change = last.active_users - first.active_users
        trend = "steady" if change == 0 else f"{'up' if change > 0 else 'down'} {fmt_count(abs(change))}"
        bullets.append(
            f"{fmt_count(last.active_users)} people used the product in the week to {fmt_date(last.week_end)}, "
            f"{trend} from {fmt_count(first.active_users)} in the week to {fmt_date(first.week_end)}"
        )
        releases = sum(w.release_features_used for w in weeks)
        if releases:
            bullets.append(
                f"Features from recent releases were used in {sum(1 for w in weeks if w.release_features_used)} "
                f"of the {len(weeks)} weeks to {fmt_date(weeks[-1].week_end)}"
            )
    if ctx.support.opened and not ctx.support.closed:  # resolved cases have their tile
        bullets.append(f"{_plural(ctx.support.opened, 'support case')} opened in {span_name(ctx)}, none resolved yet")
    if not tiles:
        return Slide(
            "Outcomes and Value Delivered",
            lead=f"Not enough data yet to show the outcomes of {span_name(ctx)}.",
            bullets=("Usage, support and survey data will fill this page as it arrives",),
        )
    return Slide(
        "Outcomes and Value Delivered",
        lead=f"{_first_upper(span_with_dates(ctx))} in numbers.",
        tiles=tuple(tiles[:4]),
        bullets=tuple(bullets),
    )


# What each component measured, in words, over the health score's own windows: (phrase, the
# evidence keys it needs). `{usage}` and `{support}` name those windows, so a figure never reads
# as the quarter's.
COMPONENT_PHRASES = {
    "adoption": (
        "{avg_active_users:count} weekly active users on average in {usage}, {utilisation_pct:pct} of {seats:count} seats",
        ("avg_active_users", "utilisation_pct", "seats"),
    ),
    "value": (
        "{avg_features_used:one} features used each week on average in {usage}, {breadth_pct:pct} of the product",
        ("avg_features_used", "breadth_pct"),
    ),
    "support": (
        "{cases_in_window:cases} opened in {support}, {open_sev1_cases:critical}",
        ("cases_in_window", "open_sev1_cases"),
    ),
    "sentiment": ("latest NPS answer {latest_nps:one} of 10, on {latest_on:date}", ("latest_nps", "latest_on")),
}
_FIELD = re.compile(r"\{(\w+):(\w+)\}")


def _weeks(count: int) -> str:
    return f"{count}-Week"


def _span(days: int) -> str:
    """`4 weeks` (a whole number of weeks) or `90 days`."""
    return f"{days // 7} weeks" if days % 7 == 0 else f"{days} days"


def _window(days: int, as_of: dt.date) -> str:
    """`the 4 weeks to 27 Sep 2026` (or `the 90 days to ...`): the period a figure covers."""
    return f"the {_span(days)} to {fmt_date(as_of)}"


def component_phrase(component: Component, ctx: QbrContext) -> str:
    """What a measured health component found, in words a customer reads (no internal codes), with its period."""
    label = component_label(component.name)
    measured = component.measured
    if component.name == "commercial":
        overdue = measured.get("overdue_invoices")
        if overdue is None:  # not measured: claim neither an overdue invoice nor none
            return label
        if overdue:
            invoices = "1 invoice is" if overdue == 1 else f"{fmt_count(overdue)} invoices are"
            return f"{label}: {invoices} open past the due date on {fmt_date(ctx.as_of)}"
        if component in ctx.strengths:
            return f"{label}: no invoice overdue on {fmt_date(ctx.as_of)}, contract in good order"
        return f"{label}: no invoice overdue on {fmt_date(ctx.as_of)}; contract terms to review together"
    phrase, keys = COMPONENT_PHRASES.get(component.name, ("", ()))
    if not phrase or any(measured.get(key) is None or isinstance(measured.get(key), bool) for key in keys):
        return label
    formats = {
        "count": fmt_count,
        "cases": lambda value: _plural(value, "case") if value else "no cases",
        "one": fmt_one,
        "pct": fmt_pct,
        "critical": lambda value: f"{fmt_count(value)} critical still open" if value else "no critical case open",
        "date": lambda value: fmt_date(dt.date.fromisoformat(str(value)[:10])),
    }
    windows = {"usage": _window(ctx.usage_days, ctx.as_of), "support": _window(ctx.support_days, ctx.as_of)}
    text = phrase.replace("{usage}", windows["usage"]).replace("{support}", windows["support"])
    return f"{label}: " + _FIELD.sub(lambda m: formats[m.group(2)](measured[m.group(1)]), text)


# --- signals, for the account team: by name, their evidence as a sentence ----------------------

SIGNAL_KINDS = {"risk": "Churn risk", "expansion": "Growth"}


def signal_kind(kind: str) -> str:
    return SIGNAL_KINDS.get(kind, fmt_label(kind))


def _days_between(first: Any, last: dt.date) -> int:
    return (last - dt.date.fromisoformat(str(first)[:10])).days + 1


def _usage_slide(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    to = dt.date.fromisoformat(e["recent_to"])
    days = _days_between(e["recent_from"], to)
    return (
        f"Weekly active users fell {fmt_pct(e['drop_pct'])} (from {fmt_one(e['prior_avg_active_users'])} to "
        f"{fmt_one(e['recent_avg_active_users'])} on average) in {_window(days, to)}, against the {_span(days)} before"
    )


def _support_spike(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    days = _days_between(e["recent_from"], as_of)
    cases = f"{_plural(e['recent_cases'], 'case')} opened in {_window(days, as_of)}"
    if e["ratio"] is not None:
        cases += (
            f", {fmt_one(e['ratio'])} times the rate before ({_plural(e['prior_cases'], 'case')}, "
            f"{fmt_one(e['prior_rate_per_recent_period'])} per {_plural(days, 'day')})"
        )
    else:
        cases += ", none in the period before"
    if e["open_sev1_cases"]:
        cases += (
            f"; {_plural(e['open_sev1_cases'], 'critical case')} (severity 1) open, the oldest since "
            f"{fmt_date(e['oldest_open_sev1_opened_on'])}"
        )
    return cases


def _payment_overdue(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    text = (
        f"Invoice {e['invoice_id']} ({format_amount(e['amount'], e['currency'])}) is "
        f"{_plural(e['days_overdue'], 'day')} past its due date of {fmt_date(e['due_on'])}"
    )
    if e["overdue_invoices"] > 1:
        text += f"; {fmt_count(e['overdue_invoices'])} invoices overdue in all"
    return text


def _renewal_soon(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    text = (
        f"Subscription {e['subscription_id']} ({format_amount(e['arr'], e['currency'])} a year) renews "
        f"on {fmt_date(e['renewal_date'])}, in {_plural(e['days_to_renewal'], 'day')}, "
        + ("and renews by itself" if e["auto_renew"] else "and does not renew by itself")
    )
    if e["renewing_subscriptions"] > 1:
        text += f"; {fmt_count(e['renewing_subscriptions'])} subscriptions renew soon in all"
    return text


def _stakeholder_change(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    changes = []
    for change in e["changes"]:
        who = role_label(change["role"]) + (f" (contact {change['contact_id']})" if contacts else "")
        went = "left" if change["change"] == "left" else "started"
        changes.append(f"{'' if went == 'left' else 'new '}{who} {went} on {fmt_date(change['on'])}")
    text = "; ".join(changes)
    return text[:1].upper() + text[1:]


def _feature_adoption_low(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    return (
        f"{fmt_one(e['avg_features_used'])} of {fmt_count(e['feature_catalog_size'])} features used a week on "
        f"average ({fmt_pct(e['breadth_pct'])}) in {_window(_days_between(e['recent_from'], as_of), as_of)}"
    )


def _expansion_trail(e: Mapping[str, Any], as_of: dt.date, contacts: bool) -> str:
    use = []
    if e["utilisation_pct"] is not None:
        use.append(f"{fmt_pct(e['utilisation_pct'])} of {fmt_count(e['seats'])} seats are in use")
    if e["growth_pct"] is not None:
        use.append(
            f"weekly active users {'up' if e['growth_pct'] >= 0 else 'down'} {fmt_pct(abs(e['growth_pct']))} "
            f"(from {fmt_one(e['prior_avg_active_users'])} to {fmt_one(e['recent_avg_active_users'])} on average)"
        )
    opportunity = (
        f"Expansion opportunity {e['opp_id']} is open "
        f"({format_amount(e['opp_amount'], e['opp_currency'])}, closing {fmt_date(e['opp_close_date'])})"
    )
    return opportunity + (f" while {' and '.join(use)}" if use else "")


_SIGNAL_PHRASES = {
    "SIG_EXPANSION_TRAIL": _expansion_trail,
    "SIG_FEATURE_ADOPTION_LOW": _feature_adoption_low,
    "SIG_PAYMENT_OVERDUE": _payment_overdue,
    "SIG_RENEWAL_SOON": _renewal_soon,
    "SIG_STAKEHOLDER_CHANGE": _stakeholder_change,
    "SIG_SUPPORT_SPIKE": _support_spike,
    "SIG_USAGE_SLIDE_4W": _usage_slide,
}


def signal_phrase(code: str, evidence: Mapping[str, Any], as_of: dt.date, include_contacts: bool) -> str | None:
    """What tripped a signal, as a sentence with units and the measured values ("Weekly active
    users fell 31% (from 154 to 106 on average) in the 4 weeks to 27 Sep 2026, ..."); None when
    the evidence lacks what the sentence needs (a signals file of another shape)."""
    phrase = _SIGNAL_PHRASES.get(code)
    try:
        return phrase(evidence, as_of, include_contacts) if phrase else None
    except (KeyError, TypeError, ValueError):
        return None


def component_finding(component: Component, ctx: QbrContext) -> str:
    """What a component measured, without its name (the review's tables name it): its phrase, or
    its measured values in words where no phrase covers them, or why it was not measured."""
    if component.score is None:
        return f"Not measured: {slide_text(component.reason)}"
    phrase = component_phrase(component, ctx).removeprefix(component_label(component.name))
    if component.name == "commercial":  # the customer's phrase names only overdue invoices
        phrase += _other_commercial_costs(component.measured)
    return phrase.removeprefix(": ") or component.evidence


def _other_commercial_costs(measured: Mapping[str, Any]) -> str:
    """`; a 35% discount and credits worth 5% of ARR also cost points`: for the account team, what
    besides overdue invoices lowered the commercial score (else its number has no why)."""
    costs = []
    if (measured.get("discount_penalty") or 0) > 0:
        costs.append(f"a {fmt_pct(measured.get('worst_discount_pct'))} discount")
    if (measured.get("credits_penalty") or 0) > 0:
        costs.append(f"credits worth {fmt_pct(measured.get('worst_credits_pct_of_arr'))} of ARR")
    return f"; {' and '.join(costs)} also cost points" if costs else ""


def _health_in_words(ctx: QbrContext) -> Slide:
    lead = None
    if not ctx.scored:
        so_far = "this is what we can measure so far" if ctx.strengths or ctx.focus_areas else "nothing is measured yet"
        lead = f"Not enough data yet for a full picture: {so_far}."
    if ctx.settings.show_health_score:
        lead = f"Health score {ctx.score} of {ctx.total}." if ctx.scored else "Health score: not enough data yet."
    if not ctx.strengths and not ctx.focus_areas:  # nothing measured: say what is missing, praise nothing
        missing = Column("Not Measured Yet", tuple(component_label(c.name) for c in ctx.unavailable))
        return Slide("How Things Are Going", lead=lead, columns=(missing, Column(FOCUS, (TOO_EARLY,))))
    # A strengths column only with something measured to show for it.
    well = (Column("Where Things Go Well", tuple(component_phrase(c, ctx) for c in ctx.strengths)),)
    focus = Column(FOCUS, tuple(component_phrase(c, ctx) for c in ctx.focus_areas) or (KEEP_GOING,))
    return Slide(
        "How Things Are Going", lead=lead, columns=(*(well if ctx.strengths else ()), focus), note=not_measured(ctx)
    )


FOCUS = "Where We Will Focus Together"
KEEP_GOING = "Nothing stands out: keep the momentum"


TOO_EARLY = "Too early to tell: we will look at this together as the data comes in"


# What the customer would need to share for each unmeasured component, in their words.
MISSING_DATA_WORDS = {
    "adoption": "product usage data",
    "value": "product usage data",
    "support": "a full support history",
    "commercial": "billing history",
    "sentiment": "survey answers",
}


def not_measured(ctx: QbrContext) -> str | None:
    """`Not measured yet: Adoption, Satisfaction.`: the components without data, named once; for
    an account held at amber for want of data, also what is missing, in the customer's words (the
    tier itself is the account team's judgement and stays internal)."""
    if not ctx.unavailable:
        return None
    named = f"Not measured yet: {', '.join(component_label(c.name) for c in ctx.unavailable)}."
    if not ctx.tier_reason:
        return named
    missing = list(dict.fromkeys(MISSING_DATA_WORDS.get(c.name, component_label(c.name)) for c in ctx.unavailable))
    seen = ", ".join(missing[:-1]) + " or " + missing[-1] if len(missing) > 1 else missing[0]
    return f"{named} We do not yet see {seen}, so this review does not show the whole picture yet."


def _adoption_chart(ctx: QbrContext) -> Slide | None:
    weeks = ctx.weekly_usage
    if not weeks:
        return None
    last = weeks[-1]
    return Slide(
        "Adoption Against Seats",
        lead=f"{fmt_count(last.active_users)} of {fmt_count(last.seats)} seats were active in the week to {fmt_date(last.week_end)}.",
        chart=Chart(
            "line",
            "Weekly Active Users and Seats, by Week Ending",
            _week_labels(weeks),
            (
                ("Active Users", tuple(float(w.active_users) for w in weeks)),
                ("Seats", tuple(float(w.seats) for w in weeks)),
            ),
            "Week Ending",
            "People",
        ),
    )


def _features_chart(ctx: QbrContext) -> Slide | None:
    """Features used per week; those from recent releases only when some were used (a row of
    zeros says nothing a customer needs to read)."""
    weeks = ctx.weekly_usage
    if not weeks or not any(w.features_used for w in weeks):
        return None
    # Short enough for one line of the lead at 20 pt (a wrapped lead would leave its box).
    average = f"{fmt_one(_avg([w.features_used for w in weeks]))} features a week on average in the {_weeks_to(weeks)}"
    series = [("Features Used", tuple(float(w.features_used) for w in weeks))]
    if not any(w.release_features_used for w in weeks):
        return Slide(
            "Feature Breadth",
            lead=f"{average}.",
            chart=Chart(
                "bar",
                "Features Used per Week",
                _week_labels(weeks),
                tuple(series),
                "Week Ending",
                "Features",
                labels=True,
            ),
        )
    series.append(("From Recent Releases", tuple(float(w.release_features_used) for w in weeks)))
    return Slide(
        "Feature Breadth and New Releases",
        lead=f"{average}, {fmt_one(_avg([w.release_features_used for w in weeks]))} from recent releases.",
        chart=Chart(
            "bar",
            "Features Used per Week, and Those From Recent Releases",
            _week_labels(weeks),
            tuple(series),
            "Week Ending",
            "Features",
            labels=True,
        ),
    )


def _weeks_to(weeks: Sequence[WeekPoint]) -> str:
    """`13 weeks to 27 Sep 2026`: the weekly windows an average covers."""
    return f"{len(weeks)} week{'s' if len(weeks) != 1 else ''} to {fmt_date(weeks[-1].week_end)}"


def _week_labels(weeks: Sequence[WeekPoint]) -> tuple[str, ...]:
    return tuple(fmt_short_date(w.week_end) for w in weeks)


def _support(ctx: QbrContext) -> Slide:
    s = ctx.support
    if not s.opened and not s.closed:
        # No case in the period: the lead says so; tiles of 0 would read as a measured result
        # beside a support score that may not be measured yet.
        return Slide("Support Summary", lead=f"No support cases in {span_with_dates(ctx)}.")
    tiles = [Tile(fmt_count(s.opened), "Cases Opened"), Tile(fmt_count(s.closed), "Cases Resolved")]
    if s.median_days_to_close is not None:
        tiles.append(Tile(fmt_one(s.median_days_to_close), "Median Days to Resolve"))
    if s.sla_met_pct is not None:
        tiles.append(Tile(fmt_pct(s.sla_met_pct), "Answered Within the Agreed Time"))
    # Which of the open cases are still within the agreed time: some of them, all, or the only one.
    if s.not_yet_answered == s.open_now:
        which = "all " if s.open_now > 1 else ""
    else:
        which = f"{fmt_count(s.not_yet_answered)} of them "
    lead = (
        f"Support in {span_with_dates(ctx)}; "
        f"{_plural(s.open_now, 'case') if s.open_now else 'no case'} open on {fmt_date(ctx.as_of)}"
        + (f", {which}within the agreed time so far and not counted as answered." if s.not_yet_answered else ".")
    )
    return Slide("Support Summary", lead=lead, tiles=tuple(tiles))


def _what_we_heard(ctx: QbrContext) -> Slide | None:
    if not ctx.nps:
        return None
    scores = [p.score for p in ctx.nps]
    return Slide(
        "What We Heard",
        lead=f"{len(scores)} survey answer{'s' if len(scores) != 1 else ''} in the year to {fmt_date(ctx.as_of)}, averaging {fmt_one(_avg(scores))} of 10; the latest {scores[-1]} on {fmt_date(ctx.nps[-1].on)}.",
        chart=Chart(
            "line",
            "Net Promoter Score Answers, 0 to 10, by Date",
            tuple(fmt_date(p.on) for p in ctx.nps),
            (("NPS Answer", tuple(float(s) for s in scores)),),
            "Date Answered",
            "Score (0–10)",
            labels=True,
            y_max=10,
        ),
    )


def _success_plan(ctx: QbrContext) -> Slide | None:
    steps = ctx.joint_steps
    if not steps:
        return None
    rows = tuple(
        (fmt_date(step.due_on), slide_text(step.what), slide_text(step.owner), slide_text(step.your_owner))
        for step in steps
    )
    return Slide(
        "Our Joint Success Plan",
        lead="What we do together this quarter, with an owner on each side.",
        table=Table(("Due", "Step", "Our Owner", "Your Owner"), rows, (1.3, 4.2, 1.6, 1.6)),
        more_in="roadmap.md",
    )


def next_review_line(ctx: QbrContext) -> str:
    """The deck's and roadmap.md's one line on when we meet next."""
    return f"Our next business review: the week of {fmt_date(ctx.next_review)}"


def _road_ahead(ctx: QbrContext) -> Slide:
    bullets = [
        f"Your {slide_text(r.product)} subscription renews on {fmt_date(r.renewal_date)}" for r in ctx.upcoming_renewals
    ]
    bullets += [slide_text(topic) for topic in ctx.settings.roadmap_topics]
    if not bullets:
        bullets = [next_review_line(ctx)]
    return Slide("The Road Ahead", bullets=tuple(bullets), more_in="roadmap.md")


def _next_steps(ctx: QbrContext) -> Slide:
    upcoming = [step for step in ctx.joint_steps if step.due_on is not None and step.due_on >= ctx.as_of][:NEXT_STEPS]
    bullets = [f"{fmt_date(step.due_on)}: {slide_text(step.what)}" for step in upcoming]
    bullets.append(next_review_line(ctx))
    return Slide("Next Steps", bullets=tuple(bullets))


# --- the account team's internal review ----------------------------------------------------------


def review_slides(ctx: QbrContext, geom: Geometry = Geometry()) -> tuple[Slide, ...]:
    """The internal account review: the numbers and judgement the customer deck leaves out."""
    slides = [
        Slide(
            f"Account Review: {ctx.account_name}",
            subtitle=f"Internal, for the account team · {slide_text(ctx.account_id)} · {fmt_date(ctx.as_of)}",
        ),
        _review_summary(ctx),
        _review_scorecard(ctx),
        _review_signals(ctx),
        _review_renewals(ctx),
        _review_plan(ctx),
    ]
    if ctx.risks:
        slides.append(Slide("Plan Risks", bullets=tuple(slide_text(r) for r in ctx.risks), more_in=None))
    if len(ctx.score_history) >= 2:
        slides.append(
            Slide(
                "Health Score Over Time",
                chart=Chart(
                    "line",
                    "Health Score per Snapshot, 0 to 100",
                    tuple(fmt_date(p.as_of) for p in ctx.score_history),
                    (("Health Score", tuple(float(p.score) for p in ctx.score_history)),),
                    "Snapshot Date",
                    "Score (0–100)",
                    labels=True,
                    y_max=100,
                ),
            )
        )
    return paginate(slides, geom, REVIEW)


def change_phrase(ctx: QbrContext) -> str:
    """`up 3 since 31 Mar 2024`, `no change since ...`, or `no earlier snapshot`."""
    change = ctx.score_change
    if change is None or ctx.previous is None:
        return "no earlier snapshot"
    direction = "no change" if change == 0 else f"{'up' if change > 0 else 'down'} {abs(change)}"
    return f"{direction} since {fmt_date(ctx.previous.as_of)}"


NOT_WEIGHED = "—"  # a weight or points cell of an account without a score, or of a component not measured


def unscored_reason(ctx: QbrContext) -> str:
    """Why an account has no score, in words (`churned`, `not enough data yet`)."""
    return STATUS_WORDS[INSUFFICIENT_DATA if ctx.status == SCORED else ctx.status]


def score_phrase(ctx: QbrContext) -> str:
    if not ctx.scored:
        return f"no score ({unscored_reason(ctx)})"
    if ctx.tier_reason:  # the account team reads why: "84/100, amber, not green: ..."
        return f"{ctx.score}/{ctx.total}, {ctx.tier_reason}"
    return f"{ctx.score}/{ctx.total}, {ctx.tier}"


LIFECYCLE_WORDS = {
    "not_started": "Not a customer yet",
    "onboarding": "Onboarding customer",
    "active": "Active customer",
    "churned": "Former customer (churned)",
}


def scorecard_phrase(scorecard: str) -> str:
    """`default` → `the default scorecard`, `segment:smb` → `the SMB segment's scorecard`."""
    if scorecard.startswith("segment:"):
        segment = scorecard.removeprefix("segment:")
        return f"the {segment_label(segment)} segment's scorecard"
    return f"the {slide_text(scorecard)} scorecard"


def standing_phrase(ctx: QbrContext) -> str:
    """The account's lifecycle and how it was scored, in words: `Active customer, scored with the
    default scorecard`."""
    lifecycle = LIFECYCLE_WORDS.get(ctx.lifecycle or "", fmt_label(ctx.lifecycle or "")) if ctx.lifecycle else None
    if ctx.scored:
        scoring = f"scored with {scorecard_phrase(ctx.scorecard)}"
    else:
        scoring = f"not scored ({unscored_reason(ctx)}; {scorecard_phrase(ctx.scorecard)} applies)"
    return f"{lifecycle}, {scoring}" if lifecycle else scoring[:1].upper() + scoring[1:]


def signals_phrase(ctx: QbrContext) -> str:
    """`Signals: 2 churn risks (Usage falling, Renewal coming up); no growth signal`."""
    parts = []
    for kind, signals in (("churn risk", ctx.risk_signals), ("growth signal", ctx.expansion_signals)):
        names = f" ({', '.join(s.name for s in signals)})" if signals else ""
        parts.append(f"{_plural(len(signals), kind) if signals else 'no ' + kind}{names}")
    return "Signals: " + "; ".join(parts)


def _review_summary(ctx: QbrContext) -> Slide:
    bullets = [f"Health: {score_phrase(ctx)}; {change_phrase(ctx)}", standing_phrase(ctx), signals_phrase(ctx)]
    if ctx.override_note:
        bullets.insert(1, slide_text(ctx.override_note))
    if ctx.renewals:
        first = ctx.renewals[0]
        which = "" if len(ctx.renewals) == 1 else "; the first, "
        bullets.append(
            f"{_plural(len(ctx.renewals), 'subscription')} renewing in the forecast window{which or ': '}"
            f"{slide_text(first.product)} on {fmt_date(first.renewal_date)}, "
            f"forecast {renewal_odds(first.bucket, first.probability)}"
        )
    else:
        bullets.append("No subscription renews in the forecast window")
    if ctx.playbook_present:
        joint = len(ctx.joint_steps)
        plays = f"; plays {', '.join(slide_text(p) for p in ctx.plays)}" if ctx.plays else ""
        bullets.append(f"Plan: {_plural(len(ctx.plan_steps), 'step')}, {joint or 'none'} with the customer{plays}")
    else:
        bullets.append("No playbook attached")
    if ctx.csm_owner:
        bullets.append(f"CSM {slide_text(ctx.csm_owner)}")
    return Slide("Summary", bullets=tuple(bullets), more_in=None)


def fmt_weighed(value: float | None) -> str:
    """A weight or points, or a dash where nothing is weighed (no score, or the component not measured)."""
    return NOT_WEIGHED if value is None else fmt_one(value)


def _review_scorecard(ctx: QbrContext) -> Slide:
    rows = tuple(
        (
            component_label(c.name),
            "n/a" if c.score is None else fmt_one(c.score),
            fmt_weighed(c.weight),
            fmt_weighed(c.points),
            component_finding(c, ctx),
        )
        for c in ctx.components
    )
    unweighed = "" if ctx.scored else " Without a score no component is weighted: no weights or points."
    return Slide(
        "Health Scorecard",
        lead=f"Health: {score_phrase(ctx)}; {change_phrase(ctx)}.{unweighed}",
        table=Table(("Component", "Score", "Weight", "Points", "What Was Measured"), rows, (2.0, 0.8, 0.8, 0.8, 5.2)),
        more_in=None,
    )


def _review_signals(ctx: QbrContext) -> Slide:
    if not ctx.signals:
        return Slide("Signals", bullets=("No signals fired",), more_in=None)
    rows = tuple((s.name, signal_kind(s.kind), slide_text(s.evidence)) for s in ctx.signals)
    return Slide(
        "Signals",
        table=Table(("Signal", "Kind", "What Was Measured"), rows, (1.8, 1.1, 5.8)),
        more_in="the review page",
    )


def _review_renewals(ctx: QbrContext) -> Slide:
    if not ctx.renewals:
        return Slide("Renewal Forecast", bullets=("No subscription renews in the forecast window",), more_in=None)
    rows = tuple(
        (
            slide_text(r.subscription_id),
            slide_text(r.product),
            fmt_date(r.renewal_date),
            format_amount(r.arr, r.currency),
            r.bucket,
            f"{round(r.probability * 100)}%",
            format_amount(r.expected_arr, r.currency),
            slide_text("; ".join(r.risk_reasons)),
        )
        for r in ctx.renewals
    )
    return Slide(
        "Renewal Forecast",
        table=Table(
            ("Subscription", "Product", "Renews", "ARR", "Forecast", "Probability", "Expected", "Risk Reasons"),
            rows,
            (1.3, 1.2, 1.2, 1.3, 1.0, 1.1, 1.3, 4.0),
        ),
        more_in="the review page",
    )


def _review_plan(ctx: QbrContext) -> Slide:
    if not ctx.plan_steps:
        return Slide(
            "The Whole Plan",
            bullets=(f"No playbook steps; run `c360 c360:playbook --account {slide_text(ctx.account_id)}`",),
            more_in=None,
        )
    rows = tuple(
        (fmt_date(step.due_on), slide_text(step.what), slide_text(step.owner), "joint" if step.joint else "ours")
        for step in ctx.plan_steps
    )
    return Slide(
        "The Whole Plan",
        lead=f"Plays: {', '.join(slide_text(p) for p in ctx.plays)}." if ctx.plays else None,
        table=Table(("Due", "Step", "Owner", "With Customer"), rows, (1.3, 5.0, 1.7, 1.3)),
        more_in="the review page",
    )


# The phrasing helpers the Markdown templates share with the slides.
FORMATS = SimpleNamespace(
    date=fmt_date,
    period=fmt_period,
    count=fmt_count,
    one=fmt_one,
    pct=fmt_pct,
    money=format_amount,
    label=fmt_label,
    role=role_label,
    component=component_phrase,
    span=span_name,
    not_measured=not_measured,
    too_early=TOO_EARLY,
    keep_going=KEEP_GOING,
    standing=standing_phrase,
    change=change_phrase,
    finding=component_finding,
    not_weighed=NOT_WEIGHED,
    component_label=component_label,
    signal_kind=signal_kind,
    next_review=next_review_line,
)
