"""The QBR decks rendered by LibreOffice: every word of every slide inside the slide and inside a
shape's frame, for every fixture account and for an account named with 10,000 hostile characters.

The slides of ACME-001 and STARK-008 (both decks) are saved as PNGs: under pytest's temporary
folder, or, to keep them for a look, in the folder `C360_QBR_RENDERS` names (outside the working
tree: the suite writes nothing into it), e.g. `C360_QBR_RENDERS=/tmp/qbr-renders python -m pytest
tests/test_qbr_render.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from pptx import Presentation

from c360_dagster.console import main
from c360_dagster.defs.accounts import playbook, qbr_pack
from c360_dagster.domain.qbr import powerpoint as qbr_pptx

REPO = Path(__file__).resolve().parents[1]
RENDERS_ENV = "C360_QBR_RENDERS"  # a folder to keep the PNGs in; default: pytest's tmp folder
LOOKED_AT = ("ACME-001", "STARK-008")
# PIPE-004 is renamed: a right-to-left override, a zero-width space, markup, a formula start and
# a 9,000-character word that no line can hold.
HOSTILE_NAME = "=Pipe \u202eWorks\u200b <b>Ltd</b> " + "Long " * 200 + "W" * 9000
HOSTILE_ID = "PIPE-004"
TOLERANCE = 2.0  # points: anti-aliasing and rounding of the PDF's word boxes
_WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')
_PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">')


@pytest.fixture(scope="module")
def decks(tmp_path_factory) -> dict[str, Path]:
    """Every deck of a full run on the fixtures, PIPE-004 renamed to the hostile name."""
    root = tmp_path_factory.mktemp("qbr_render")
    inputs = Path(shutil.copytree(REPO / "fixtures" / "customer", root / "customer"))
    accounts = inputs / "accounts.csv"
    text = accounts.read_text(encoding="utf-8")
    assert "PIPE-004,Pipe | Works Ltd," in text
    text = text.replace("PIPE-004,Pipe | Works Ltd,", f'PIPE-004,"{HOSTILE_NAME}",')
    accounts.write_text(text, encoding="utf-8")
    artifacts = root / "artifacts"
    args = ["--artifacts", str(artifacts), "--configs", str(REPO / "configs" / "customer")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        patch.chdir(REPO)
        main(["c360:run", "--quiet", "--dir", str(inputs), *args])
    customer = artifacts / "customer"
    found = {path.stem: path for path in sorted(customer.glob("*.pptx"))}
    for account_id in (*LOOKED_AT, HOSTILE_ID):
        assert f"qbr_{account_id}" in found and f"review_{account_id}" in found, account_id
    pdfs = root / "pdf"
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation=file://{root / 'lo_profile'}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(pdfs),
            *map(str, found.values()),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return {stem: pdfs / f"{stem}.pdf" for stem in found} | {f"{stem}.pptx": path for stem, path in found.items()}


def _frames(slide) -> list[tuple[float, float, float, float]]:
    return [
        (shape.left / 12700, shape.top / 12700, (shape.left + shape.width) / 12700, (shape.top + shape.height) / 12700)
        for shape in slide.shapes
        if shape.width is not None
    ]


def _inside(word: tuple[float, float, float, float], frame: tuple[float, float, float, float]) -> bool:
    return (
        word[0] >= frame[0] - TOLERANCE
        and word[1] >= frame[1] - TOLERANCE
        and word[2] <= frame[2] + TOLERANCE
        and word[3] <= frame[3] + TOLERANCE
    )


@pytest.mark.untraced
def test_every_word_of_every_deck_stays_inside_the_slide_and_its_frame(decks):
    pdf_stems = sorted(stem for stem in decks if not stem.endswith(".pptx"))
    assert len(pdf_stems) >= 2 * 11  # both decks of (at least) every account that is not churned
    for stem in pdf_stems:
        layout = subprocess.run(
            ["pdftotext", "-bbox", str(decks[stem]), "-"], capture_output=True, text=True, check=True
        ).stdout
        pages = layout.split("<page ")[1:]
        slides = list(Presentation(decks[f"{stem}.pptx"]).slides)
        assert len(pages) == len(slides), stem
        for number, (page, slide) in enumerate(zip(pages, slides, strict=True), 1):
            width, height = map(float, _PAGE.match("<page " + page).groups())
            frames = _frames(slide)
            for x0, y0, x1, y1, word in _WORD.findall(page):
                box = (float(x0), float(y0), float(x1), float(y1))
                assert _inside(box, (0, 0, width, height)), (stem, number, word, box)
                assert any(_inside(box, frame) for frame in frames), (stem, number, word, box)


def test_the_looked_at_decks_are_saved_as_pngs(decks, tmp_path):
    png_dir = Path(os.environ.get(RENDERS_ENV) or tmp_path)
    png_dir.mkdir(parents=True, exist_ok=True)
    for account_id in LOOKED_AT:
        for stem in (f"qbr_{account_id}", f"review_{account_id}"):
            for stale in png_dir.glob(f"{stem}-*.png"):  # a kept folder may hold an earlier, longer deck
                stale.unlink()
            subprocess.run(
                ["pdftoppm", "-r", "60", "-png", str(decks[stem]), str(png_dir / stem)], check=True, timeout=300
            )
            pngs = sorted(png_dir.glob(f"{stem}-*.png"))
            assert len(pngs) == len(Presentation(decks[f"{stem}.pptx"]).slides)


def test_a_10000_character_name_is_fitted_everywhere_and_shown_not_obeyed(decks):
    for stem in (f"qbr_{HOSTILE_ID}", f"review_{HOSTILE_ID}"):
        prs = Presentation(decks[f"{stem}.pptx"])
        assert len(prs.core_properties.title) <= 255 and prs.core_properties.title.startswith(
            ("QBR: '=Pipe", "Account review: '=Pipe")
        )
        assert "\u202e" not in prs.core_properties.title and "<U+202E>" in prs.core_properties.title
        title = prs.slides[0].shapes.title.text_frame.text
        assert title.endswith("…") and "<U+202E>Works<U+200B>" in title and len(title) < 1000


def test_one_account_that_cannot_be_rendered_does_not_sink_its_batch(chained, monkeypatch):
    instance, project = chained
    real = qbr_pptx.render_pptx

    def render(ctx, audience=qbr_pptx.CUSTOMER):
        if ctx.account_id == "STARK-008":
            raise ValueError("a deck that cannot be drawn")
        return real(ctx, audience)

    monkeypatch.setattr(qbr_pptx, "render_pptx", render)
    # The accounts PIPE-004, STARK-008 and WAYNE-009, adjacent among the chain's partitions, in one run.
    tags = {"dagster/asset_partition_range_start": "PIPE-004", "dagster/asset_partition_range_end": "WAYNE-009"}
    result = dg.materialize(
        [playbook, qbr_pack], instance=instance, resources={"project": project}, tags=tags, raise_on_error=False
    )
    assert not result.success
    error = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error
    failure = error.cause.message  # under Dagster's step error: the C360Error the CLI prints
    assert "QBR_RENDER_FAILED" in failure and "STARK-008: ValueError: a deck that cannot be drawn" in failure
    # The others of the batch are written; the failed one is not.
    assert (project.paths.customer_dir / "qbr_PIPE-004.pptx").exists() and (
        project.paths.customer_dir / "review_WAYNE-009.md"
    ).exists()
    assert not (project.paths.customer_dir / "qbr_STARK-008").exists()
