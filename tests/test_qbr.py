"""QBR packs: content, Markdown and PowerPoint output, the slides.md fallback, gates, privacy, escaping."""

from __future__ import annotations

import datetime as dt
import io
import re
import sys
import time
import zipfile
from pathlib import Path

import polars as pl
import pytest
from pptx import Presentation
from pptx.enum.chart import XL_CHART_TYPE

from c360_dagster.domain import qbr, qbr_pptx
from c360_dagster.domain.entities import ENTITIES
from c360_dagster.domain.io import sha256_file
from c360_dagster.domain.view import Customer360

D = dt.date
AS_OF = D(2024, 6, 30)
HOSTILE = "Evil | Corp\n<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil.test","click")'
CONTACT_NAME = '@SUM(1+1)*cmd|"/C calc"!A0'  # a formula-injection payload as a person's name
ACCOUNT = {"account_id": "ACME-001", "name": HOSTILE, "segment": "enterprise", "csm_owner": "Sam Owner"}
MD_FILES = ["index.md", "roadmap.md", "scorecard.md", "timeline.md"]
SLIDE_TITLES = [
    f"Quarterly business review: {HOSTILE.replace(chr(10), ' ')}",
    "Executive summary",
    "Health scorecard",
    "Weekly active users vs seats",
    "Health components",
    "Signals and risks",
    "Renewal outlook",
    "The plan",
    "Score over time",
]


def _table(name: str, rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ENTITIES[name].polars_schema, orient="row")


def _view() -> Customer360:
    return Customer360(
        as_of=AS_OF,
        tables={
            "accounts": _table("accounts", [("ACME-001", HOSTILE, "enterprise", None, "NA", "Sam Owner", D(2020, 1, 1))]),
            "contacts": _table(
                "contacts",
                [
                    ("C1", "ACME-001", "Jane Doe", "jane@acme.test", "champion", D(2023, 1, 1), D(2024, 5, 1)),
                    ("C2", "ACME-001", CONTACT_NAME, "bob@acme.test", "exec_sponsor", D(2024, 5, 2), None),
                ],
            ),
            "subs": _table(
                "subs",
                [
                    ("S1", "ACME-001", FORMULA, "growth", 50, 12000.0, "USD", D(2023, 7, 1), D(2024, 7, 1), "active", True, None),
                    ("S2", "ACME-001", "Addon", "starter", 10, 2400.0, "USD", D(2024, 6, 10), D(2025, 6, 10), "active", False, None),
                    ("S3", "ACME-001", "Old", "starter", 99, 100.0, "USD", D(2022, 1, 1), D(2023, 1, 1), "churned", False, None),
                ],
            ),
            "usage": _table(
                "usage",
                [
                    ("ACME-001", D(2024, 1, 1), D(2024, 1, 7), 99, 1, 1, 1),  # older than the quarter
                    ("ACME-001", D(2024, 6, 3), D(2024, 6, 9), 40, 900, 12, 2),
                    ("ACME-001", D(2024, 6, 10), D(2024, 6, 16), 42, 950, 12, 3),
                    ("ACME-001", D(2024, 6, 17), D(2024, 6, 23), 38, 800, 11, 2),
                    ("ACME-001", D(2024, 6, 24), D(2024, 6, 30), 30, 700, 10, 1),
                ],
            ),
            "cases": _table(
                "cases",
                [
                    ("K1", "ACME-001", D(2024, 5, 1), D(2024, 5, 3), 2, False, "billing"),
                    ("K2", "ACME-001", D(2024, 6, 20), None, 1, True, HOSTILE),
                    ("K0", "ACME-001", D(2023, 1, 1), D(2023, 1, 2), 3, False, None),  # older than a year
                ],
            ),
            "nps": _table("nps", [("N1", "ACME-001", "C1", D(2024, 4, 15), 9, "great")]),
            "invoices": _table(
                "invoices",
                [
                    ("I1", "ACME-001", "S1", D(2024, 4, 1), D(2024, 5, 1), D(2024, 4, 20), 1200.5, None, "USD"),
                    ("I2", "ACME-001", "S1", D(2024, 5, 1), D(2024, 6, 1), None, 1200.0, None, "USD"),
                ],
            ),
            "crm_opps": _table("crm_opps", []),
        },
    )


def _component(score, weight, points, evidence=None, reason=None):
    return {
        "score": score, "weight": weight, "points": points, "available": score is not None,
        "reason": reason, "evidence": evidence or {},
    }


HEALTH = {
    "score": 42, "total": 100, "tier": "red", "status": "scored", "scorecard": "enterprise",
    "components": {
        "adoption": _component(55.0, 0.3, 16.5, {"active_ratio": 0.5}),
        "value": _component(40.0, 0.2, 8.0),
        "support": _component(None, 0.0, 0.0, reason="no cases in the window"),
        "commercial": _component(30.0, 0.3, 9.0),
        "sentiment": _component(42.5, 0.2, 8.5),
    },
}
SIGNALS = [
    {"code": "SIG_USAGE_SLIDE_4W", "kind": "risk", "evidence": '{"drop_pct":25.0}'},
    {"code": "SIG_EXPANSION_TRAIL", "kind": "expansion", "evidence": {"note": HOSTILE}},
    {
        "code": "SIG_STAKEHOLDER_CHANGE", "kind": "risk",
        "evidence": {"changes": [{"change": "left", "contact_id": "C1", "on": "2024-05-01", "role": "champion"}]},
    },
]
RENEWALS = [
    {
        "subscription_id": "S1", "account_id": "ACME-001", "account_name": HOSTILE, "segment": "enterprise",
        "csm_owner": "Sam Owner", "product": FORMULA, "plan": "growth", "renewal_date": D(2024, 7, 1),
        "days_to_renewal": 1, "arr": 12000.0, "currency": "USD", "tier": "red", "risk_signal_count": 1,
        "bucket": "Low", "probability": 0.35, "expected_arr": 4200.0,
        "risk_reasons": '[{"code":"SIG_USAGE_SLIDE_4W","text":"usage fell 25%"}]', "suggested_playbook": "save",
    }
]
PLAYBOOK = {
    "account_id": "ACME-001", "account_name": HOSTILE, "tier": "red", "plays": ["save"],
    "summary": "Save the account.", "raci": [],
    "steps": [
        {"playbook": "save", "title": "Exec call\nwith | sponsor", "owner_role": "csm", "due_date": "2024-07-07"},
        {"playbook": "save", "title": "Year-end review", "owner_role": "csm", "due_date": "2024-12-31"},
    ],
    "kpis": [{"name": "Adoption", "metric": "x", "current": 55.0, "target": 70.0, "unit": "score", "status": "not met"}],
    "checkpoints": [{"date": "2024-07-01", "what": "Renewal of S1"}],
    "risks": ["Champion left"],
}
HISTORY = [{"as_of": "2024-03-31", "score": 50, "tier": "amber"}, {"as_of": D(2024, 6, 30), "score": 42, "tier": "red"}]


def _ctx(*, include_contacts=False, history=HISTORY, playbook=PLAYBOOK, health=HEALTH) -> qbr.QbrContext:
    return qbr.build_qbr_context(
        ACCOUNT, _view(), health, SIGNALS, RENEWALS, playbook, history, include_contacts, AS_OF
    )


def _pack_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _deck_texts(data: bytes) -> list[str]:
    texts = []
    for slide in Presentation(io.BytesIO(data)).slides:
        for shape in slide.shapes:
            if shape.has_text_frame:
                texts.append(shape.text_frame.text)
            if shape.has_table:
                texts += [cell.text for row in shape.table.rows for cell in row.cells]
    return texts


def _charts(data: bytes) -> dict[str, object]:
    return {
        slide.shapes.title.text: shape.chart
        for slide in Presentation(io.BytesIO(data)).slides
        for shape in slide.shapes
        if shape.has_chart
    }


# --- context -----------------------------------------------------------------------------


def test_weekly_usage_counts_last_quarter_against_seats_of_active_subs():
    # By hand: the January window is older than 13 weeks; S1 (50 seats) is active throughout,
    # S2 (10 seats) from 2024-06-10, S3 is churned and never counts.
    assert [(w.week_end, w.active_users, w.seats) for w in _ctx().weekly_usage] == [
        (D(2024, 6, 9), 40, 50),
        (D(2024, 6, 16), 42, 60),
        (D(2024, 6, 23), 38, 60),
        (D(2024, 6, 30), 30, 60),
    ]


def test_timeline_holds_dated_events_sorted_by_date_kind_id():
    # By hand: K0 is older than a year; I2 was never paid and fell due 2024-06-01; renewals of
    # both active subs lie within the year ahead, S3's renewal is older than a year.
    events = [(e.on, e.kind, e.ref) for e in _ctx(include_contacts=True).timeline]
    assert events == [
        (D(2024, 4, 1), "invoice_issued", "I1"),
        (D(2024, 4, 15), "nps_answer", "N1"),
        (D(2024, 4, 20), "invoice_paid", "I1"),
        (D(2024, 5, 1), "case_opened", "K1"),
        (D(2024, 5, 1), "invoice_issued", "I2"),
        (D(2024, 5, 1), "stakeholder_ended", "C1"),
        (D(2024, 5, 2), "stakeholder_started", "C2"),
        (D(2024, 5, 3), "case_closed", "K1"),
        (D(2024, 6, 1), "invoice_overdue", "I2"),
        (D(2024, 6, 20), "case_opened", "K2"),
        (D(2024, 7, 1), "renewal_due", "S1"),
        (D(2025, 6, 10), "renewal_due", "S2"),
    ]
    assert _ctx().timeline[0].detail == "1200.50 USD"


def test_roadmap_has_next_quarter_items_then_adoption_gaps():
    # By hand: the horizon is 2024-06-30 + 90 days = 2024-09-28, so the 2024-12-31 step is out;
    # adoption 55 < 70; the usage slide signal; 30 of 60 seats = 0.5 < 0.8 in the latest week.
    items = [(i.due_on, i.kind, i.what) for i in _ctx().roadmap]
    assert items == [
        (D(2024, 7, 1), "checkpoint", "Renewal of S1"),
        (D(2024, 7, 7), "step", "Exec call\nwith | sponsor"),
        (None, "adoption_gap", "Raise the adoption score from 55 to 70"),
        (None, "adoption_gap", "Resolve SIG_USAGE_SLIDE_4W (drop_pct=25)"),
        (None, "adoption_gap", "Activate unused seats (30 of 60 seats active in the week to 2024-06-30)"),
    ]


def test_score_change_compares_with_the_latest_earlier_snapshot():
    history = [
        {"as_of": "2023-12-31", "score": 70, "tier": "green"},
        {"as_of": "2024-03-31", "score": 50, "tier": "amber"},
        {"as_of": "2024-09-30", "score": 99, "tier": "green"},  # after as_of: ignored
    ]
    ctx = _ctx(history=history)
    assert (ctx.previous.as_of, ctx.score_change, ctx.change_phrase) == (D(2024, 3, 31), -8, "down 8 since 2024-03-31")
    assert [p.score for p in ctx.score_history] == [70, 50, 42]
    only_today = _ctx(history=[{"as_of": "2024-06-30", "score": 42, "tier": "red"}])
    assert (only_today.score_change, only_today.change_phrase) == (None, "no earlier snapshot")


# --- gates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "playbook", "contacts", "signoff", "expected"),
    [
        ("red", False, False, False, [False, True]),
        ("red", True, False, False, [True, True]),
        ("amber", False, False, False, [True, True]),
        ("green", True, True, False, [True, False]),
        ("green", True, True, True, [True, True]),
        ("red", False, True, False, [False, False]),
    ],
)
def test_gates_block_and_allow(tier, playbook, contacts, signoff, expected):
    gates = qbr.check_gates(tier, playbook, contacts, signoff, account_id="ACME-001")
    assert [g.code for g in gates] == ["DUTY_PLAYBOOK_MISSING", "PRIVACY_SIGNOFF_REQUIRED"]
    assert [g.passed for g in gates] == expected


def test_gate_messages_say_what_to_do():
    duty, privacy = qbr.check_gates("red", False, True, False, account_id="ACME-001")
    assert duty.message.startswith("DUTY_PLAYBOOK_MISSING") and "c360 c360:playbook --account ACME-001" in duty.message
    assert privacy.message.startswith("PRIVACY_SIGNOFF_REQUIRED") and "--privacy-signoff" in privacy.message


# --- the pack ----------------------------------------------------------------------------


def test_pack_writes_every_file_with_its_sections_and_hashes(tmp_path):
    written = qbr.write_qbr_pack(_ctx(), tmp_path)
    assert sorted(written) == ["qbr_ACME-001.pptx"] + [f"qbr_ACME-001/{name}" for name in MD_FILES]
    assert all(sha256_file(tmp_path / rel) == digest for rel, digest in written.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qbr_ACME-001", "qbr_ACME-001.pptx"]  # no temp left
    pack = tmp_path / "qbr_ACME-001"
    sections = {
        "index.md": ["## Executive summary", "## Contents", "## Stakeholders", "[Slides](../qbr_ACME-001.pptx)"],
        "scorecard.md": ["## Health score", "## Components", "## Signals", "## Renewal outlook", "| Change since last snapshot | down 8 since 2024-03-31 |"],
        "timeline.md": ["| Date | Event | Reference | Detail |", "| 2024-06-01 | invoice overdue | I2 | 1200.00 USD |"],
        "roadmap.md": ["## Next quarter", "## Adoption gaps", "## KPIs", "## Risks", "| 2024-07-01 | checkpoint | Renewal of S1 |  | planned |"],
    }
    for name, expected in sections.items():
        text = (pack / name).read_text(encoding="utf-8")
        assert all(line in text for line in expected), name
    scorecard = (pack / "scorecard.md").read_text(encoding="utf-8")
    assert "| support | n/a | 0 | 0 |  |" in scorecard and "- support: no cases in the window" in scorecard


def test_pptx_has_the_slides_charts_of_real_numbers_and_no_placeholder_text(tmp_path):
    qbr.write_qbr_pack(_ctx(), tmp_path)
    data = (tmp_path / "qbr_ACME-001.pptx").read_bytes()
    prs = Presentation(io.BytesIO(data))
    assert [slide.shapes.title.text for slide in prs.slides] == SLIDE_TITLES
    for slide in prs.slides:
        for shape in slide.placeholders:
            assert shape.text_frame.text.strip(), "an empty placeholder would show 'Click to add ...'"
    assert not any("Click to" in text for text in _deck_texts(data))

    charts = _charts(data)
    usage = charts["Weekly active users vs seats"]
    assert usage.chart_type == XL_CHART_TYPE.LINE
    assert list(usage.plots[0].categories) == ["2024-06-09", "2024-06-16", "2024-06-23", "2024-06-30"]
    assert {s.name: list(s.values) for s in usage.plots[0].series} == {
        "Active users": [40.0, 42.0, 38.0, 30.0],
        "Seats": [50.0, 60.0, 60.0, 60.0],
    }
    components = charts["Health components"]
    assert components.chart_type == XL_CHART_TYPE.BAR_CLUSTERED
    # support is not measured: it is absent from the bars and named as n/a in a note.
    assert list(components.plots[0].categories) == ["adoption", "value", "commercial", "sentiment"]
    assert list(components.plots[0].series[0].values) == [55.0, 40.0, 30.0, 42.5]
    assert "support: n/a (no cases in the window)" in _deck_texts(data)
    history = charts["Score over time"]
    assert list(history.plots[0].categories) == ["2024-03-31", "2024-06-30"]
    assert list(history.plots[0].series[0].values) == [50.0, 42.0]


def test_no_score_chart_with_fewer_than_two_snapshots():
    data = qbr_pptx.render_pptx(_ctx(history=[]))
    assert "Score over time" not in _charts(data)
    assert len(Presentation(io.BytesIO(data)).slides) == len(SLIDE_TITLES) - 1


def test_pptx_is_byte_identical_on_a_rerun_seconds_later():
    first = qbr_pptx.render_pptx(_ctx())
    time.sleep(1.1)  # python-pptx and XlsxWriter stamp the clock at one-second resolution
    assert qbr_pptx.render_pptx(_ctx()) == first
    with zipfile.ZipFile(io.BytesIO(first)) as deck:
        assert {info.date_time for info in deck.infolist()} == {(2024, 6, 30, 0, 0, 0)}
    props = Presentation(io.BytesIO(first)).core_properties
    assert (props.created, props.modified, props.revision) == (dt.datetime(2024, 6, 30), dt.datetime(2024, 6, 30), 1)


def test_rerun_gives_byte_identical_pack(tmp_path):
    qbr.write_qbr_pack(_ctx(), tmp_path / "a")
    qbr.write_qbr_pack(_ctx(), tmp_path / "b")
    first, second = _pack_bytes(tmp_path / "a"), _pack_bytes(tmp_path / "b")
    assert len(first) == 5 and first == second


def test_slides_md_replaces_the_deck_when_python_pptx_is_missing(tmp_path, monkeypatch):
    qbr.write_qbr_pack(_ctx(), tmp_path)  # an earlier run with a deck
    monkeypatch.setitem(sys.modules, "pptx", None)  # `import pptx` now raises ImportError
    assert not qbr.pptx_available()
    written = qbr.write_qbr_pack(_ctx(), tmp_path)
    assert sorted(written) == [f"qbr_ACME-001/{name}" for name in sorted([*MD_FILES, "slides.md"])]
    assert not (tmp_path / "qbr_ACME-001.pptx").exists()  # no stale deck beside the new pack
    pack = tmp_path / "qbr_ACME-001"
    assert "[Slides](slides.md)" in (pack / "index.md").read_text(encoding="utf-8")
    slides = (pack / "slides.md").read_text(encoding="utf-8")
    titles = [line.split(": ", 1)[1] for line in slides.splitlines() if line.startswith("## Slide ")]
    assert titles[1:] == SLIDE_TITLES[1:]
    # The usage chart's numbers, as a table (by hand, as in the weekly usage test).
    assert "| Category | Active users | Seats |\n|---|---|---|\n| 2024-06-09 | 40 | 50 |" in slides
    assert "| 2024-06-30 | 30 | 60 |" in slides and "support: n/a (no cases in the window)" in slides


def test_pptx_false_writes_slides_md_too(tmp_path):
    written = qbr.write_qbr_pack(_ctx(), tmp_path, pptx=False)
    assert "qbr_ACME-001/slides.md" in written and "qbr_ACME-001.pptx" not in written


# --- privacy -----------------------------------------------------------------------------

def _all_text(root: Path) -> str:
    parts = []
    for path in sorted(root.rglob("*")):
        if path.suffix == ".md":
            parts.append(path.read_text(encoding="utf-8"))
        elif path.suffix == ".pptx":
            parts += _deck_texts(path.read_bytes())
    return "\n".join(parts)


def test_contacts_are_roles_only_by_default(tmp_path):
    qbr.write_qbr_pack(_ctx(), tmp_path)
    qbr.write_qbr_pack(_ctx(), tmp_path / "md", pptx=False)
    text = _all_text(tmp_path)
    assert not [word for word in ("Jane Doe", "jane@acme.test", "bob@acme.test", "calc") if word in text]
    assert "| champion | 2023-01-01 | 2024-05-01 |" in text and "score 9, champion |" in text
    assert "contact\\_id" not in text
    assert "| SIG\\_STAKEHOLDER\\_CHANGE | risk | changes=(change=left, on=2024-05-01, role=champion) |" in text


def test_contacts_appear_with_include_contacts(tmp_path):
    qbr.write_qbr_pack(_ctx(include_contacts=True), tmp_path)
    index = (tmp_path / "qbr_ACME-001" / "index.md").read_text(encoding="utf-8")
    assert "| Role | Since | Until | Name | Email |" in index
    assert "| champion | 2023-01-01 | 2024-05-01 | Jane Doe | jane@acme.test |" in index
    timeline = (tmp_path / "qbr_ACME-001" / "timeline.md").read_text(encoding="utf-8")
    assert "| 2024-04-15 | NPS answer | N1 | score 9, champion Jane Doe jane@acme.test |" in timeline
    scorecard = (tmp_path / "qbr_ACME-001" / "scorecard.md").read_text(encoding="utf-8")
    assert "changes=(change=left, contact\\_id=C1, on=2024-05-01, role=champion)" in scorecard


# --- escaping ----------------------------------------------------------------------------


def test_hostile_text_cannot_break_markdown(tmp_path):
    qbr.write_qbr_pack(_ctx(include_contacts=True), tmp_path)
    qbr.write_qbr_pack(_ctx(include_contacts=True), tmp_path / "md", pptx=False)
    for path in sorted(tmp_path.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert "<script>" not in text, path.name
        assert "alert(1)" not in text or "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path.name
        assert not any(line.startswith("=") for line in text.splitlines()), path.name
        # Every row of a table keeps the header's column count: no raw `|` or newline leaked.
        for block in re.findall(r"(?m)(?:^\|.*\n)+", text):
            counts = {row.replace("\\|", "").count("|") for row in block.splitlines()}
            assert len(counts) == 1, (path.name, block)
    index = (tmp_path / "qbr_ACME-001" / "index.md").read_text(encoding="utf-8")
    assert index.startswith("# Quarterly business review: Evil \\| Corp &lt;script&gt;alert(1)&lt;/script&gt;\n")
    assert "| exec\\_sponsor | 2024-05-02 | current | '@SUM(1+1)\\*cmd\\|\"/C calc\"!A0 | bob@acme.test |" in index
    scorecard = (tmp_path / "qbr_ACME-001" / "scorecard.md").read_text(encoding="utf-8")
    assert "| S1 | '=HYPERLINK(\"http://evil.test\",\"click\") | growth |" in scorecard
    roadmap = (tmp_path / "qbr_ACME-001" / "roadmap.md").read_text(encoding="utf-8")
    assert "| 2024-07-07 | step | Exec call with \\| sponsor | csm | planned |" in roadmap


def test_hostile_text_cannot_break_a_slide():
    texts = _deck_texts(qbr_pptx.render_pptx(_ctx(include_contacts=True)))
    assert not [text for text in texts if "\n" in text and not text.startswith("• ")]
    assert "Quarterly business review: Evil | Corp <script>alert(1)</script>" in texts
    assert "'=HYPERLINK(\"http://evil.test\",\"click\")" in texts  # renewal table: product cell
    assert "Exec call with | sponsor" in texts  # plan table: newline folded


def test_slide_text_folds_lines_drops_xml_invalid_chars_and_guards_formulas():
    assert qbr_pptx.slide_text("a\nb\x00\x07 c") == "a b c"
    assert [qbr_pptx.slide_text(v) for v in ("=1+2", "+x", "-x", "@x")] == ["'=1+2", "'+x", "'-x", "'@x"]
    assert (qbr_pptx.slide_text(-3), qbr_pptx.slide_text(None)) == ("-3", "")


# --- atomic pack -------------------------------------------------------------------------


def test_failure_mid_write_leaves_the_previous_pack(tmp_path, monkeypatch):
    qbr.write_qbr_pack(_ctx(), tmp_path)
    before = _pack_bytes(tmp_path)
    better = _ctx(health={**HEALTH, "score": 80, "tier": "green"})
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(path, data)

    real_write = qbr.write_bytes_atomic
    monkeypatch.setattr(qbr, "write_bytes_atomic", failing_write)
    with pytest.raises(OSError, match="disk full"):
        qbr.write_qbr_pack(better, tmp_path)
    assert _pack_bytes(tmp_path) == before  # and no temp folder is left behind


def test_failure_while_swapping_restores_the_previous_pack(tmp_path, monkeypatch):
    qbr.write_qbr_pack(_ctx(), tmp_path)
    before = _pack_bytes(tmp_path)
    real_replace = qbr.os.replace

    def failing_replace(source, target):
        if Path(target) == tmp_path / "qbr_ACME-001.pptx":  # the last step, the new folder is in place
            raise OSError("rename failed")
        return real_replace(source, target)

    monkeypatch.setattr(qbr.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        qbr.write_qbr_pack(_ctx(history=[]), tmp_path)
    monkeypatch.undo()
    assert _pack_bytes(tmp_path) == before


def test_empty_placeholders_are_removed():
    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])  # title and an empty body placeholder
    slide.shapes.title.text = "Kept"
    qbr_pptx._drop_empty_placeholders(slide)
    assert [shape.text_frame.text for shape in slide.placeholders] == ["Kept"]
