"""The QBR pack's data: plain frozen records that `pack.build_qbr_context` fills and the
renderers (`deck`, `powerpoint`, the Markdown templates) only format."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

USAGE_WEEKS = 13  # the quarter under review


# The evidence count that keeps a component out of the strengths, however well it scored.
CONCERNS = {"commercial": "overdue_invoices", "support": "open_sev1_cases"}


CUSTOMER_EVENTS = frozenset(
    {"case_closed", "case_opened", "nps_answer", "renewal_due", "stakeholder_ended", "stakeholder_started"}
)


EVENT_LABELS = {
    "case_closed": "case closed",
    "case_opened": "case opened",
    "invoice_issued": "invoice issued",
    "invoice_overdue": "invoice overdue",
    "invoice_paid": "invoice paid",
    "nps_answer": "NPS answer",
    "renewal_due": "renewal date",
    "stakeholder_ended": "stakeholder left role",
    "stakeholder_started": "stakeholder started",
}


@dataclass(frozen=True)
class QbrSettings:
    """`configs/customer/qbr.yaml`: what the customer deck shows and which template it uses."""

    show_health_score: bool = False  # default: strengths and focus areas in words, no number
    strength_at: float = 70.0  # a component scoring at least this is a strength, else a focus area
    customer_roles: tuple[str, ...] = ("Customer Champion", "Customer Executive Sponsor", "Customer Administrator")
    roadmap_topics: tuple[str, ...] = ()
    template: bytes | None = None  # the company's .pptx template; None: the bundled default theme


@dataclass(frozen=True)
class Component:
    name: str
    score: float | None  # None when the component could not be measured
    weight: float | None  # None when nothing is weighed: the account has no score or this component no data
    points: float | None
    reason: str | None
    evidence: str
    measured: Mapping[str, Any]  # the evidence's values, for phrases in words

    @property
    def concern(self) -> bool:
        """Evidence that is never a strength whatever the score: an overdue invoice, an open critical case."""
        key = CONCERNS.get(self.name)
        return key is not None and bool(self.measured.get(key))


@dataclass(frozen=True)
class SignalLine:
    code: str
    name: str  # the code in words ("Usage falling"): what the account team reads
    kind: str
    evidence: str  # what tripped it, as a sentence with units and the measured values


@dataclass(frozen=True)
class RenewalLine:
    subscription_id: str
    product: str
    plan: str
    renewal_date: dt.date
    days_to_renewal: int
    arr: float
    currency: str
    bucket: str
    probability: float
    expected_arr: float
    risk_reasons: tuple[str, ...]
    suggested_playbook: str | None  # by its title


@dataclass(frozen=True)
class WeekPoint:
    week_end: dt.date
    active_users: int
    seats: int
    features_used: int
    release_features_used: int


@dataclass(frozen=True)
class SupportSummary:
    """The quarter's support cases: opened, closed, how fast, within the agreed response time."""

    opened: int
    closed: int
    open_now: int
    median_days_to_close: float | None  # None when no case closed in the quarter
    # Of the quarter's cases answered by as_of or already past the agreed time (None: no such case).
    sla_met_pct: float | None
    not_yet_answered: int  # opened in the quarter, open, not past the agreed time: in neither count


@dataclass(frozen=True)
class NpsPoint:
    on: dt.date
    score: int


@dataclass(frozen=True)
class UpcomingRenewal:
    product: str
    renewal_date: dt.date


@dataclass(frozen=True)
class TimelineEvent:
    on: dt.date
    kind: str
    ref: str
    detail: str

    @property
    def label(self) -> str:
        return EVENT_LABELS[self.kind]


@dataclass(frozen=True)
class RoadmapItem:
    due_on: dt.date | None  # None: an adoption gap to close during the quarter
    kind: str  # step / checkpoint / adoption_gap
    what: str
    owner: str
    # The customer's people in the step's RACI, in words (`Executive Sponsor`): a joint step.
    customer_roles: tuple[str, ...] = ()

    @property
    def joint(self) -> bool:
        """A step the customer takes part in: it belongs in the customer deck's success plan."""
        return bool(self.customer_roles)

    @property
    def your_owner(self) -> str:
        """The customer's side of a joint step."""
        return ", ".join(self.customer_roles)


@dataclass(frozen=True)
class Stakeholder:
    role: str
    started_on: dt.date
    ended_on: dt.date | None
    name: str | None  # contact-level data: only with include_contacts
    email: str | None


@dataclass(frozen=True)
class ScorePoint:
    as_of: dt.date
    score: int
    tier: str
    tier_reason: str | None = None  # health's, where it explains an amber tier


@dataclass(frozen=True)
class Kpi:
    name: str
    current: float | None
    target: float | None
    unit: str
    status: str


@dataclass(frozen=True)
class QbrContext:
    """Everything one account's QBR pack shows, already computed and ordered."""

    account_id: str
    account_name: str
    segment: str
    csm_owner: str | None
    as_of: dt.date
    period_start: dt.date  # the first day under review: the quarter's, or the first subscription's if later
    quarter_start: dt.date  # the first day of the quarter to as_of
    usage_days: int  # the health score's windows (health.yaml), which its evidence covers
    support_days: int
    score: int | None
    total: int
    tier: str
    # Why an amber account is not green although its score is (too little measured), else None.
    tier_reason: str | None
    override_note: str | None  # "Tier overridden from amber to red by Dana: ...": a person set the tier
    status: str
    lifecycle: str | None
    scorecard: str
    previous: ScorePoint | None  # the latest earlier snapshot in the lake
    components: tuple[Component, ...]
    signals: tuple[SignalLine, ...]
    renewals: tuple[RenewalLine, ...]
    weekly_usage: tuple[WeekPoint, ...]
    support: SupportSummary
    nps: tuple[NpsPoint, ...]  # answers of the past year, oldest first
    upcoming_renewals: tuple[UpcomingRenewal, ...]  # active subscriptions renewing within a year
    timeline: tuple[TimelineEvent, ...]
    roadmap: tuple[RoadmapItem, ...]
    stakeholders: tuple[Stakeholder, ...]
    score_history: tuple[ScorePoint, ...]  # earlier snapshots and this one, oldest first
    playbook_present: bool
    plays: tuple[str, ...]  # the plan's plays by title, highest priority first
    plan_steps: tuple[RoadmapItem, ...]
    kpis: tuple[Kpi, ...]
    risks: tuple[str, ...]
    include_contacts: bool
    settings: QbrSettings = QbrSettings()

    @property
    def score_change(self) -> int | None:
        if self.previous is None or self.score is None:
            return None
        return self.score - self.previous.score

    @property
    def next_review(self) -> dt.date:
        """The Monday that starts the week a quarter after as_of: "the week of" names its first working day."""
        day = self.as_of + dt.timedelta(weeks=USAGE_WEEKS)
        return day - dt.timedelta(days=day.weekday())

    @property
    def customer_timeline(self) -> tuple[TimelineEvent, ...]:
        return tuple(event for event in self.timeline if event.kind in CUSTOMER_EVENTS)

    @property
    def joint_steps(self) -> tuple[RoadmapItem, ...]:
        return tuple(step for step in self.plan_steps if step.joint)

    @property
    def risk_signals(self) -> tuple[SignalLine, ...]:
        return tuple(s for s in self.signals if s.kind == "risk")

    @property
    def expansion_signals(self) -> tuple[SignalLine, ...]:
        return tuple(s for s in self.signals if s.kind != "risk")

    @property
    def strengths(self) -> tuple[Component, ...]:
        """Measured components at or above `strength_at` whose evidence holds no concern."""
        return tuple(c for c in self.components if c.score is not None and c not in self.focus_areas)

    @property
    def focus_areas(self) -> tuple[Component, ...]:
        """Measured components below `strength_at` or whose evidence holds a concern (one not
        measured yet is neither a strength nor a focus: the deck says it is not measured)."""
        at = self.settings.strength_at
        return tuple(c for c in self.components if c.score is not None and (c.score < at or c.concern))

    @property
    def scored(self) -> bool:
        return self.status == "scored" and self.score is not None

    @property
    def unavailable(self) -> tuple[Component, ...]:
        return tuple(c for c in self.components if c.score is None)
