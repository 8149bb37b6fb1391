"""QBR packs: one account's quarter in Markdown (and a deck), behind duty-of-care and privacy gates.

`build_qbr_context` gathers everything a pack shows into plain frozen data; the renderers only
format it, so the Markdown files and the slides always tell the same story.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from c360_dagster.domain.core.config import load_yaml_config
from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.stages import StageWriter, write_stage
from c360_dagster.domain.core.text import evidence_text, fmt_number, format_amount, render_template, safe_filename
from c360_dagster.domain.core.words import CONTACT_ROLES, fmt_date, fmt_label, role_label, signal_name
from c360_dagster.domain.ingest.view import Customer360
from c360_dagster.domain.qbr import deck as qbr_deck
from c360_dagster.domain.qbr import powerpoint as qbr_pptx
from c360_dagster.domain.qbr.models import (
    USAGE_WEEKS,
    Component,
    Kpi,
    NpsPoint,
    QbrContext,
    QbrSettings,
    RenewalLine,
    RoadmapItem,
    ScorePoint,
    SignalLine,
    Stakeholder,
    SupportSummary,
    TimelineEvent,
    UpcomingRenewal,
    WeekPoint,
)
from c360_dagster.domain.scoring.account_state import CHURNED, DOWNSOLD, RENEWED, account_states, succession
from c360_dagster.domain.scoring.health import HealthConfig, shown_tier_reason
from c360_dagster.domain.scoring.overrides import override_phrase

T = TypeVar("T")
DUTY_PLAYBOOK_MISSING = "DUTY_PLAYBOOK_MISSING"
PRIVACY_SIGNOFF_REQUIRED = "PRIVACY_SIGNOFF_REQUIRED"
TIMELINE_LOOKBACK_DAYS = 365
ROADMAP_DAYS = 90  # "the next quarter"
ADOPTION_GAP_BELOW = 70  # an adoption component score under this is a gap worth a roadmap line
SEAT_USE_GAP_BELOW = 0.8  # active users / seats in the latest week under this is a gap
CONTACT_KEYS = frozenset({"contact_id", "contact_name", "email", "name"})
COMPONENTS = ("adoption", "value", "support", "commercial", "sentiment")
MARKDOWN_FILES = ("index.md", "scorecard.md", "timeline.md", "roadmap.md")
SLIDES_MD = "slides.md"
REVIEW_TEMPLATE = "qbr_review.md.j2"
# Timeline events a customer sees; invoices and their ids stay in the internal review.
# A renewal's outcome as the customer lived it: a downsell is still a renewal to them.
RENEWAL_OUTCOMES = {RENEWED: "renewed", DOWNSOLD: "renewed", CHURNED: "ended"}
DEFAULT_TEMPLATE = "qbr_template.pptx"  # the company's own deck template, beside qbr.yaml
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["show_health_score", "strength_at", "customer_roles"],
    "properties": {
        "show_health_score": {"type": "boolean"},
        "strength_at": {"type": "number", "minimum": 0, "maximum": 100},
        "customer_roles": {
            "type": "array",
            "uniqueItems": True,
            "maxItems": 20,
            "items": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        "roadmap_topics": {
            "type": "array",
            "maxItems": 12,
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "template": {"type": "string", "minLength": 1, "maxLength": 1024},
    },
}


def load_qbr_settings(path: Path | str) -> QbrSettings:
    """Read and validate qbr.yaml (defaults when absent) and the deck template it points at."""
    path = Path(path)
    raw = load_yaml_config(path, SETTINGS_SCHEMA) if path.exists() else {}
    named = raw.get("template")
    template_path = path.parent / (named or DEFAULT_TEMPLATE)
    template = None
    if named or template_path.exists():
        try:
            template = template_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: template: cannot read {template_path} ({exc.strerror or exc})") from None
        qbr_pptx.check_template(template, f"{path}: template: {template_path}")
    return QbrSettings(
        show_health_score=raw.get("show_health_score", False),
        strength_at=float(raw.get("strength_at", 70.0)),
        customer_roles=tuple(raw.get("customer_roles", QbrSettings.customer_roles)),
        roadmap_topics=tuple(raw.get("roadmap_topics", ())),
        template=template,
    )


@dataclass(frozen=True)
class Gate:
    """One governance gate's verdict; `code` names the rule whether or not it passed."""

    code: str
    passed: bool
    message: str


def check_gates(
    tier: str | None,
    playbook_present: bool,
    include_contacts: bool,
    privacy_signoff: bool,
    *,
    account_id: str = "ACCOUNT_ID",
) -> list[Gate]:
    """The duty-of-care gate, then the privacy gate, each passed or blocked with its reason."""
    if tier == "red" and not playbook_present:
        duty = Gate(
            DUTY_PLAYBOOK_MISSING,
            False,
            f"{DUTY_PLAYBOOK_MISSING}: account {account_id} is red and has no playbook; run "
            f"`c360 c360:playbook --account {account_id}` first",
        )
    else:
        why = "a playbook is attached" if playbook_present else f"tier is {tier or 'unscored'}"
        duty = Gate(DUTY_PLAYBOOK_MISSING, True, f"duty of care: satisfied ({why})")
    if include_contacts and not privacy_signoff:
        privacy = Gate(
            PRIVACY_SIGNOFF_REQUIRED,
            False,
            f"{PRIVACY_SIGNOFF_REQUIRED}: the QBR of {account_id} would carry contact names and "
            "emails; add `--privacy-signoff` (run config `privacy_signoff: true`) or drop "
            "`--include-contacts`",
        )
    else:
        why = "sign-off granted" if include_contacts else "roles only, no contact-level data"
        privacy = Gate(PRIVACY_SIGNOFF_REQUIRED, True, f"privacy: satisfied ({why})")
    return [duty, privacy]


@dataclass(frozen=True)
class ViewFacts:
    """What the 360 view tells of one account's quarter (`view_facts`)."""

    period_start: dt.date  # the first day under review: the quarter's, or the first subscription's if later
    weekly_usage: tuple[WeekPoint, ...]
    support: SupportSummary
    nps: tuple[NpsPoint, ...]
    upcoming_renewals: tuple[UpcomingRenewal, ...]
    timeline: tuple[TimelineEvent, ...]
    stakeholders: tuple[Stakeholder, ...]


NO_CASES = SupportSummary(
    opened=0, closed=0, open_now=0, median_days_to_close=None, sla_met_pct=None, not_yet_answered=0
)


def view_facts(
    view: Customer360,
    account_ids: Sequence[str],
    *,
    as_of: dt.date,
    include_contacts: bool,
    health_config: HealthConfig,
) -> dict[str, ViewFacts]:
    """What the 360 view tells of each account's quarter, for a batch of accounts at once.

    Each part is one Polars query over the whole batch, split by account at the end: an account
    has a handful of rows, so Polars' cost is per operation, not per row, and a batch of 200
    costs about what one account did alone (docs/performance.md, "QBR packs"). One account is a
    batch of one.
    """
    accounts = list(dict.fromkeys(account_ids))
    batch = pl.col("account_id").is_in(accounts)
    quarter_start = _quarter_start(as_of)
    since = dict(
        account_states(view, health_config.lifecycle).filter(batch).select("account_id", "customer_since").iter_rows()
    )
    period_starts = {account_id: max(quarter_start, since.get(account_id) or quarter_start) for account_id in accounts}
    weekly = _weekly_usage(view, batch, as_of)
    support = _support(view, period_starts, as_of)
    nps = _nps(view, batch, as_of)
    upcoming = _upcoming_renewals(view, batch, as_of)
    timeline = _timeline(view, batch, as_of, include_contacts, health_config.lifecycle.renewal_grace_days)
    stakeholders = _stakeholders(view, batch, as_of, include_contacts)
    return {
        account_id: ViewFacts(
            period_start=period_starts[account_id],
            weekly_usage=weekly.get(account_id, ()),
            support=support.get(account_id, NO_CASES),
            nps=nps.get(account_id, ()),
            upcoming_renewals=upcoming.get(account_id, ()),
            timeline=timeline.get(account_id, ()),
            stakeholders=stakeholders.get(account_id, ()),
        )
        for account_id in accounts
    }


def build_qbr_context(
    account: Mapping[str, Any],
    facts: ViewFacts,
    health: Mapping[str, Any],
    signals: Sequence[Mapping[str, Any]],
    renewals: Sequence[Mapping[str, Any]],
    playbook: Mapping[str, Any] | None,
    score_history: Sequence[Mapping[str, Any]],
    include_contacts: bool,
    as_of: dt.date,
    health_config: HealthConfig,
    settings: QbrSettings = QbrSettings(),
) -> QbrContext:
    """Gather one account's QBR content from what the view tells of it (`view_facts`, with the same
    `as_of` and `include_contacts`) and the stage outputs."""
    account_id = account["account_id"]
    history = _score_history(score_history, health, as_of)
    earlier = [point for point in history if point.as_of < as_of]
    components = _components(health, include_contacts)
    signal_lines = tuple(_signal_line(s, as_of, include_contacts) for s in sorted(signals, key=lambda s: s["code"]))
    plan_steps, checkpoints = _plan(playbook, settings.customer_roles, include_contacts)
    plan = playbook or {}
    titles = dict(zip(plan.get("plays", ()), plan.get("play_titles", ()), strict=True))
    return QbrContext(
        account_id=account_id,
        account_name=account.get("name") or account_id,
        segment=account.get("segment") or "",
        csm_owner=account.get("csm_owner"),
        as_of=as_of,
        period_start=facts.period_start,
        quarter_start=_quarter_start(as_of),
        usage_days=health_config.windows["usage_days"],
        support_days=health_config.windows["support_days"],
        score=health.get("score"),
        total=health.get("total", 100),
        tier=health.get("tier") or "unscored",
        tier_reason=shown_tier_reason(health),
        override_note=override_phrase(health) if health.get("override") else None,
        status=health.get("status", "scored"),
        lifecycle=health.get("lifecycle"),
        scorecard=health.get("scorecard", "default"),
        previous=earlier[-1] if earlier else None,
        components=components,
        signals=signal_lines,
        renewals=_renewals(renewals, titles),
        weekly_usage=facts.weekly_usage,
        support=facts.support,
        nps=facts.nps,
        upcoming_renewals=facts.upcoming_renewals,
        timeline=facts.timeline,
        roadmap=_roadmap(plan_steps, checkpoints, components, signal_lines, facts.weekly_usage, as_of),
        stakeholders=facts.stakeholders,
        score_history=tuple(history),
        playbook_present=playbook is not None,
        plays=tuple(titles.get(play, fmt_label(play)) for play in plan.get("plays", ())),
        plan_steps=plan_steps,
        kpis=tuple(
            Kpi(k["name"], k.get("current"), k.get("target"), k.get("unit", ""), k.get("status", ""))
            for k in plan.get("kpis", ())
        ),
        risks=tuple(str(risk) for risk in plan.get("risks", ())),
        include_contacts=include_contacts,
        settings=settings,
    )


def render_qbr_markdown(ctx: QbrContext, *, deck: str | None = None) -> dict[str, str]:
    """The customer pack's Markdown files by name; `deck` is the relative link to the slides, if any."""
    pages = {name: f"qbr_{name.removesuffix('.md')}.md.j2" for name in MARKDOWN_FILES}
    return {
        name: render_template(template, ctx=ctx, deck=deck, fmt=qbr_deck.FORMATS) for name, template in pages.items()
    }


def render_review_markdown(ctx: QbrContext, *, deck: str | None = None) -> str:
    """The internal account review: score, signals, forecast, the whole plan and its risks."""
    return render_template(REVIEW_TEMPLATE, ctx=ctx, deck=deck, fmt=qbr_deck.FORMATS)


def pptx_available() -> bool:
    """Whether python-pptx can be imported (the pack falls back to `slides.md` otherwise)."""
    try:
        import pptx  # noqa: F401  # only whether it imports
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class RenderedPack:
    """A QBR pack's bytes, ready to write.

    `files` go into the customer's folder `qbr_<id>/`; `beside` are the files next to it: the
    customer deck `qbr_<id>.pptx` (unless it fell back to `slides.md`) and the account team's
    internal review `review_<id>.md` and `review_<id>.pptx`.
    """

    name: str
    files: dict[str, bytes]
    beside: dict[str, bytes]


def pack_names(account_id: str) -> tuple[str, str, str, str]:
    """The customer folder, the customer deck, the review page and the review deck of an account."""
    key = safe_filename(account_id)
    return f"qbr_{key}", f"qbr_{key}.pptx", f"review_{key}.md", f"review_{key}.pptx"


def render_qbr_pack(ctx: QbrContext, *, pptx: bool = True) -> RenderedPack:
    """Every file of the pack, for the customer and for the account team, in memory."""
    name, deck_name, review_name, review_deck_name = pack_names(ctx.account_id)
    with_decks = pptx and pptx_available()
    beside = {}
    if with_decks:
        beside[deck_name] = qbr_pptx.render_pptx(ctx)
        beside[review_deck_name] = qbr_pptx.render_pptx(ctx, audience=qbr_deck.REVIEW)
    files = {
        filename: text.encode("utf-8")
        for filename, text in render_qbr_markdown(ctx, deck=f"../{deck_name}" if with_decks else SLIDES_MD).items()
    }
    if not with_decks:
        files[SLIDES_MD] = qbr_pptx.render_slides_md(ctx).encode("utf-8")
    beside[review_name] = render_review_markdown(ctx, deck=review_deck_name if with_decks else None).encode("utf-8")
    return RenderedPack(name, files, dict(sorted(beside.items())))


def write_qbr_pack(ctx: QbrContext, artifacts_customer_dir: Path, *, pptx: bool = True) -> dict[str, str]:
    """Render and write `qbr_<id>/` (and `qbr_<id>.pptx`) as one stage; return relative path → content hash."""
    pack = render_qbr_pack(ctx, pptx=pptx)
    with write_stage(artifacts_customer_dir, pack.name) as out:
        return save_qbr_pack(pack, out)


def save_qbr_pack(pack: RenderedPack, out: StageWriter) -> dict[str, str]:
    """Write a rendered pack into its stage's generation; return relative path → content hash.

    The stage switches the pack as one unit, so a failure at any point leaves the previous pack
    (a file of an earlier pack that this one lacks, e.g. the decks under the slides.md
    fallback, goes with it).
    """
    written = {
        f"{pack.name}/{filename}": out.write_bytes(f"{pack.name}/{filename}", pack.files[filename])
        for filename in sorted(pack.files)
    }
    written.update((filename, out.write_bytes(filename, data)) for filename, data in sorted(pack.beside.items()))
    return dict(sorted(written.items()))


def _as_date(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _as_mapping(value: Any) -> Any:
    """Evidence and reasons arrive as canonical JSON text from frames, or already parsed."""
    if isinstance(value, str) and value.startswith(("{", "[")):
        return json.loads(value)
    return value


def _evidence_phrase(evidence: Any, include_contacts: bool) -> str:
    """Measured values in words (`text.evidence_text`), amounts in their currency.

    Contact-level keys (a contact's id, name or email) are left out unless contacts are included.
    """
    evidence = _as_mapping(evidence)
    if not isinstance(evidence, Mapping):
        return "" if evidence is None else str(evidence)
    return evidence_text(evidence, leave_out=() if include_contacts else CONTACT_KEYS)


def _signal_line(signal: Mapping[str, Any], as_of: dt.date, include_contacts: bool) -> SignalLine:
    """A signal by name, its evidence as a sentence (or, in a shape the sentence cannot read, as
    its measured values in words)."""
    code, evidence = signal["code"], _as_mapping(signal.get("evidence")) or {}
    sentence = (
        qbr_deck.signal_phrase(code, evidence, as_of, include_contacts) if isinstance(evidence, Mapping) else None
    )
    return SignalLine(
        code,
        signal_name(code),
        signal.get("kind", "risk"),
        sentence or _evidence_phrase(evidence, include_contacts),
    )


def _quarter_start(as_of: dt.date) -> dt.date:
    """The first day of the quarter under review (USAGE_WEEKS to `as_of`)."""
    return as_of - dt.timedelta(weeks=USAGE_WEEKS) + dt.timedelta(days=1)


def _by_account(frame: pl.DataFrame, record: Callable[..., T]) -> dict[str, tuple[T, ...]]:
    """Each account's records, in the frame's order, from a frame whose first column is account_id."""
    grouped: dict[str, list[T]] = {}
    for account_id, *values in frame.iter_rows():
        grouped.setdefault(account_id, []).append(record(*values))
    return {account_id: tuple(records) for account_id, records in grouped.items()}


def _score_history(history: Sequence[Mapping[str, Any]], health: Mapping[str, Any], as_of: dt.date) -> list[ScorePoint]:
    """Snapshots up to `as_of`, oldest first, this run's score (`health`) standing for its own `as_of`."""
    points = {
        _as_date(row["as_of"]): ScorePoint(
            _as_date(row["as_of"]), int(row["score"]), row["tier"], shown_tier_reason(row)
        )
        for row in history
        if row.get("score") is not None and _as_date(row["as_of"]) <= as_of
    }
    if health.get("score") is not None:
        points[as_of] = ScorePoint(
            as_of, int(health["score"]), health.get("tier") or "unscored", shown_tier_reason(health)
        )
    return [points[day] for day in sorted(points)]


def _components(health: Mapping[str, Any], include_contacts: bool) -> tuple[Component, ...]:
    parts = health.get("components", {})
    # Without a score nothing is weighed, and a component that was not measured carries no
    # weight or points: no weights or points (never a made-up 0).
    scored = health.get("status", "scored") == "scored" and health.get("score") is not None
    ordered = [name for name in COMPONENTS if name in parts] + sorted(set(parts) - set(COMPONENTS))
    result = []
    for name in ordered:
        part = parts[name]
        available = part.get("available", True) and part.get("score") is not None
        result.append(
            Component(
                name=name,
                score=round(float(part["score"]), 2) if available else None,
                weight=round(float(part["weight"]), 2) if scored and available else None,
                points=round(float(part["points"]), 2) if scored and available else None,
                reason=None if available else (part.get("reason") or "not measured"),
                evidence=_evidence_phrase(part.get("evidence") or {}, include_contacts),
                measured=_as_mapping(part.get("evidence")) or {},
            )
        )
    return tuple(result)


def _renewals(rows: Sequence[Mapping[str, Any]], play_titles: Mapping[str, str]) -> tuple[RenewalLine, ...]:
    """The forecast rows of the account; a suggested play by its title in the plan (or its id in words)."""
    lines = [
        RenewalLine(
            subscription_id=row["subscription_id"],
            product=row["product"],
            plan=row["plan"],
            renewal_date=_as_date(row["renewal_date"]),
            days_to_renewal=int(row["days_to_renewal"]),
            arr=round(float(row["arr"]), 2),
            currency=row["currency"],
            bucket=row["bucket"],
            probability=round(float(row["probability"]), 2),
            expected_arr=round(float(row["expected_arr"]), 2),
            risk_reasons=tuple(
                reason["text"] if isinstance(reason, Mapping) else str(reason)
                for reason in _as_mapping(row.get("risk_reasons")) or ()
            ),
            suggested_playbook=play_titles.get(play, fmt_label(play))
            if (play := row.get("suggested_playbook"))
            else None,
        )
        for row in rows
    ]
    return tuple(sorted(lines, key=lambda line: (line.renewal_date, line.subscription_id)))


def _weekly_usage(view: Customer360, batch: pl.Expr, as_of: dt.date) -> dict[str, tuple[WeekPoint, ...]]:
    """Active users per usage window of the last quarter against the seats of active subs then."""
    first_end = as_of - dt.timedelta(weeks=USAGE_WEEKS)
    usage = (
        view.usage.lazy()
        .filter(batch & (pl.col("window_end") > first_end) & (pl.col("window_end") <= as_of))
        .select("account_id", "window_end", "active_users", "features_used", "release_features_used")
    )
    subs = view.subs.lazy().filter(batch & (pl.col("status") == "active")).select("account_id", "start_date", "seats")
    # A subscription entitles its seats from its start date on.
    seats = (
        usage.join(subs, on="account_id")
        .filter(pl.col("start_date") <= pl.col("window_end"))
        .group_by("account_id", "window_end")
        .agg(pl.col("seats").sum())
    )
    series = (
        usage.join(seats, on=["account_id", "window_end"], how="left")
        .with_columns(pl.col("seats").fill_null(0))
        .sort("account_id", "window_end")
    )
    columns = ("account_id", "window_end", "active_users", "seats", "features_used", "release_features_used")
    return _by_account(series.select(columns).collect(engine="in-memory"), WeekPoint)


def _support(view: Customer360, period_starts: Mapping[str, dt.date], as_of: dt.date) -> dict[str, SupportSummary]:
    """Each account's support cases of its period (from its `period_starts` date to `as_of`)."""
    starts = pl.LazyFrame(
        {"account_id": list(period_starts), "start": list(period_starts.values())},
        schema={"account_id": pl.Utf8, "start": pl.Date},
    )
    cases = view.cases.lazy().join(starts, on="account_id").filter(pl.col("opened_on") <= as_of)
    opened = pl.col("opened_on") >= pl.col("start")
    closed = pl.col("closed_on").is_between(pl.col("start"), pl.lit(as_of))
    still_open = pl.col("closed_on").is_null() | (pl.col("closed_on") > as_of)
    # Only what is measured: a case closed by as_of met the agreed time or not, an open one
    # already breached did not; an open one not yet breached is not answered yet, either way.
    answered = pl.col("closed_on").is_not_null() & (pl.col("closed_on") <= as_of)
    known = opened & (answered | pl.col("sla_breached"))
    counts = cases.group_by("account_id").agg(
        opened=opened.sum(),
        closed=closed.sum(),
        open_now=still_open.sum(),
        median_days=(pl.col("closed_on") - pl.col("opened_on")).dt.total_days().filter(closed).median(),
        known=known.sum(),
        met=(known & ~pl.col("sla_breached")).sum(),
    )
    return {
        account_id: SupportSummary(
            opened=opened,
            closed=closed,
            open_now=open_now,
            median_days_to_close=round(median_days, 1) if closed else None,
            sla_met_pct=round(100.0 * met / known, 1) if known else None,
            not_yet_answered=opened - known,
        )
        for account_id, opened, closed, open_now, median_days, known, met in counts.collect(
            engine="in-memory"
        ).iter_rows()
    }


def _nps(view: Customer360, batch: pl.Expr, as_of: dt.date) -> dict[str, tuple[NpsPoint, ...]]:
    answers = view.nps.filter(
        batch & pl.col("responded_on").is_between(as_of - dt.timedelta(days=TIMELINE_LOOKBACK_DAYS), as_of)
    ).sort("account_id", "responded_on", "response_id")
    return _by_account(answers.select("account_id", "responded_on", "score"), NpsPoint)


def _upcoming_renewals(view: Customer360, batch: pl.Expr, as_of: dt.date) -> dict[str, tuple[UpcomingRenewal, ...]]:
    subs = view.subs.filter(
        batch
        & (pl.col("status") == "active")
        & pl.col("renewal_date").is_between(as_of, as_of + dt.timedelta(days=TIMELINE_LOOKBACK_DAYS))
    ).sort("account_id", "renewal_date", "product", "subscription_id")
    return _by_account(subs.select("account_id", "product", "renewal_date"), UpcomingRenewal)


def _event(on: str, kind: str, ref: str | pl.Expr, detail: pl.Expr) -> list[pl.Expr]:
    """The account and the four timeline columns, selected from one entity's frame."""
    return [
        pl.col("account_id"),
        pl.col(on).alias("on"),
        pl.lit(kind).alias("kind"),
        (pl.col(ref) if isinstance(ref, str) else ref).cast(pl.Utf8).alias("ref"),
        detail.cast(pl.Utf8).alias("detail"),
    ]


def _phrase(*parts: pl.Expr) -> pl.Expr:
    return pl.concat_str(list(parts), separator=", ", ignore_nulls=True)


def _money(amount: str) -> pl.Expr:
    """`1200.5` and `USD` → `USD 1,201`: the one amount format of every report (`format_amount`)."""
    return pl.struct(amount, "currency").map_elements(
        lambda row: format_amount(row[amount], row["currency"]), return_dtype=pl.Utf8
    )


def _timeline(
    view: Customer360, batch: pl.Expr, as_of: dt.date, include_contacts: bool, grace_days: int
) -> dict[str, tuple[TimelineEvent, ...]]:
    """Each account's dated events of the past year (and renewals of the next), by date, then
    kind, then id."""
    reach = dt.timedelta(days=TIMELINE_LOOKBACK_DAYS)
    # One lazy query, collected once. (In memory: Polars 2.1's streaming engine panics on it.)
    cases, invoices, contacts = (view.tables[name].lazy().filter(batch) for name in ("cases", "invoices", "contacts"))
    # People are told by role, in words; names, emails and contact ids only with include_contacts.
    role = pl.col("role").replace({role: role_label(role) for role in CONTACT_ROLES})
    person = (
        pl.concat_str([role, pl.col("name"), pl.col("email")], separator=" ", ignore_nulls=True)
        if include_contacts
        else role
    )
    contact_ref = pl.col("contact_id") if include_contacts else pl.lit("")
    nps = (
        view.nps.lazy()
        .filter(batch)
        .join(
            contacts.select("account_id", "contact_id", person.alias("person")),
            on=["account_id", "contact_id"],
            how="left",
        )
    )
    case_detail = _phrase(pl.format("severity {}", pl.col("severity")), pl.col("category"))
    overdue = pl.col("due_on") < pl.coalesce(pl.col("paid_on"), pl.lit(as_of))
    paid, closed, ended = (pl.col(name).is_not_null() for name in ("paid_on", "closed_on", "ended_on"))
    past = pl.concat(
        [
            cases.select(_event("opened_on", "case_opened", "case_id", case_detail)),
            cases.filter(closed).select(_event("closed_on", "case_closed", "case_id", case_detail)),
            nps.select(
                _event(
                    "responded_on",
                    "nps_answer",
                    "response_id",
                    _phrase(pl.format("score {}", pl.col("score")), pl.col("person")),
                )
            ),
            invoices.select(_event("issued_on", "invoice_issued", "invoice_id", _money("amount"))),
            invoices.filter(paid).select(_event("paid_on", "invoice_paid", "invoice_id", _money("amount"))),
            invoices.filter(overdue).select(_event("due_on", "invoice_overdue", "invoice_id", _money("amount"))),
            contacts.select(_event("started_on", "stakeholder_started", contact_ref, person)),
            contacts.filter(ended).select(_event("ended_on", "stakeholder_ended", contact_ref, person)),
        ]
    ).filter(pl.col("on").is_between(as_of - reach, as_of))
    subs = view.subs.filter(batch)
    # What became of each renewal, in words (the succession rule, docs/renewals.md); never a status code.
    outcomes = (
        succession(subs, grace_days)
        .lazy()
        .select("subscription_id", pl.col("outcome").replace_strict(RENEWAL_OUTCOMES, return_dtype=pl.Utf8))
    )
    outcome = (
        pl.when(pl.col("outcome").is_not_null())
        .then(pl.col("outcome"))
        .when(pl.col("renewal_date") > as_of)
        .then(pl.lit("renews"))
        .otherwise(pl.lit("renewal not yet recorded"))
    )
    renewal_detail = _phrase(
        pl.col("product"),
        pl.format("{} plan", pl.col("plan").str.to_titlecase()),
        pl.when(pl.col("seats") > 0).then(pl.format("{} seats", pl.col("seats"))),
        outcome,
    )
    renewals = (
        subs.lazy()
        .join(outcomes, on="subscription_id", how="left")
        .select(_event("renewal_date", "renewal_due", "subscription_id", renewal_detail))
        .filter(pl.col("on").is_between(as_of - reach, as_of + reach))
    )
    events = pl.concat([past, renewals]).sort("account_id", "on", "kind", "ref", "detail")
    return _by_account(events.collect(engine="in-memory"), TimelineEvent)


def _stakeholders(
    view: Customer360, batch: pl.Expr, as_of: dt.date, include_contacts: bool
) -> dict[str, tuple[Stakeholder, ...]]:
    """Each account's people by role; their names and emails only with include_contacts."""
    hidden = pl.lit(None, dtype=pl.Utf8)
    contacts = view.contacts.filter(batch & (pl.col("started_on") <= as_of)).sort(
        "account_id", "role", "started_on", "contact_id"
    )
    return _by_account(
        contacts.select(
            "account_id",
            "role",
            "started_on",
            pl.when(pl.col("ended_on") <= as_of).then(pl.col("ended_on")).alias("ended_on"),
            pl.col("name") if include_contacts else hidden.alias("name"),
            pl.col("email") if include_contacts else hidden.alias("email"),
        ),
        Stakeholder,
    )


# A playbook names a person by role as `Name (Role)` where the data names them.
_NAMED_ROLE = re.compile(r"(?P<name>.+) \((?P<role>[^()]+)\)")


def _role_and_name(entry: str) -> tuple[str, str | None]:
    named = _NAMED_ROLE.fullmatch(entry)
    return (named["role"], named["name"]) if named else (entry, None)


def _plan(
    playbook: Mapping[str, Any] | None, customer_roles: Sequence[str], include_contacts: bool
) -> tuple[tuple[RoadmapItem, ...], tuple[RoadmapItem, ...]]:
    """The playbook's steps and checkpoints as dated roadmap items (both key spellings accepted).

    A step whose RACI names one of the customer's roles is a joint step; the others are ours.
    The customer's people are named only with `include_contacts` (contact-level data).
    """
    if playbook is None:
        return (), ()
    customer = set(customer_roles)

    def theirs(entries: Sequence[str | None]) -> tuple[str, ...]:
        people = []
        for entry in entries:
            role, name = _role_and_name(entry or "")
            if role in customer:
                words = qbr_deck.fmt_customer_role(role)
                people.append(f"{name} ({words})" if name and include_contacts else words)
        return tuple(dict.fromkeys(people))

    involved = {
        (entry.get("playbook", ""), entry.get("step", "")): theirs(
            [
                entry.get("responsible"),
                entry.get("accountable"),
                *entry.get("consulted", ()),
                *entry.get("informed", ()),
            ]
        )
        for entry in playbook.get("raci", ())
    }
    steps = []
    for step in playbook.get("steps", ()):
        role = step["owner_role"]
        ours = role not in customer  # the step's owner is on our side: named where the data names them
        steps.append(
            RoadmapItem(
                _as_date(step.get("due_date") or step["due_on"]),
                "step",
                step["title"],
                (step.get("owner") or role) if ours else "",
                theirs([step.get("owner") or role])
                if not ours
                else involved.get((step.get("playbook", ""), step["title"]), ()),
            )
        )
    checkpoints = tuple(
        RoadmapItem(_as_date(point.get("date") or point["on"]), "checkpoint", point["what"], "")
        for point in playbook.get("checkpoints", ())
    )
    return tuple(steps), checkpoints


def _roadmap(
    steps: tuple[RoadmapItem, ...],
    checkpoints: tuple[RoadmapItem, ...],
    components: tuple[Component, ...],
    signals: tuple[SignalLine, ...],
    weekly: tuple[WeekPoint, ...],
    as_of: dt.date,
) -> tuple[RoadmapItem, ...]:
    """The next quarter: dated steps and checkpoints, then the adoption gaps to close."""
    horizon = as_of + dt.timedelta(days=ROADMAP_DAYS)
    dated = sorted(
        (item for item in steps + checkpoints if item.due_on is not None and item.due_on <= horizon),
        key=lambda item: (item.due_on, item.kind, item.what),
    )
    gaps = []
    adoption = next((c for c in components if c.name == "adoption"), None)
    if adoption is not None and adoption.score is None:
        gaps.append(f"Make adoption measurable ({adoption.reason})")
    elif adoption is not None and adoption.score is not None and adoption.score < ADOPTION_GAP_BELOW:
        gaps.append(f"Raise the adoption score from {fmt_number(adoption.score)} to {ADOPTION_GAP_BELOW}")
    gaps += [
        f"{s.name}: {s.evidence}" if s.evidence else s.name
        for s in signals
        if s.code in ("SIG_FEATURE_ADOPTION_LOW", "SIG_USAGE_SLIDE_4W")
    ]
    if weekly and weekly[-1].seats and weekly[-1].active_users / weekly[-1].seats < SEAT_USE_GAP_BELOW:
        last = weekly[-1]
        gaps.append(
            f"Activate unused seats ({last.active_users} of {last.seats} seats active in the week "
            f"to {fmt_date(last.week_end)})"
        )
    return tuple(dated) + tuple(RoadmapItem(None, "adoption_gap", gap, "") for gap in gaps)
