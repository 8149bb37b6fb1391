"""Hostile inputs and faults (issue 14 points 5, 6, 8, 9): each weakness fails a test here.

docs/governance.md "Hostile inputs and faults" lists which test proves which guarantee.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from c360_dagster.domain.playbooks import build_playbook, load_playbook_library, render_playbook_markdown
from c360_dagster.domain.text import _environment, md_cell, md_text, visible_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "customer"

# --- 9. Text that spoofs -------------------------------------------------------------------
RLO, PDI, ZWSP, ZWJ, BOM = "\u202e", "\u2069", "\u200b", "\u200d", "\ufeff"
SPOOF = f"Acme{ZWSP} Corp {RLO}gpj.exe{PDI}"


def test_visible_text_shows_bidi_controls_and_zero_width_characters():
    assert visible_text(SPOOF) == "Acme<U+200B> Corp <U+202E>gpj.exe<U+2069>"
    assert visible_text(f"a{ZWJ}b{BOM}c\u2066d\u200fe") == "a<U+200D>b<U+FEFF>c<U+2066>d<U+200F>e"
    # Letters, accents and other scripts are untouched; ASCII passes as is.
    assert visible_text("Zoë Müller · 日本 · עברית") == "Zoë Müller · 日本 · עברית"
    assert visible_text("plain") == "plain" and visible_text(None) == "" and visible_text(7) == "7"


def test_markdown_helpers_neutralise_spoofing_characters():
    assert md_text(SPOOF) == "Acme&lt;U+200B&gt; Corp &lt;U+202E&gt;gpj.exe&lt;U+2069&gt;"
    assert md_cell(SPOOF) == md_text(SPOOF)
    assert RLO not in md_cell(f"={RLO}x") and md_cell(f"={RLO}x").startswith("'=")


def test_every_template_value_is_neutralised_even_without_a_filter():
    # The one Jinja environment every Markdown/SVG renderer uses finalizes every printed value.
    rendered = _environment().from_string("{{ name }}|{{ n }}|{{ none }}").render(name=SPOOF, n=3, none=None)
    assert rendered == "Acme<U+200B> Corp <U+202E>gpj.exe<U+2069>|3|None"


def test_a_spoofing_account_name_is_visible_in_the_playbook_markdown():
    library = load_playbook_library(CONFIGS / "playbooks.yaml")
    health = {"score": 90, "tier": "green", "status": "scored", "components": {}}
    plan = build_playbook({"account_id": "A1", "name": SPOOF}, health, [], [], library, dt.date(2024, 1, 1))
    text = render_playbook_markdown(plan)
    assert not {RLO, PDI, ZWSP} & set(text)
    assert "&lt;U+202E&gt;gpj.exe" in text
