"""Words a reader sees, one vocabulary for every report: dates, contact roles, segments, signal names.

The decks, the review page, the playbooks and the renewal summary say these the same way. JSON
files and the lake keep the codes and ISO dates: there they are data, not prose.
"""

from __future__ import annotations

import datetime as dt

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# `fmt_date` for a Polars date column (chrono's month abbreviations are English, as MONTHS).
DATE_WORDS_FORMAT = "%-d %b %Y"

# Every contact role of the input contract (contacts.csv `role`) in words, in the order a plan
# picks who stands in for a role nobody holds (the champion first).
CONTACT_ROLE_WORDS = {
    "champion": "champion",
    "exec_sponsor": "executive sponsor",
    "economic_buyer": "economic buyer",
    "admin": "administrator",
    "user": "user",
}
CONTACT_ROLES = tuple(CONTACT_ROLE_WORDS)

SEGMENT_WORDS = {"enterprise": "Enterprise", "mid_market": "Mid-Market", "smb": "SMB"}

# Why an amber account is not green although its score is (health's `tier_reason`), in brief.
TOO_LITTLE_MEASURED = "too little measured"

# Every signal code (scoring/signals.SIGNAL_CATALOG) by the name people read.
SIGNAL_NAMES = {
    "SIG_EXPANSION_TRAIL": "Room to expand",
    "SIG_FEATURE_ADOPTION_LOW": "Few features in use",
    "SIG_PAYMENT_OVERDUE": "Payment overdue",
    "SIG_RENEWAL_SOON": "Renewal coming up",
    "SIG_STAKEHOLDER_CHANGE": "Key contact changed",
    "SIG_SUPPORT_SPIKE": "Support cases up",
    "SIG_USAGE_SLIDE_4W": "Usage falling",
}


def fmt_date(day: dt.date | str | None) -> str:
    """`15 Nov 2026` from a date or ISO text (month names fixed in English, never from the locale)."""
    if day is None:
        return "n/a"
    if not isinstance(day, dt.date):
        day = dt.date.fromisoformat(str(day)[:10])
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def fmt_label(value: str) -> str:
    """`stakeholder_mapping` → `Stakeholder Mapping`: a code with no words of its own, readable."""
    return " ".join(word[:1].upper() + word[1:] for word in value.replace("_", " ").split())


def role_words(role: str) -> str:
    """`exec_sponsor` → `executive sponsor`: a contact role as prose says it."""
    return CONTACT_ROLE_WORDS.get(role, role.replace("_", " "))


def role_label(role: str) -> str:
    """`exec_sponsor` → `Executive Sponsor`: a contact role as a table or a label says it."""
    return fmt_label(role_words(role))


def segment_label(segment: str) -> str:
    """`mid_market` → `Mid-Market`: an account segment (accounts.csv `segment`) as people read it."""
    return SEGMENT_WORDS.get(segment, fmt_label(segment))


def tier_words(tier: str | None, tier_reason: str | None = None) -> str:
    """`amber (too little measured)`: a tier as a table cell says it, with why an amber account is
    not green when its score is; `unscored` for an account without a tier. `tier_reason` is
    health's (it explains the computed amber), so it is left out when a person's override set
    another tier."""
    if tier is None:
        return "unscored"
    return f"{tier} ({TOO_LITTLE_MEASURED})" if tier_reason and tier == "amber" else tier


def signal_name(code: str) -> str:
    """`SIG_USAGE_SLIDE_4W` → `Usage falling`; a code not in the registry, in words."""
    return SIGNAL_NAMES.get(code, fmt_label(code.removeprefix("SIG_").lower()))


def renewal_odds(bucket: str, probability: float | None) -> str:
    """`Low (25% likely to renew)`: a renewal forecast's bucket with what it means."""
    return bucket if probability is None else f"{bucket} ({round(probability * 100)}% likely to renew)"
