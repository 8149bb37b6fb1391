"""Text measured with real font metrics, so every text on a slide is sized to fit its box.

PowerPoint and LibreOffice lay text out with the deck's fonts; this module measures it the same
way with the metric-compatible open font (Carlito for Calibri, Liberation for Arial/Times), so a
line that wraps here wraps there. Lengths are in points (1 pt = 12,700 EMU).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The open fonts with the same advance widths as the ones a deck names (Debian's packages
# fonts-crosextra-carlito, fonts-liberation2); an unknown typeface is measured as DejaVu Sans,
# which is wider than the usual sans-serif fonts, so text sized by it still fits.
FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
METRIC_FONTS = {
    "calibri": ("Carlito-Regular.ttf", "Carlito-Bold.ttf"),
    "carlito": ("Carlito-Regular.ttf", "Carlito-Bold.ttf"),
    "arial": ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
    "helvetica": ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
    "liberation sans": ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
    "times new roman": ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf"),
}
FALLBACK_FONT = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
# Without any font file a character is taken as 0.62 em wide: wider than Calibri's widest
# average, so the estimate errs towards smaller text, never towards overflow.
FALLBACK_EM = 0.62
LINE_SPACING = 1.22  # Calibri's ascent + descent per em: one line of single-spaced text
# A line is filled to this share of its box only: LibreOffice wrapped a line measured at 871 of
# 874 pt (its kerning and hinting differ from ours by a few points), so a line must not need
# the last few percent of the width to fit.
MEASURE_SHARE = 0.97
ELLIPSIS = "…"
_BREAK = re.compile(r"(\s+)")


@functools.cache
def _font_file(name: str) -> Path | None:
    for folder in FONT_DIRS:
        if folder.is_dir():
            found = sorted(folder.rglob(name))
            if found:
                return found[0]
    return None


@functools.cache
def _font(typeface: str, bold: bool, size_tenths: int) -> Any:
    """The measuring font at a size in tenths of a point (PIL's units are the size's pixels)."""
    from PIL import ImageFont  # imported on first measure: the console starts without it

    files = METRIC_FONTS.get(typeface.casefold(), FALLBACK_FONT)
    path = _font_file(files[bold]) or _font_file(FALLBACK_FONT[bold])
    return ImageFont.truetype(str(path), size_tenths) if path else None


@dataclass(frozen=True)
class Font:
    typeface: str = "Calibri"
    size: float = 18.0  # points
    bold: bool = False

    def sized(self, size: float) -> Font:
        return Font(self.typeface, size, self.bold)

    @property
    def line_height(self) -> float:
        return self.size * LINE_SPACING

    def width(self, text: str) -> float:
        """The advance width of `text` in points."""
        return _width(self.typeface, self.bold, round(self.size * 10), text) / 10


@functools.lru_cache(maxsize=65536)
def _width(typeface: str, bold: bool, size_tenths: int, text: str) -> float:
    font = _font(typeface, bold, size_tenths)
    if font is None:
        return len(text) * size_tenths * FALLBACK_EM
    return font.getlength(text)


@functools.lru_cache(maxsize=8192)
def wrap(text: str, font: Font, width: float) -> tuple[str, ...]:
    """Greedy word wrap as PowerPoint does it; a word wider than the line is broken by characters.

    Cached: fitting a deck's texts asks for the same wrap about ten times (each candidate size,
    the pagination and the drawing, both decks of an account). Every measure of the module goes
    through here, so the safety margin (`MEASURE_SHARE`) is applied once, here.
    """
    width *= MEASURE_SHARE
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for token in _BREAK.split(paragraph):
            if not token:
                continue
            candidate = line + token
            if font.width(candidate.rstrip()) <= width:
                line = candidate
                continue
            if token.isspace():
                continue  # a space at the end of a full line is not carried over
            if line.strip():
                lines.append(line.rstrip())
            line = ""
            for char in token:  # a long word: as many characters as fit on each line
                if line and font.width(line + char) > width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line.rstrip())
    return tuple(lines)


def text_height(text: str, font: Font, width: float, space_before: float = 0.0) -> float:
    return len(wrap(text, font, width)) * font.line_height + space_before


def truncate(text: str, font: Font, width: float, max_lines: int) -> str:
    """`text` cut (with an ellipsis) so it wraps into at most `max_lines` lines of `width`."""
    if max_lines < 1:
        return ""
    lines = wrap(text, font, width)
    if len(lines) <= max_lines:
        return text
    kept = " ".join(lines[:max_lines])
    # Drop characters until the cut text and its ellipsis fit in the allowed lines.
    low, high = 0, len(kept)
    while low < high:
        middle = (low + high + 1) // 2
        if len(wrap(kept[:middle].rstrip() + ELLIPSIS, font, width)) <= max_lines:
            low = middle
        else:
            high = middle - 1
    return kept[:low].rstrip() + ELLIPSIS


def fit(text: str, font: Font, width: float, height: float, min_size: float) -> tuple[str, Font]:
    """The largest size from `font.size` down to `min_size` at which `text` fits the box;
    at `min_size` the text is cut with an ellipsis instead."""
    size = font.size
    while size > min_size:
        sized = font.sized(size)
        if text_height(text, sized, width) <= height:
            return text, sized
        size = max(min_size, size - 2)
    smallest = font.sized(min_size)
    return truncate(text, smallest, width, int(height // smallest.line_height)), smallest
