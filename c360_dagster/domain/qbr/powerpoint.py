"""The QBR decks drawn as PowerPoint files (or, without python-pptx, the customer deck as Markdown).

One theme for every slide: the company's own template when configured (its masters, layouts,
fonts and colours), else the bundled default built here from python-pptx's own template at
16:9. python-pptx is imported only where a deck is drawn, so the Markdown fallback works
without it.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import io
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Any
from xml.sax.saxutils import escape

from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.text import render_template
from c360_dagster.domain.qbr.deck import (
    BULLET_INDENT,
    CUSTOMER,
    FORMATS,
    INSET_X,
    INSET_Y,
    PARAGRAPH_GAP,
    SIZES,
    XML_INVALID,
    Chart,
    Geometry,
    Rect,
    Slide,
    Table,
    body_regions,
    column_widths,
    customer_slides,
    fmt_date,
    inner_width,
    review_slides,
    row_height,
    slide_text,
    table_font,
)
from c360_dagster.domain.qbr.layout import Font, fit, truncate, wrap
from c360_dagster.domain.qbr.models import QbrContext

SLIDES_TEMPLATE = "qbr_slides.md.j2"
EMU_PER_PT = 12700
WIDE = (12192000, 6858000)  # 16:9, 13.333 x 7.5 in
MAX_CORE_PROPERTY = 255  # the OOXML core properties' limit python-pptx enforces
_CORE_DATES = re.compile(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)")
_THEME_FONT = re.compile(rb'<a:(major|minor)Font>\s*<a:latin typeface="([^"]*)"')
THEME_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/theme"


def _emu(points: float) -> int:
    return round(points * EMU_PER_PT)


def _pt(emu: int) -> float:
    return emu / EMU_PER_PT


def check_template(data: bytes, where: str) -> None:
    """Refuse a template python-pptx cannot open or that has no layout with a title."""
    from pptx import Presentation

    try:
        prs = Presentation(io.BytesIO(data))
    except Exception as exc:  # python-pptx raises several kinds for a file that is not a deck
        raise ConfigError(f"{where}: not a PowerPoint template ({type(exc).__name__})") from None
    if _layout(prs, "Title Only") is None:
        raise ConfigError(f"{where}: no slide layout with a title placeholder")


@functools.cache
def _default_template() -> bytes:
    """python-pptx's own template widened to 16:9: every master and layout shape stretched with it."""
    from pptx import Presentation
    from pptx.util import Emu

    prs = Presentation()
    ratio = WIDE[0] / prs.slide_width
    prs.slide_width, prs.slide_height = Emu(WIDE[0]), Emu(WIDE[1])
    # A layout placeholder may inherit its box from the master, and setting one coordinate
    # writes a box of its own: every box is read before any is changed.
    boxes = [
        (shape, (shape.left, shape.top, shape.width, shape.height))
        for owner in (prs.slide_master, *prs.slide_layouts)
        for shape in owner.shapes
    ]
    for shape, (left, top, width, height) in boxes:
        if None not in (left, top, width, height):
            shape.left, shape.top = round(left * ratio), top
            shape.width, shape.height = round(width * ratio), height
    buffer = io.BytesIO()
    prs.save(buffer)
    return buffer.getvalue()


def _layout(prs: Any, name: str) -> Any:
    """The layout called `name`, else the one with a title and the fewest other placeholders."""
    from pptx.enum.shapes import PP_PLACEHOLDER

    titled = []
    for layout in prs.slide_layouts:
        kinds = [ph.placeholder_format.type for ph in layout.placeholders]
        if PP_PLACEHOLDER.TITLE in kinds or PP_PLACEHOLDER.CENTER_TITLE in kinds:
            if layout.name == name:
                return layout
            content = [
                k for k in kinds if k not in (PP_PLACEHOLDER.DATE, PP_PLACEHOLDER.FOOTER, PP_PLACEHOLDER.SLIDE_NUMBER)
            ]
            titled.append((len(content), layout))
    return min(titled, key=lambda pair: pair[0])[1] if titled else None


def _rect(shape: Any) -> Rect:
    return Rect(_pt(shape.left), _pt(shape.top), _pt(shape.width), _pt(shape.height))


def _geometry(prs: Any, layout: Any) -> Geometry:
    """Title, body and footer boxes from the template's slide size and its title-only layout."""
    from pptx.enum.shapes import PP_PLACEHOLDER

    width, height = _pt(prs.slide_width), _pt(prs.slide_height)
    margin = width * 0.0375
    by_type = {ph.placeholder_format.type: ph for ph in layout.placeholders}
    title = _rect(by_type.get(PP_PLACEHOLDER.TITLE) or by_type[PP_PLACEHOLDER.CENTER_TITLE])
    foot_top = height - 0.0704 * height
    footer = Rect(margin, foot_top, width * 0.7, 0.045 * height)
    number = Rect(width - margin - width * 0.1, foot_top, width * 0.1, 0.045 * height)
    if PP_PLACEHOLDER.SLIDE_NUMBER in by_type:
        number = _rect(by_type[PP_PLACEHOLDER.SLIDE_NUMBER])
        foot_top = min(foot_top, number.top)
    if PP_PLACEHOLDER.FOOTER in by_type:
        placed = _rect(by_type[PP_PLACEHOLDER.FOOTER])
        footer = Rect(margin, placed.top, max(placed.left + placed.width - margin, width * 0.5), placed.height)
        foot_top = min(foot_top, placed.top)
    body_top = title.top + title.height + 0.02 * height
    body = Rect(margin, body_top, width - 2 * margin, max(0.0, foot_top - 0.015 * height - body_top))
    fonts = {
        kind.decode(): name.decode()
        for kind, name in _THEME_FONT.findall(prs.slide_master.part.part_related_by(THEME_REL).blob)
    }
    return Geometry(
        width=width,
        height=height,
        title=title,
        body=body,
        footer=footer,
        number=number,
        body_font=fonts.get("minor", "Calibri"),
        title_font=fonts.get("major", "Calibri"),
    )


@dataclass(frozen=True)
class _Plan:
    """What a template gives every deck drawn on it, worked out once per template (and process)."""

    package: Any  # the template's parts as loaded, never touched: each deck starts from a copy
    shared: dict[int, Any]  # the parts every deck shares read only, by id
    entries: dict[int, tuple[tuple[str, bytes], ...]]  # a shared part's zip entries (itself, its rels)
    title_layout: int
    content_layout: int
    fresh_slides: dict[int, Any]  # by layout: a new slide's XML with the layout's placeholders cloned
    part_names: frozenset[str]  # the part names of a deck before its first slide
    geometry: Geometry
    title_slide_title: Rect
    title_slide_subtitle: Rect | None


@functools.lru_cache(maxsize=4)
def _plan(template: bytes) -> _Plan:
    from pptx import Presentation
    from pptx.package import Package
    from pptx.parts.coreprops import CorePropertiesPart

    prs = Presentation(io.BytesIO(template))
    layouts = list(prs.slide_layouts)
    title_layout, content_layout = _layout(prs, "Title Slide"), _layout(prs, "Title Only")
    placeholders = {ph.placeholder_format.idx: _rect(ph) for ph in title_layout.placeholders}
    subtitle = placeholders.get(1)
    package = Package.open(io.BytesIO(template))
    # Copying costs a fraction of parsing the template again, and only what a deck changes is
    # copied: the presentation part (its slide list) and the core properties; the masters,
    # layouts, theme and the rest are shared, read only, and serialized once.
    changed = package.main_document_part
    shared = {
        id(part): part
        for part in package.iter_parts()
        if part is not changed and not isinstance(part, CorePropertiesPart)
    }
    entries = {key: _part_entries(part) for key, part in shared.items()}
    indexes = (layouts.index(title_layout), layouts.index(content_layout))
    scratch = _blank(package, shared)
    part_names = frozenset(str(part.partname) for part in scratch.part.package.iter_parts())
    fresh = {index: scratch.slides.add_slide(scratch.slide_layouts[index])._element for index in indexes}
    geometry = _geometry(prs, content_layout)
    return _Plan(package, shared, entries, *indexes, fresh, part_names, geometry, placeholders[0], subtitle)


def _blank(package: Any, shared: dict[int, Any]) -> Any:
    """A presentation of the template's layouts only, on a copy of its loaded package that
    shares the `shared` parts. (A deep copy keeps a part's own XML tree whole, but not an
    element inside one that a python-pptx object holds, so the copy is of the package as
    loaded, before any such object exists.)"""
    prs = copy.deepcopy(package, dict(shared)).main_document_part.presentation
    _remove_slides(prs)
    return prs


def _part_entries(part: Any) -> tuple[tuple[str, bytes], ...]:
    """A part's zip entries, as python-pptx's package writer makes them: the part, then its rels if any."""
    entries = [(part.partname.membername, part.blob)]
    if part._rels:
        entries.append((part.partname.rels_uri.membername, part.rels.xml))
    return tuple(entries)


def render_pptx(ctx: QbrContext, audience: str = CUSTOMER) -> bytes:
    """A deck with native, editable charts; the same inputs give the same bytes."""
    template = ctx.settings.template or _default_template()
    plan = _plan(template)
    prs = _blank(plan.package, plan.shared)
    geom = plan.geometry
    slides = customer_slides(ctx, geom) if audience == CUSTOMER else review_slides(ctx, geom)
    name = slide_text(ctx.account_name)
    footer = (
        f"{name} · {fmt_date(ctx.as_of)}"
        if audience == CUSTOMER
        else f"Internal, for the account team only · {name} · {fmt_date(ctx.as_of)}"
    )
    layouts = list(prs.slide_layouts)
    names = _PartNames(plan.part_names)
    for number, spec in enumerate(slides, 1):
        opening = spec.subtitle is not None
        layout = plan.title_layout if opening else plan.content_layout
        slide = _add_slide(prs, layouts[layout], plan.fresh_slides[layout])
        _draw(slide, spec, plan, names)
        _drop_empty_placeholders(slide)
        if not opening:
            _footer(slide, geom, footer, str(number))
    fixed = dt.datetime(ctx.as_of.year, ctx.as_of.month, ctx.as_of.day)
    props = prs.core_properties
    props.created = props.modified = props.last_printed = fixed
    props.revision = 1
    kind = "QBR" if audience == CUSTOMER else "Account review"
    props.title = f"{kind}: {name}"[:MAX_CORE_PROPERTY]
    props.author = props.last_modified_by = "c360"
    props.subject = props.keywords = props.comments = props.category = ""
    return _package_zip(prs, fixed, plan.entries)


def _add_slide(prs: Any, layout: Any, fresh: Any) -> Any:
    """`prs.slides.add_slide(layout)`, its placeholders copied from `fresh` (cloned once per
    template) instead of cloned from the layout for every slide: the same XML, for a tenth of the time."""
    from pptx.opc.constants import CONTENT_TYPE, RELATIONSHIP_TYPE
    from pptx.parts.slide import SlidePart

    presentation = prs.part
    part = SlidePart(
        presentation._next_slide_partname, CONTENT_TYPE.PML_SLIDE, presentation.package, copy.deepcopy(fresh)
    )
    part.relate_to(layout.part, RELATIONSHIP_TYPE.SLIDE_LAYOUT)
    prs.slides._sldIdLst.add_sldId(presentation.relate_to(part, RELATIONSHIP_TYPE.SLIDE))
    return part.slide


def _remove_slides(prs: Any) -> None:
    """A company template may carry example slides: the deck starts from its layouts only."""
    slide_ids = prs.slides._sldIdLst
    for slide_id in list(slide_ids):
        prs.part.drop_rel(slide_id.rId)
        slide_ids.remove(slide_id)


# --- drawing ------------------------------------------------------------------------------------


# --- drawing ------------------------------------------------------------------------------------
# Text boxes, tiles and tables are written as DrawingML directly: python-pptx's object API costs
# an XPath query per attribute, several times the time of the whole deck otherwise.

NS = (
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
)
TABLE_STYLE = "{5C22544A-7EE6-4342-B048-85BDC9FD1C3A}"  # Medium Style 2, Accent 1: follows the theme
Paragraph = tuple[str, Font, bool]  # text, font, is a bullet


def _xml_text(text: str) -> str:
    return escape(XML_INVALID.sub("", text))


def _xfrm(rect: Rect, tag: str = "a:xfrm") -> str:
    return (
        f'<{tag}><a:off x="{_emu(rect.left)}" y="{_emu(rect.top)}"/>'
        f'<a:ext cx="{_emu(rect.width)}" cy="{_emu(rect.height)}"/></{tag}>'
    )


def _paragraph_xml(text: str, font: Font, bullet: bool, *, accent: bool = False, align: str | None = None) -> str:
    props = [f'algn="{align}"'] if align else []
    if bullet:
        props += [f'marL="{_emu(BULLET_INDENT)}"', f'indent="{-_emu(BULLET_INDENT)}"']
    spacing = '<a:lnSpc><a:spcPct val="100000"/></a:lnSpc>'
    spacing += f'<a:spcBef><a:spcPts val="{round(PARAGRAPH_GAP * 100) if bullet else 0}"/></a:spcBef>'
    marker = '<a:buFont typeface="Arial"/><a:buChar char="•"/>' if bullet else "<a:buNone/>"
    colour = '<a:solidFill><a:schemeClr val="accent1"/></a:solidFill>' if accent and font.bold else ""
    size = f'lang="en-US" sz="{round(font.size * 100)}" b="{int(font.bold)}" dirty="0"'
    run = f"<a:r><a:rPr {size}>{colour}</a:rPr><a:t>{_xml_text(text)}</a:t></a:r>" if text else ""
    # The end mark carries the size too: an empty cell is then one line of this size, not of 18 pt.
    return f"<a:p><a:pPr {' '.join(props)}>{spacing}{marker}</a:pPr>{run}<a:endParaRPr {size}/></a:p>"


def _body_pr() -> str:
    """Fixed insets, wrapping and no autofit: text is sized here, so it is where it was measured."""
    return (
        f'<a:bodyPr wrap="square" lIns="{_emu(INSET_X)}" rIns="{_emu(INSET_X)}" tIns="{_emu(INSET_Y)}" '
        f'bIns="{_emu(INSET_Y)}" anchor="t" rtlCol="0"><a:noAutofit/></a:bodyPr><a:lstStyle/>'
    )


class _Shapes:
    """The DrawingML of one slide's shapes, added to its shape tree in one parse."""

    def __init__(self, slide: Any) -> None:
        self.slide = slide
        self.parts: list[str] = []
        self.next_id = 100

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def text(self, rect: Rect, paragraphs: list[Paragraph], *, accent: bool = False, align: str | None = None) -> None:
        shape_id = self._id()
        body = "".join(_paragraph_xml(t, f, b, accent=accent, align=align) for t, f, b in paragraphs) or "<a:p/>"
        self.parts.append(
            f'<p:sp><p:nvSpPr><p:cNvPr id="{shape_id}" name="Text {shape_id}"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr>'
            f'<p:spPr>{_xfrm(rect)}<a:prstGeom prst="rect"><a:avLst/></a:prstGeom><a:noFill/></p:spPr>'
            f"<p:txBody>{_body_pr()}{body}</p:txBody></p:sp>"
        )

    def bar(self, rect: Rect) -> None:
        shape_id = self._id()
        self.parts.append(
            f'<p:sp><p:nvSpPr><p:cNvPr id="{shape_id}" name="Accent {shape_id}"/><p:cNvSpPr/><p:nvPr/></p:nvSpPr>'
            f'<p:spPr>{_xfrm(rect)}<a:prstGeom prst="rect"><a:avLst/></a:prstGeom>'
            f'<a:solidFill><a:schemeClr val="accent1"/></a:solidFill><a:ln><a:noFill/></a:ln></p:spPr></p:sp>'
        )

    def table(self, rect: Rect, widths: list[float], rows: list[tuple[tuple[str, ...], Font, float]]) -> None:
        shape_id = self._id()
        grid = "".join(f'<a:gridCol w="{_emu(w)}"/>' for w in widths)
        margins = f'marL="{_emu(INSET_X)}" marR="{_emu(INSET_X)}" marT="{_emu(INSET_Y)}" marB="{_emu(INSET_Y)}"'
        body = "".join(
            f'<a:tr h="{_emu(height)}">'
            + "".join(
                f"<a:tc><a:txBody><a:bodyPr/><a:lstStyle/>{_paragraph_xml(cell, font, False)}</a:txBody><a:tcPr {margins}/></a:tc>"
                for cell in cells
            )
            + "</a:tr>"
            for cells, font, height in rows
        )
        self.parts.append(
            f'<p:graphicFrame><p:nvGraphicFramePr><p:cNvPr id="{shape_id}" name="Table {shape_id}"/>'
            '<p:cNvGraphicFramePr><a:graphicFrameLocks noGrp="1"/></p:cNvGraphicFramePr><p:nvPr/></p:nvGraphicFramePr>'
            f'{_xfrm(rect, "p:xfrm")}<a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/table">'
            f'<a:tbl><a:tblPr firstRow="1" bandRow="1"><a:tableStyleId>{TABLE_STYLE}</a:tableStyleId></a:tblPr>'
            f"<a:tblGrid>{grid}</a:tblGrid>{body}</a:tbl></a:graphicData></a:graphic></p:graphicFrame>"
        )

    def flush(self) -> None:
        from pptx.oxml import parse_xml

        tree = parse_xml(f"<p:spTree {NS}>{''.join(self.parts)}</p:spTree>")
        target = self.slide.shapes._spTree
        for element in list(tree):
            target.append(element)


def _fitted(text: str, font: Font, rect: Rect, min_size: float) -> tuple[str, Font]:
    return fit(text, font, inner_width(rect.width), rect.height - 2 * INSET_Y, min_size)


def _set_placeholder(sp: Any, text: str, font: Font, align: str | None = None) -> None:
    """A title or subtitle placeholder (its `p:sp`) holding one fitted paragraph, its style from the template."""
    from pptx.oxml import parse_xml
    from pptx.oxml.ns import qn

    body = sp.find(qn("p:txBody"))
    for child in list(body):
        body.remove(child)
    for element in parse_xml(f"<p:txBody {NS}>{_body_pr()}{_paragraph_xml(text, font, False, align=align)}</p:txBody>"):
        body.append(element)


def _placeholders(slide: Any) -> list[tuple[int, Any]]:
    """The slide's placeholder shapes (`p:sp` with a `p:ph`) and their indexes, read from the
    XML: python-pptx's shape objects cost an XPath query per attribute."""
    from pptx.oxml.ns import qn

    path = f"{qn('p:nvSpPr')}/{qn('p:nvPr')}/{qn('p:ph')}"
    found = []
    for sp in slide.shapes._spTree.iterchildren(qn("p:sp")):
        ph = sp.find(path)
        if ph is not None:
            found.append((int(ph.get("idx", "0")), sp))
    return found


def _draw(slide: Any, spec: Slide, plan: _Plan, names: _PartNames) -> None:
    geom = plan.geometry
    shapes = _Shapes(slide)
    placeholders = dict(_placeholders(slide))
    opening = spec.subtitle is not None
    title_rect = plan.title_slide_title if opening else geom.title
    text, font = _fitted(slide_text(spec.title), Font(geom.title_font, SIZES.title), title_rect, SIZES.title_min)
    _set_placeholder(placeholders[0], text, font)
    if opening:
        subtitle = plan.title_slide_subtitle
        rect = subtitle or Rect(title_rect.left, title_rect.bottom + 12, title_rect.width, 60)
        text, font = _fitted(slide_text(spec.subtitle), Font(geom.body_font, SIZES.subtitle), rect, SIZES.subtitle_min)
        if subtitle is not None and 1 in placeholders:
            _set_placeholder(placeholders[1], text, font, align="ctr")
        else:
            shapes.text(rect, [(text, font, False)], align="ctr")
        shapes.bar(Rect(title_rect.left, title_rect.bottom + 4, title_rect.width, 4))
        shapes.flush()
        return
    shapes.bar(Rect(geom.body.left, geom.body.top - 8, geom.body.width, 1.5))
    regions = body_regions(spec, geom)
    if spec.lead:
        rect = regions["lead"]
        text, font = _fitted(spec.lead, Font(geom.body_font, SIZES.lead), rect, SIZES.lead_min)
        shapes.text(rect, [(text, font, False)])
    if spec.tiles:
        _tiles(shapes, spec, regions["tiles"], geom)
    main = regions["main"]
    if spec.table is not None:
        _table(shapes, spec.table, main, geom)
    elif spec.chart is not None:
        _chart(slide, spec.chart, main, names)
    elif spec.columns:
        _columns(shapes, spec, main, geom)
    elif spec.bullets:
        shapes.text(main, _fit_items(None, list(spec.bullets), main, geom))
    if spec.note:
        rect = regions["note"]
        font = Font(geom.body_font, SIZES.note)
        shapes.text(rect, [(truncate(spec.note, font, inner_width(rect.width), 2), font, False)])
    shapes.flush()


def _fit_items(heading: str | None, items: list[str], rect: Rect, geom: Geometry) -> list[Paragraph]:
    """A heading and bullets at the largest size from body size down that fits the box;
    at the smallest size each bullet is cut to what still fits."""
    width = inner_width(rect.width)
    room = rect.height - 2 * INSET_Y
    heading_font = Font(geom.body_font, SIZES.heading, True)
    head = [(truncate(heading, heading_font, width, 2), heading_font, False)] if heading else []

    def lay_out(size: float, max_lines: int | None) -> list[Paragraph]:
        font = Font(geom.body_font, size)
        return head + [
            (truncate(item, font, width - BULLET_INDENT, max_lines) if max_lines else item, font, True)
            for item in items
        ]

    def height(laid: list[Paragraph]) -> float:
        return sum(
            len(wrap(text, font, width - (BULLET_INDENT if is_bullet else 0))) * font.line_height
            + (PARAGRAPH_GAP if is_bullet else 0)
            for text, font, is_bullet in laid
        )

    size = SIZES.body
    while size > SIZES.body_min:
        laid = lay_out(size, None)
        if height(laid) <= room:
            return laid
        size -= 2
    for max_lines in (4, 3, 2, 1):
        laid = lay_out(SIZES.body_min, max_lines)
        if height(laid) <= room:
            return laid
    laid = lay_out(SIZES.body_min, 1)  # still too many: as many bullets as fit, one line each
    while laid and height(laid) > room:
        laid.pop()
    return laid


def _columns(shapes: _Shapes, spec: Slide, rect: Rect, geom: Geometry) -> None:
    gap = 24.0
    width = (rect.width - gap * (len(spec.columns) - 1)) / len(spec.columns)
    for index, column in enumerate(spec.columns):
        box = Rect(rect.left + index * (width + gap), rect.top, width, rect.height)
        shapes.text(box, _fit_items(column.heading, list(column.bullets), box, geom), accent=True)


def _tiles(shapes: _Shapes, spec: Slide, rect: Rect, geom: Geometry) -> None:
    gap = 16.0
    width = (rect.width - gap * (len(spec.tiles) - 1)) / len(spec.tiles)
    for index, tile in enumerate(spec.tiles):
        left = rect.left + index * (width + gap)
        shapes.bar(Rect(left, rect.top, width, 3))
        value_rect = Rect(left, rect.top + 6, width, SIZES.tile_value * 1.22 + 2 * INSET_Y)
        label_rect = Rect(left, value_rect.bottom, width, rect.bottom - value_rect.bottom)
        value, value_font = _fitted(
            tile.value, Font(geom.body_font, SIZES.tile_value, True), value_rect, SIZES.tile_value_min
        )
        label, label_font = _fitted(
            tile.label, Font(geom.body_font, SIZES.tile_label), label_rect, SIZES.tile_label_min
        )
        shapes.text(value_rect, [(value, value_font, False)], accent=True, align="ctr")
        shapes.text(label_rect, [(label, label_font, False)], align="ctr")


def _table(shapes: _Shapes, table: Table, rect: Rect, geom: Geometry) -> None:
    font = table_font(geom)
    bold = Font(font.typeface, font.size, True)
    widths = column_widths(table, rect.width)
    rows = [(table.header, bold), *((row, font) for row in table.rows)]
    laid = [(cells, row_font, row_height(cells, widths, row_font)) for cells, row_font in rows]
    shapes.table(Rect(rect.left, rect.top, rect.width, sum(h for _, _, h in laid)), widths, laid)


@dataclass(frozen=True)
class _ChartLook:
    """What every chart of one kind shares, whatever its values: its formatted XML and its
    workbook's files but the sheet and the sheet's strings (`_chart_look`)."""

    chart_space: Any  # the formatted `c:chartSpace`, its link to the workbook left out
    workbook: tuple[tuple[str, bytes | None], ...]  # XlsxWriter's files in order; None: the data's own


_CHART_LOOKS: dict[Chart, _ChartLook] = {}  # by the chart with its categories and values left out
_SHEET = "xl/worksheets/sheet1.xml"
_STRINGS = "xl/sharedStrings.xml"
# A category or series name XlsxWriter stores as it is (no escape, no URL, no formula, no space kept).
_PLAIN_CELL = re.compile(r"[A-Za-z0-9]+( [A-Za-z0-9]+)*")


class _PartNames:
    """The names of a deck's parts, kept as charts are added, to name a new part as python-pptx's
    `next_partname` does without its walk over every part of the package (twice per chart)."""

    def __init__(self, taken: frozenset[str]) -> None:
        self.taken = set(taken)

    def add(self, *parts: Any) -> None:
        self.taken.update(str(part.partname) for part in parts)

    def next(self, template: str) -> Any:
        """`package.next_partname(template)`: from one past the number of names with the
        template's prefix down, the first name not taken."""
        from pptx.opc.packuri import PackURI

        prefix = template[: (template % 42).find("42")]
        count = sum(name.startswith(prefix) for name in self.taken)
        name = next(template % n for n in range(count + 1, 0, -1) if template % n not in self.taken)
        self.taken.add(name)
        return PackURI(name)


def _chart(slide: Any, chart_spec: Chart, rect: Rect, names: _PartNames) -> None:
    """A native chart: python-pptx builds and formats the first of each kind (title, series
    names, ...) in a process; the others copy its formatted XML and put their own categories
    and values in with python-pptx's own series writer, which is what building and formatting
    them would give, for a fraction of the time (tests/test_qbr.py compares the bytes). Their
    parts are named from `names`, as python-pptx names them."""
    from pptx.chart.data import CategoryChartData
    from pptx.chart.xmlwriter import SeriesXmlRewriterFactory
    from pptx.enum.chart import XL_CHART_TYPE
    from pptx.opc.constants import CONTENT_TYPE, RELATIONSHIP_TYPE
    from pptx.parts.chart import ChartPart
    from pptx.parts.embeddedpackage import EmbeddedXlsxPart
    from pptx.util import Pt

    data = CategoryChartData(number_format="0")
    data.categories = chart_spec.categories
    for name, values in chart_spec.series:
        data.add_series(name, values)
    kind = XL_CHART_TYPE.LINE_MARKERS if chart_spec.kind == "line" else XL_CHART_TYPE.COLUMN_CLUSTERED
    box = (Pt(rect.left), Pt(rect.top), Pt(rect.width), Pt(rect.height))
    rows = len(chart_spec.categories)
    plain = (
        rows > 0
        and len(chart_spec.series) < 26  # its columns are single letters, A to Z
        and all(_PLAIN_CELL.fullmatch(text) for text in (*chart_spec.categories, *(n for n, _ in chart_spec.series)))
        and all(len(values) == rows and all(map(math.isfinite, values)) for _, values in chart_spec.series)
    )
    key = replace(chart_spec, categories=(), series=tuple((name, ()) for name, _ in chart_spec.series))
    look = _CHART_LOOKS.get(key) if plain else None
    if look is None:
        chart = slide.shapes.add_chart(kind, *box, data).chart
        names.add(chart.part, chart.part.chart_workbook.xlsx_part)
        _format_chart(chart, chart_spec)
        if plain:
            _CHART_LOOKS[key] = _chart_look(chart)
        return
    package = slide.part.package
    part = ChartPart(
        names.next(ChartPart.partname_template), CONTENT_TYPE.DML_CHART, package, copy.deepcopy(look.chart_space)
    )
    SeriesXmlRewriterFactory(kind, data).replace_series_data(part._element)
    # What `update_from_xlsx_blob` does for a chart without a workbook, the part named from `names`.
    part.chart_workbook.xlsx_part = EmbeddedXlsxPart(
        names.next(EmbeddedXlsxPart.partname_template),
        EmbeddedXlsxPart.content_type,
        package,
        _workbook(look, chart_spec),
    )
    slide.shapes._add_chart_graphicFrame(slide.part.relate_to(part, RELATIONSHIP_TYPE.CHART), *box)


def _format_chart(chart: Any, chart_spec: Chart) -> None:
    from pptx.enum.chart import XL_LABEL_POSITION, XL_LEGEND_POSITION, XL_MARKER_STYLE
    from pptx.util import Pt

    chart.font.size = Pt(12)
    chart.has_title = True
    chart.chart_title.text_frame.text = chart_spec.title
    chart.chart_title.text_frame.paragraphs[0].runs[0].font.size = Pt(14)
    chart.has_legend = len(chart_spec.series) > 1
    if chart.has_legend:
        chart.legend.position = XL_LEGEND_POSITION.BOTTOM
        chart.legend.include_in_layout = False
    for axis, title in ((chart.category_axis, chart_spec.x_title), (chart.value_axis, chart_spec.y_title)):
        axis.has_title = True
        axis.axis_title.text_frame.text = title
        axis.axis_title.text_frame.paragraphs[0].runs[0].font.size = Pt(12)
    chart.value_axis.minimum_scale = 0
    if chart_spec.y_max is not None:
        chart.value_axis.maximum_scale = chart_spec.y_max
    chart.value_axis.tick_labels.number_format = "#,##0"
    chart.value_axis.tick_labels.number_format_is_linked = False
    plot = chart.plots[0]
    if chart_spec.labels:
        # Every value is labelled, so a score of 0 reads as 0, not as a missing point.
        plot.has_data_labels = True
        labels = plot.data_labels
        labels.number_format, labels.number_format_is_linked = "#,##0", False
        labels.show_value = True
        labels.font.size = Pt(11)
        labels.position = XL_LABEL_POSITION.ABOVE if chart_spec.kind == "line" else XL_LABEL_POSITION.OUTSIDE_END
    if chart_spec.kind == "line":
        for series in plot.series:
            series.smooth = False
            series.marker.style = XL_MARKER_STYLE.CIRCLE
            series.marker.size = 7


def _chart_look(chart: Any) -> _ChartLook:
    """A chart python-pptx built and formatted, as the look of its kind: its XML without the
    link to its workbook (each copy links its own), and its workbook's files but the two that
    hold the data."""
    chart_space = copy.deepcopy(chart._chartSpace)
    chart_space._remove_externalData()
    with zipfile.ZipFile(io.BytesIO(chart.part.chart_workbook.xlsx_part.blob)) as workbook:
        files = tuple(
            (name, None if name in (_SHEET, _STRINGS) else workbook.read(name)) for name in workbook.namelist()
        )
    return _ChartLook(chart_space, files)


def _workbook(look: _ChartLook, chart_spec: Chart) -> bytes:
    """The chart's workbook's files as python-pptx has XlsxWriter write them (categories in
    column A from row 2, one column per series, its name in row 1, numbers in format "0"): the
    look's files, and the sheet and its shared strings written here. Stored, not compressed:
    the deck's zip stamps and compresses every workbook's files (`_StampedZip`)."""
    names = [name for name, _ in chart_spec.series]
    rows = len(chart_spec.categories)
    last = chr(ord("A") + len(names))
    strings: dict[str, int] = {}
    for text in (*chart_spec.categories, *names):
        strings.setdefault(text, len(strings))
    spans = f"1:{len(names) + 1}"
    header = "".join(f'<c r="{chr(ord("B") + i)}1" t="s"><v>{strings[name]}</v></c>' for i, name in enumerate(names))
    body = [f'<row r="1" spans="{spans}">{header}</row>']
    for index, category in enumerate(chart_spec.categories):
        row = index + 2
        cells = "".join(
            f'<c r="{chr(ord("B") + i)}{row}" s="2"><v>{values[index]:.16G}</v></c>'
            for i, (_, values) in enumerate(chart_spec.series)
        )
        body.append(
            f'<row r="{row}" spans="{spans}"><c r="A{row}" s="1" t="s"><v>{strings[category]}</v></c>{cells}</row>'
        )
    sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        f'<dimension ref="A1:{last}{rows + 1}"/><sheetViews><sheetView tabSelected="1" workbookViewId="0"/></sheetViews>'
        '<sheetFormatPr defaultRowHeight="15"/><cols><col min="1" max="1" width="10.7109375" customWidth="1"/></cols>'
        f"<sheetData>{''.join(body)}</sheetData>"
        '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
    )
    shared = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'count="{rows + len(names)}" uniqueCount="{len(strings)}">'
        + "".join(f"<si><t>{text}</t></si>" for text in strings)
        + "</sst>"
    )
    data = {_SHEET: sheet.encode(), _STRINGS: shared.encode()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as workbook:
        for name, content in look.workbook:
            workbook.writestr(name, data[name] if content is None else content)
    return buffer.getvalue()


def _footer(slide: Any, geom: Geometry, text: str, number: str) -> None:
    shapes = _Shapes(slide)
    font = Font(geom.body_font, SIZES.footer)
    shapes.text(geom.footer, [(truncate(text, font, inner_width(geom.footer.width), 1), font, False)])
    shapes.text(geom.number, [(number, font, False)], align="r")
    shapes.flush()


def _drop_empty_placeholders(slide: Any) -> None:
    """Remove placeholders left empty, so no "Click to add ..." prompt shows in the deck."""
    from pptx.oxml.ns import qn

    tree = slide.shapes._spTree
    for _, sp in _placeholders(slide):
        body = sp.find(qn("p:txBody"))
        if body is not None and not "".join(body.itertext()).strip():
            tree.remove(sp)


def render_slides_md(ctx: QbrContext) -> str:
    """The customer deck as Markdown, for where python-pptx is not installed."""
    return render_template(SLIDES_TEMPLATE, ctx=ctx, slides=customer_slides(ctx), fmt=FORMATS)


class _StampedZip:
    """A deflated zip whose every entry has one fixed time, in the order written: byte for byte
    what `zipfile` writes for the same entries (tests/test_qbr.py compares), but each distinct
    entry is compressed once per process, and most of a deck's entries are the same in every deck.

    Embedded chart workbooks (.xlsx) are zips too, and XlsxWriter stamps their core
    properties with the current time, so those are normalized the same way.
    """

    def __init__(self, fixed: dt.datetime) -> None:
        self.fixed = max(fixed, dt.datetime(1980, 1, 1))  # the earliest time a zip entry can hold
        self.stamp = self.fixed.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        when = self.fixed
        self.dos = (
            when.hour << 11 | when.minute << 5 | when.second // 2,
            (when.year - 1980) << 9 | when.month << 5 | when.day,
        )
        self.out = io.BytesIO()
        self.directory: list[bytes] = []

    def entry(self, filename: str, content: bytes) -> None:
        if filename.endswith(".xlsx"):
            content = _normalized_zip(content, self.fixed)
        elif filename.endswith("core.xml"):
            content = _CORE_DATES.sub(rb"\g<1>" + self.stamp + rb"\g<3>", content)
        name = filename.encode("ascii")  # part names are ASCII: no UTF-8 flag, as zipfile writes them
        crc, compressed = _deflated(content)
        # zipfile's fields: version 2.0 (deflate), made on Unix (3), no flags, deflated (8), rw------- (0o600).
        fields = (*self.dos, crc, len(compressed), len(content), len(name))
        offset = self.out.tell()
        self.out.write(struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, *fields, 0) + name + compressed)
        self.directory.append(
            struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, *fields, 0, 0, 0, 0, 0o600 << 16, offset)
            + name
        )

    def getvalue(self) -> bytes:
        start = self.out.tell()
        for record in self.directory:
            self.out.write(record)
        count, size = len(self.directory), self.out.tell() - start
        self.out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, start, 0))
        return self.out.getvalue()


@functools.lru_cache(maxsize=512)
def _deflated(content: bytes) -> tuple[int, bytes]:
    """The CRC and raw deflate stream of `content` at zlib's default level, as zipfile makes
    them. A deck's template parts and a chart workbook's fixed files come back every deck."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return zlib.crc32(content), compressor.compress(content) + compressor.flush()


def _package_zip(prs: Any, fixed: dt.datetime, serialized: dict[int, tuple[tuple[str, bytes], ...]]) -> bytes:
    """The deck's file: the entries python-pptx's package writer makes, in its order, the
    template's parts as `serialized` once, written into a stamped zip."""
    from pptx.opc.oxml import serialize_part_xml
    from pptx.opc.serialized import _ContentTypesItem

    package = prs.part.package
    parts = tuple(package.iter_parts())
    stamped = _StampedZip(fixed)
    stamped.entry("[Content_Types].xml", serialize_part_xml(_ContentTypesItem.xml_for(parts)))
    stamped.entry("_rels/.rels", package._rels.xml)
    for part in parts:
        for filename, content in serialized.get(id(part)) or _part_entries(part):
            stamped.entry(filename, content)
    return stamped.getvalue()


def _normalized_zip(data: bytes, fixed: dt.datetime) -> bytes:
    """Rewrite a zip with a fixed timestamp on every entry, in its original order."""
    stamped = _StampedZip(fixed)
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        for entry in source.infolist():
            stamped.entry(entry.filename, source.read(entry.filename))
    return stamped.getvalue()
