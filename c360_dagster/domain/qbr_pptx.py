"""The QBR deck: one slide model rendered as a PowerPoint file or, without python-pptx, as Markdown.

python-pptx is imported only inside `render_pptx`, so the Markdown fallback works without it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from c360_dagster.domain.text import (
    fmt_amount,
    fmt_number,
    fmt_percent,
    render_template,
)

if TYPE_CHECKING:
    from c360_dagster.domain.qbr import QbrContext

MAX_TABLE_ROWS = 10  # a slide table longer than this is cut; the Markdown files hold every row
SLIDES_TEMPLATE = "qbr_slides.md.j2"
# Characters XML 1.0 cannot hold: python-pptx would fail on them, so they are dropped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_WHITESPACE_RUN = re.compile(r"\s+")
_FORMULA_START = ("=", "+", "-", "@")
_CORE_DATES = re.compile(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)")


@dataclass(frozen=True)
class Chart:
    kind: str  # line / bar
    categories: tuple[str, ...]
    series: tuple[tuple[str, tuple[float, ...]], ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Slide:
    title: str
    subtitle: str | None = None
    bullets: tuple[str, ...] = ()
    table: Table | None = None
    chart: Chart | None = None
    note: str | None = None


def slide_text(value: Any) -> str:
    """Input text made safe for a slide: one line, XML-safe, no formula start (numbers as is)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = _WHITESPACE_RUN.sub(" ", _XML_INVALID.sub("", str(value))).strip()
    return "'" + text if text.startswith(_FORMULA_START) else text


def deck_slides(ctx: QbrContext) -> tuple[Slide, ...]:
    """The deck's slides in order; both renderers draw exactly these."""
    slides = [
        Slide(
            f"Quarterly business review: {ctx.account_name}",
            subtitle=f"{ctx.account_id} · {ctx.segment} · as of {ctx.as_of.isoformat()}",
        ),
        Slide("Executive summary", bullets=_summary_bullets(ctx)),
        Slide(
            "Health scorecard",
            table=Table(
                ("Component", "Score", "Weight", "Points"),
                tuple((c.name, _num(c.score), _num(c.weight), _num(c.points)) for c in ctx.components),
            ),
            note=f"Score {_num(ctx.score)}/{ctx.total}, tier {ctx.tier}, {ctx.change_phrase}; "
            f"scorecard {ctx.scorecard}.",
        ),
        _usage_slide(ctx),
        _components_slide(ctx),
        Slide("Signals and risks", bullets=_signal_bullets(ctx)),
        _renewals_slide(ctx),
        _plan_slide(ctx),
    ]
    if len(ctx.score_history) >= 2:
        slides.append(
            Slide(
                "Score over time",
                chart=Chart(
                    "line",
                    tuple(point.as_of.isoformat() for point in ctx.score_history),
                    (("Health score", tuple(float(point.score) for point in ctx.score_history)),),
                ),
            )
        )
    return tuple(slides)


def _num(value: float | None) -> str:
    return fmt_number(value)


def _summary_bullets(ctx: QbrContext) -> tuple[str, ...]:
    bullets = [
        f"Health {_num(ctx.score)}/{ctx.total}, tier {ctx.tier} ({ctx.change_phrase})",
        f"Signals: {len(ctx.risk_signals)} risk, {len(ctx.expansion_signals)} expansion",
    ]
    if ctx.renewals:
        first = ctx.renewals[0]
        bullets.append(
            f"Renewing in the forecast window: {len(ctx.renewals)}; first {first.product} "
            f"on {first.renewal_date.isoformat()}, forecast {first.bucket}"
        )
    else:
        bullets.append("No subscription renews in the forecast window")
    bullets.append(f"Plan: {ctx.plan_summary}" if ctx.plan_summary else "No playbook attached")
    return tuple(bullets)


def _usage_slide(ctx: QbrContext) -> Slide:
    title = "Weekly active users vs seats"
    if not ctx.weekly_usage:
        return Slide(title, bullets=("No usage windows in the last quarter",))
    weeks = ctx.weekly_usage
    return Slide(
        title,
        chart=Chart(
            "line",
            tuple(week.week_end.isoformat() for week in weeks),
            (
                ("Active users", tuple(float(week.active_users) for week in weeks)),
                ("Seats", tuple(float(week.seats) for week in weeks)),
            ),
        ),
    )


def _components_slide(ctx: QbrContext) -> Slide:
    title = "Health components"
    measured = [c for c in ctx.components if c.score is not None]
    # An unmeasured component is not a zero: it is named in the note, never drawn as a bar.
    note = "; ".join(f"{c.name}: n/a ({c.reason})" for c in ctx.unavailable) or None
    if not measured:
        return Slide(title, bullets=("No component could be measured",), note=note)
    chart = Chart(
        "bar",
        tuple(c.name for c in measured),
        (("Score", tuple(float(c.score) for c in measured)),),
    )
    return Slide(title, chart=chart, note=note)


def _signal_bullets(ctx: QbrContext) -> tuple[str, ...]:
    bullets = [
        f"{s.code} ({s.kind})" + (f": {s.evidence}" if s.evidence else "") for s in ctx.signals
    ]
    bullets += [f"Risk: {risk}" for risk in ctx.risks]
    return tuple(bullets) or ("No signals fired and no plan risks",)


def _cut(rows: list[tuple[Any, ...]]) -> tuple[tuple[tuple[Any, ...], ...], str | None]:
    extra = len(rows) - MAX_TABLE_ROWS
    return tuple(rows[:MAX_TABLE_ROWS]), (f"{extra} more rows in the Markdown pack" if extra > 0 else None)


def _renewals_slide(ctx: QbrContext) -> Slide:
    title = "Renewal outlook"
    if not ctx.renewals:
        return Slide(title, bullets=("No subscription renews in the forecast window",))
    rows, more = _cut(
        [
            (
                r.product,
                r.renewal_date.isoformat(),
                f"{fmt_amount(r.arr)} {r.currency}",
                r.bucket,
                fmt_percent(r.probability),
                f"{fmt_amount(r.expected_arr)} {r.currency}",
            )
            for r in ctx.renewals
        ]
    )
    reasons = [f"{r.product}: {', '.join(r.risk_reasons)}" for r in ctx.renewals if r.risk_reasons]
    notes = (["Risk reasons: " + "; ".join(reasons)] if reasons else []) + ([more] if more else [])
    return Slide(
        title,
        table=Table(("Product", "Renews on", "ARR", "Forecast", "Probability", "Expected ARR"), rows),
        note="; ".join(notes) or None,
    )


def _plan_slide(ctx: QbrContext) -> Slide:
    title = "The plan"
    if not ctx.plan_steps:
        return Slide(title, bullets=(f"No playbook steps; run `c360 c360:playbook --account {ctx.account_id}`",))
    rows, more = _cut([(step.due_on.isoformat(), step.what, step.owner) for step in ctx.plan_steps])
    return Slide(title, table=Table(("Due", "Step", "Owner"), rows), note=more)


def render_slides_md(ctx: QbrContext) -> str:
    """The deck as Markdown, for where python-pptx is not installed."""
    return render_template(SLIDES_TEMPLATE, ctx=ctx, slides=deck_slides(ctx))


def render_pptx(ctx: QbrContext) -> bytes:
    """The deck as a .pptx with native, editable charts; the same inputs give the same bytes."""
    from pptx import Presentation
    from pptx.chart.data import CategoryChartData
    from pptx.enum.chart import XL_CHART_TYPE, XL_LEGEND_POSITION
    from pptx.util import Inches, Pt

    prs = Presentation()
    title_layout, title_only_layout = prs.slide_layouts[0], prs.slide_layouts[5]
    width = prs.slide_width
    body_left, body_top, body_width = Inches(0.5), Inches(1.6), width - Inches(1.0)
    for spec in deck_slides(ctx):
        slide = prs.slides.add_slide(title_layout if spec.subtitle else title_only_layout)
        slide.shapes.title.text = slide_text(spec.title)
        if spec.subtitle:
            slide.placeholders[1].text = slide_text(spec.subtitle)
        top = body_top
        if spec.bullets:
            box = slide.shapes.add_textbox(body_left, top, body_width, Inches(4.5))
            box.text_frame.word_wrap = True
            for index, bullet in enumerate(spec.bullets):
                paragraph = box.text_frame.paragraphs[0] if index == 0 else box.text_frame.add_paragraph()
                paragraph.text = "• " + slide_text(bullet)
                paragraph.font.size = Pt(18)
            top += Inches(4.6)
        if spec.table:
            rows = (spec.table.header, *spec.table.rows)
            height = Inches(0.4) * len(rows)
            shape = slide.shapes.add_table(len(rows), len(spec.table.header), body_left, top, body_width, height)
            table = shape.table
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = slide_text(value)
                    table.cell(r, c).text_frame.paragraphs[0].font.size = Pt(12)
            top += height + Inches(0.2)
        if spec.chart:
            data = CategoryChartData()
            data.categories = spec.chart.categories
            for name, values in spec.chart.series:
                data.add_series(name, values)
            kind = XL_CHART_TYPE.LINE if spec.chart.kind == "line" else XL_CHART_TYPE.BAR_CLUSTERED
            chart = slide.shapes.add_chart(kind, body_left, top, body_width, Inches(4.6), data).chart
            chart.has_legend = len(spec.chart.series) > 1
            if chart.has_legend:
                chart.legend.position = XL_LEGEND_POSITION.BOTTOM
                chart.legend.include_in_layout = False
            if spec.chart.kind == "bar":
                chart.value_axis.minimum_scale, chart.value_axis.maximum_scale = 0, 100
            top += Inches(4.7)
        if spec.note:
            box = slide.shapes.add_textbox(body_left, min(top, Inches(6.7)), body_width, Inches(0.6))
            box.text_frame.word_wrap = True
            box.text_frame.text = slide_text(spec.note)
            box.text_frame.paragraphs[0].font.size = Pt(12)
        _drop_empty_placeholders(slide)
    fixed = dt.datetime(ctx.as_of.year, ctx.as_of.month, ctx.as_of.day)
    props = prs.core_properties
    props.created = props.modified = props.last_printed = fixed
    props.revision = 1
    props.title = slide_text(f"QBR {ctx.account_name}")
    props.author = props.last_modified_by = "c360"
    buffer = io.BytesIO()
    prs.save(buffer)
    return _normalized_zip(buffer.getvalue(), fixed)


def _drop_empty_placeholders(slide: Any) -> None:
    """Remove placeholders left empty, so no "Click to add ..." prompt shows in the deck."""
    for placeholder in list(slide.placeholders):
        if placeholder.has_text_frame and not placeholder.text_frame.text.strip():
            placeholder.element.getparent().remove(placeholder.element)


def _normalized_zip(data: bytes, fixed: dt.datetime) -> bytes:
    """Rewrite a zip with a fixed timestamp on every entry, in its original order.

    Embedded chart workbooks (.xlsx) are zips too, and XlsxWriter stamps their core
    properties with the current time, so those are normalized the same way.
    """
    fixed = max(fixed, dt.datetime(1980, 1, 1))  # the earliest time a zip entry can hold
    stamp = fixed.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for entry in source.infolist():
            content = source.read(entry.filename)
            if entry.filename.endswith(".xlsx"):
                content = _normalized_zip(content, fixed)
            elif entry.filename.endswith("core.xml"):
                content = _CORE_DATES.sub(rb"\g<1>" + stamp + rb"\g<3>", content)
            info = zipfile.ZipInfo(entry.filename, date_time=fixed.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            target.writestr(info, content)
    return out.getvalue()
