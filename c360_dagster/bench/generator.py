"""A deterministic synthetic customer data set that follows docs/inputs.md exactly.

Scale: accounts are drawn in fixed-size chunks with numpy (one `default_rng([seed, chunk])`
per chunk) and each chunk's rows are appended to the eight output files, so memory stays
bounded by one chunk whatever the number of accounts. Rows come out sorted by each entity's
key because ids are sequential in account order.

Variety: every account gets one archetype (`ARCHETYPES`, fixed shares picked by the rng) that
shapes its usage, cases, NPS, invoices and contacts around an *anchor* date.

Time model (what the backtest of issue 9 measures):
- A subscription runs annual terms from `start_date` (up to 3 years before `as_of`). An active
  one renews on its next anniversary after `as_of` (`renewal_date`); every earlier anniversary
  was a renewal (a won renewal opportunity and a new annual invoice). A `churned`/`cancelled`
  one has `renewal_date` = the anniversary, within 540 days before `as_of`, at which it did
  not renew (a lost renewal opportunity). Add-ons are co-termed with the main subscription and
  some were cancelled alone at the last renewal.
- Churn is drawn per account from its archetype's churn rate (risky archetypes churn far more,
  healthy ones still sometimes do) plus a bump for low NPS, so risk predicts churn imperfectly.
- The anchor is `as_of` for live accounts and the churn date for churned ones: a churned
  account's slide, support spike, overdue invoice or departing champion happens in the weeks
  to months before it left, so a snapshot taken before the churn can see it coming.
- Usage is the `weeks` as_of-aligned 7-day windows ending at `as_of`, for every account,
  clipped to the account's live period (from its first start until its churn date). Cases,
  NPS, invoices and opportunities span the last two years for everyone. So whether data
  exists never depends on the outcome; a backtest reaching D days back sees usage only when
  generated with `weeks` >= D / 7 + 8.

Writing: each file is written under a temporary name in `out_dir` and renamed when all files
are complete; other formats of the same entities left in `out_dir` by an earlier run are
removed afterwards, so the folder never holds two formats of one entity.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import atomic_writer
from c360_dagster.domain.ingest.entities import ENTITIES

ARCHETYPES = (
    "growing",
    "stable",
    "sliding_usage",
    "over_seat",
    "support_spike",
    "overdue_invoices",
    "departing_champion",
    "low_adoption",
    "no_usage",
)
GROWING, STABLE, SLIDING, OVER_SEAT, SUPPORT_SPIKE, OVERDUE, DEPARTING, LOW_ADOPTION, NO_USAGE = range(9)
# Per archetype, in ARCHETYPES order.
ARCHETYPE_SHARES = np.array([0.20, 0.27, 0.10, 0.08, 0.08, 0.08, 0.08, 0.07, 0.04])
CHURN_RATE = np.array([0.02, 0.05, 0.30, 0.04, 0.25, 0.30, 0.25, 0.18, 0.35])
NPS_MEAN = np.array([9.0, 8.0, 6.0, 8.5, 4.5, 6.0, 6.0, 6.5, 5.5])
NPS_DECLINE = np.array([0.0, 0.0, 1.5, 0.0, 2.0, 1.0, 1.0, 0.5, 1.0])  # earlier responses were this much higher
UTIL_LOW = np.array([0.55, 0.50, 0.50, 1.02, 0.45, 0.45, 0.45, 0.08, 0.0])
UTIL_HIGH = np.array([0.85, 0.80, 0.80, 1.30, 0.75, 0.75, 0.75, 0.20, 0.0])

SEGMENTS = ("enterprise", "mid_market", "smb")
SEGMENT_SHARES = np.array([0.15, 0.35, 0.50])
SEAT_MEDIAN = np.array([800.0, 120.0, 15.0])
SEAT_MIN = np.array([150, 20, 3])
SEAT_MAX = np.array([20000, 1000, 80])
PRICE_LOW = np.array([600.0, 450.0, 300.0])  # USD per seat per year
PRICE_HIGH = np.array([1100.0, 850.0, 600.0])
DISCOUNT_SHARE = np.array([0.6, 0.4, 0.2])
DISCOUNTS = np.array([5.0, 10.0, 12.5, 15.0, 20.0, 25.0])
AUTO_RENEW_SHARE = np.array([0.3, 0.5, 0.7])
ADDON_SHARE = np.array([0.5, 0.3, 0.1])
CONTACTS_LOW = np.array([4, 3, 2])
CONTACTS_HIGH = np.array([7, 5, 3])
CASES_PER_YEAR = np.array([6.0, 2.5, 1.0])
NET_DAYS = np.array([45, 30, 30])

REGIONS = ("NA", "EMEA", "APAC", "LATAM")
REGION_SHARES = np.array([0.45, 0.30, 0.15, 0.10])
CURRENCIES = ("USD", "EUR", "GBP")
CURRENCY_SHARES = np.array([[1.0, 0, 0], [0.15, 0.60, 0.25], [1.0, 0, 0], [1.0, 0, 0]])  # per region
FX_FROM_USD = np.array([1.0, 0.92, 0.79])
PLANS = ("starter", "growth", "enterprise")
PLAN_SHARES = np.array([[0, 0, 1.0], [0, 0.8, 0.2], [0.6, 0.4, 0]])  # per segment
FEATURE_CATALOG = 40  # distinct product features, as signals.yaml assumes
PRODUCTS = ("Core Platform", "Analytics Add-on", "Automation Add-on")  # the first is every account's main
ROLES = ("champion", "admin", "economic_buyer", "exec_sponsor", "user")  # by position in the account
SEVERITY_SHARES = np.array([0.03, 0.15, 0.50, 0.32])
SPIKE_SEVERITY_SHARES = np.array([0.30, 0.40, 0.20, 0.10])
DAYS_TO_CLOSE = np.array([2.0, 5.0, 9.0, 15.0])  # mean, by severity 1..4
SLA_BREACH_RATE = np.array([0.25, 0.12, 0.05, 0.03])

INDUSTRIES = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Logistics",
    "Education",
    "Media",
    "Energy",
    "Public Sector",
)
CSM_OWNERS = tuple(
    f"{first} {last}"
    for first, last in (
        ("Avery", "Stone"),
        ("Blake", "Moreno"),
        ("Casey", "Lindqvist"),
        ("Dana", "Okafor"),
        ("Eli", "Nakamura"),
        ("Farah", "Haddad"),
        ("Gus", "Petrov"),
        ("Hana", "Kim"),
        ("Ines", "Duarte"),
        ("Jon", "Whitfield"),
        ("Kira", "Novak"),
        ("Luis", "Ortega"),
        ("Mei", "Chen"),
        ("Nils", "Berg"),
        ("Omar", "Rahman"),
        ("Priya", "Iyer"),
        ("Quinn", "Byrne"),
        ("Rosa", "Fischer"),
        ("Sam", "Adeyemi"),
        ("Tess", "Laurent"),
    )
)
NAME_PREFIXES = (
    "North",
    "Blue",
    "Silver",
    "Iron",
    "Bright",
    "Clear",
    "Swift",
    "Green",
    "High",
    "Deep",
    "Red",
    "Cedar",
    "Summit",
    "Harbor",
    "Granite",
    "Golden",
    "Maple",
    "Lumen",
    "Polar",
    "Vista",
)
NAME_ROOTS = (
    "wind",
    "peak",
    "stone",
    "field",
    "bridge",
    "wave",
    "leaf",
    "forge",
    "line",
    "point",
    "gate",
    "works",
    "path",
    "spring",
    "crest",
    "rock",
    "light",
    "mark",
    "ridge",
    "vale",
)
# A few suffixes carry commas, quotes, '&' and non-ASCII, so CSV quoting and escaping get exercised.
NAME_SUFFIXES = (
    "Systems",
    "Labs",
    "Analytics",
    "Logistics",
    "Health",
    "Foods",
    "Energy",
    "Capital",
    "Media",
    "Robotics",
    "& Co.",
    "Holdings, Inc.",
    "GmbH",
    "S.A.",
    "Ltd.",
    "Ventures",
    'Freight "Express"',
    "Software",
    "Partners, LLC",
    "Fabrik & Söhne",
)
FIRST_NAMES = (
    ("Alex", "alex"),
    ("Maria", "maria"),
    ("José", "jose"),
    ("Wei", "wei"),
    ("Fatima", "fatima"),
    ("John", "john"),
    ("Zoë", "zoe"),
    ("Liam", "liam"),
    ("Aiko", "aiko"),
    ("Olga", "olga"),
    ("Noah", "noah"),
    ("Emma", "emma"),
    ("Ravi", "ravi"),
    ("Sofia", "sofia"),
    ("Kwame", "kwame"),
    ("Chloé", "chloe"),
)
LAST_NAMES = (
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Müller", "mueller"),
    ("O'Brien", "obrien"),
    ("Nguyễn", "nguyen"),
    ("Patel", "patel"),
    ("Johansson", "johansson"),
    ("Rossi", "rossi"),
    ("Kowalski", "kowalski"),
    ("Tanaka", "tanaka"),
    ("Silva", "silva"),
    ("Dubois", "dubois"),
    ("Mensah", "mensah"),
    ("Cohen", "cohen"),
    ("Ivanova", "ivanova"),
    ("Brown", "brown"),
)
CASE_CATEGORIES = ("bug", "how_to", "billing", "integration", "performance", "access", "feature_request")
SPIKE_CATEGORIES = ("bug", "performance", "integration")
NPS_COMMENTS = (
    "Great product, the team loves it.",
    'Reports are slow; "export" times out.',
    "Support was quick, thanks!",
    "Pricing is hard to justify, to be honest.",
    "Onboarding took longer than expected.",
    "Très utile pour l'équipe.",
    "Missing an integration with our CRM",
    "Would recommend, with caveats: SSO setup was painful.",
)

FORMATS = ("csv", "mixed", "json", "jsonl")
MIXED_JSON_ENTITIES = frozenset({"cases", "nps", "invoices"})
EXTENSIONS = ("csv", "json", "jsonl")
MAX_TENURE_DAYS = 3 * 365  # the oldest subscription start
HISTORY_DAYS = 730  # cases, NPS, invoices and opportunities span this far back
CHURN_WINDOW_DAYS = 540  # churn dates fall within this many days before as_of
RENEWAL_OPP_DAYS = 180  # an open renewal opportunity exists this far ahead
ROWS_PER_CHUNK = 1_300_000  # usage rows per chunk: 100k accounts x 13 weeks
MAX_CHUNK_ACCOUNTS = 100_000
MIN_CHUNK_ACCOUNTS = 1_000
EPOCH = dt.date(1970, 1, 1)
ACTIVE, CANCELLED, CHURNED = "active", "cancelled", "churned"


@dataclass(frozen=True)
class GenerateSummary:
    """What one generation wrote: parameters, rows per entity, file names and content hashes."""

    out_dir: Path
    as_of: dt.date
    accounts: int
    seed: int
    weeks: int
    fmt: str
    counts: Mapping[str, int]  # entity -> rows
    files: Mapping[str, str]  # entity -> file name
    hashes: Mapping[str, str]  # file name -> sha256
    archetypes: Mapping[str, int]  # archetype -> accounts
    churned: Mapping[str, int]  # archetype -> accounts that churned (all subscriptions ended)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "as_of": self.as_of.isoformat(),
            "accounts": self.accounts,
            "seed": self.seed,
            "weeks": self.weeks,
            "fmt": self.fmt,
            "counts": dict(self.counts),
            "files": dict(self.files),
            "hashes": dict(self.hashes),
            "archetypes": dict(self.archetypes),
            "churned": dict(self.churned),
        }


def generate_dataset(
    out_dir: Path,
    accounts: int,
    *,
    seed: int = 0,
    weeks: int = 13,
    as_of: dt.date = dt.date(2026, 9, 30),
    fmt: str = "csv",
) -> GenerateSummary:
    """Write a synthetic data set of `accounts` accounts to `out_dir`; same arguments, same bytes."""
    _check_parameters(accounts, seed, weeks, fmt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(
        as_of=(as_of - EPOCH).days,
        weeks=weeks,
        account_width=max(7, len(str(accounts))),
        id_width=max(8, len(str(accounts)) + 2),
    )
    chunk_size = min(MAX_CHUNK_ACCOUNTS, max(MIN_CHUNK_ACCOUNTS, ROWS_PER_CHUNK // weeks))
    next_seq = {"contacts": 1, "subs": 1, "cases": 1, "nps": 1, "invoices": 1, "crm_opps": 1}
    archetype_counts = np.zeros(len(ARCHETYPES), dtype=np.int64)
    churned_counts = np.zeros(len(ARCHETYPES), dtype=np.int64)
    files = {name: f"{name}.{_extension(name, fmt)}" for name in ENTITIES}
    with contextlib.ExitStack() as stack:
        writers = {
            name: _EntityWriter(stack.enter_context(atomic_writer(out_dir / file, "wb")), _extension(name, fmt))
            for name, file in files.items()
        }
        for chunk, first in enumerate(range(0, accounts, chunk_size)):
            rng = np.random.default_rng([seed, chunk])
            draw = _draw_accounts(rng, first, min(chunk_size, accounts - first), run, next_seq)
            archetype_counts += np.bincount(draw.archetype, minlength=len(ARCHETYPES))
            churned_counts += np.bincount(draw.archetype[draw.churned], minlength=len(ARCHETYPES))
            for name, frame in _chunk_tables(rng, draw, run, next_seq).items():
                writers[name].append(frame)
        for writer in writers.values():
            writer.finish()
    _remove_other_formats(out_dir, files)
    return GenerateSummary(
        out_dir=out_dir,
        as_of=as_of,
        accounts=accounts,
        seed=seed,
        weeks=weeks,
        fmt=fmt,
        counts={name: writers[name].rows for name in sorted(ENTITIES)},
        files=dict(sorted(files.items())),
        hashes={files[name]: writers[name].digest() for name in sorted(ENTITIES)},
        archetypes=dict(zip(ARCHETYPES, archetype_counts.tolist(), strict=True)),
        churned=dict(zip(ARCHETYPES, churned_counts.tolist(), strict=True)),
    )


def _check_parameters(accounts: int, seed: int, weeks: int, fmt: str) -> None:
    if accounts < 1:
        raise C360Error(f"--accounts must be at least 1, got {accounts}", code="GENERATE_INVALID")
    if seed < 0:
        raise C360Error(f"--seed must be 0 or more, got {seed}", code="GENERATE_INVALID")
    if weeks < 1:
        raise C360Error(f"--weeks must be at least 1, got {weeks}", code="GENERATE_INVALID")
    if fmt not in FORMATS:
        raise C360Error(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", code="GENERATE_INVALID")


def _extension(entity: str, fmt: str) -> str:
    if fmt == "mixed":
        return "json" if entity in MIXED_JSON_ENTITIES else "csv"
    return fmt


def _remove_other_formats(out_dir: Path, files: Mapping[str, str]) -> None:
    for name, kept in files.items():
        for extension in EXTENSIONS:
            stale = out_dir / f"{name}.{extension}"
            if stale.name != kept:
                stale.unlink(missing_ok=True)


class _EntityWriter:
    """Appends chunks of one entity to an open file as CSV, a JSON array or JSON lines."""

    def __init__(self, handle: IO[bytes], extension: str) -> None:
        self._handle, self._extension = handle, extension
        self._hash = hashlib.sha256()
        self._header_written = False
        self.rows = 0

    def append(self, frame: pl.DataFrame) -> None:
        if self._extension == "csv":
            text = frame.write_csv(include_header=not self._header_written, float_precision=2)
            self._header_written = True
        elif frame.height == 0:
            return
        elif self._extension == "jsonl":
            text = frame.write_ndjson()
        else:  # one JSON object per line; JSON strings hold no raw newline, so lines split safely
            text = ("[\n" if self.rows == 0 else ",\n") + frame.write_ndjson().rstrip("\n").replace("\n", ",\n")
        self._emit(text)
        self.rows += frame.height

    def finish(self) -> None:
        if self._extension == "json":
            self._emit("\n]\n" if self.rows else "[]\n")

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def _emit(self, text: str) -> None:
        data = text.encode("utf-8")
        self._handle.write(data)
        self._hash.update(data)


@dataclass(frozen=True)
class _Run:
    """Run-wide constants: as_of as a day number, the usage weeks and the id widths."""

    as_of: int
    weeks: int
    account_width: int
    id_width: int


@dataclass(frozen=True)
class _AccountDraw:
    """One chunk of accounts as numpy columns (dates are day numbers since 1970-01-01)."""

    index: np.ndarray  # global 1-based account number
    account_ids: pl.Series
    names: pl.Series
    archetype: np.ndarray
    segment: np.ndarray
    currency: np.ndarray
    product_plan: np.ndarray
    seats: np.ndarray
    arr_cents: np.ndarray
    churned: np.ndarray
    start: np.ndarray  # first day of the main subscription
    terms: np.ndarray  # annual terms from start to renewal_date
    renewal: np.ndarray
    anchor: np.ndarray  # the day the archetype's story is told up to: as_of, or the churn date
    created: np.ndarray
    status: np.ndarray
    sentiment: np.ndarray
    has_nps: np.ndarray
    has_addon: np.ndarray
    addon_product: np.ndarray
    addon_start: np.ndarray
    addon_terms: np.ndarray
    addon_renewal: np.ndarray
    addon_status: np.ndarray
    addon_arr_cents: np.ndarray
    contacts: np.ndarray  # contacts per account, the replacement champion excluded
    replacement_champion: np.ndarray
    champion_left: np.ndarray  # when a departing champion ended
    first_contact_seq: np.ndarray
    first_sub_seq: np.ndarray
    region: np.ndarray
    region_missing: np.ndarray
    industry: np.ndarray
    industry_missing: np.ndarray
    csm: np.ndarray
    csm_missing: np.ndarray
    discount: np.ndarray  # percent, NaN = none
    auto_renew: np.ndarray


def _draw_accounts(rng: np.random.Generator, first: int, n: int, run: _Run, next_seq: dict[str, int]) -> _AccountDraw:
    """Draw the account-level facts of one chunk; reserves its contact and subscription ids."""
    as_of = run.as_of
    archetype = rng.choice(len(ARCHETYPES), size=n, p=ARCHETYPE_SHARES)
    segment = rng.choice(len(SEGMENTS), size=n, p=SEGMENT_SHARES)
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARES)
    currency = _choice_per_row(rng, CURRENCY_SHARES[region])
    seats = np.clip(_round(SEAT_MEDIAN[segment] * _noise(rng, 0.6, n)), SEAT_MIN[segment], SEAT_MAX[segment])
    plan_index = _choice_per_row(rng, PLAN_SHARES[segment])
    discount = np.where(rng.random(n) < DISCOUNT_SHARE[segment], rng.choice(DISCOUNTS, n), np.nan)
    list_price = seats * rng.uniform(PRICE_LOW[segment], PRICE_HIGH[segment]) * FX_FROM_USD[currency]
    arr_cents = _round(list_price * (1 - np.nan_to_num(discount) / 100) * 100)

    has_nps = rng.random(n) < 0.8
    sentiment = NPS_MEAN[archetype] + rng.normal(0, 1.2, n)
    churn_rate = CHURN_RATE[archetype] + 0.10 * (has_nps & (sentiment < 6.5))
    churned = rng.random(n) < churn_rate

    live_start = _no_leap_day(as_of - rng.integers(14, MAX_TENURE_DAYS + 1, n))
    churn_target = as_of - rng.integers(1, CHURN_WINDOW_DAYS + 1, n)
    churn_terms = rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.20])
    # No subscription starts more than MAX_TENURE_DAYS before as_of (one term always fits).
    churn_terms = np.minimum(churn_terms, (churn_target - (as_of - MAX_TENURE_DAYS)) // 366)
    churn_start = _no_leap_day(_add_years(churn_target, -churn_terms))
    start = np.where(churned, churn_start, live_start)
    terms = np.where(churned, churn_terms, _terms_past(live_start, as_of))
    renewal = _add_years(start, terms)
    anchor = np.where(churned, renewal, as_of)
    status = np.where(churned, np.where(rng.random(n) < 0.3, CANCELLED, CHURNED), ACTIVE)

    has_addon = rng.random(n) < ADDON_SHARE[segment]
    addon_at = rng.integers(0, terms)  # added at one of the main subscription's anniversaries
    last_renewal = _add_years(start, terms - 1)
    addon_cancelled = (
        ~churned & (addon_at < terms - 1) & (last_renewal >= as_of - CHURN_WINDOW_DAYS) & (rng.random(n) < 0.15)
    )
    addon_terms = terms - addon_at - addon_cancelled
    addon_start = _add_years(start, addon_at)

    contacts = rng.integers(CONTACTS_LOW[segment], CONTACTS_HIGH[segment] + 1)
    replacement = (archetype == DEPARTING) & (rng.random(n) < 0.5)
    subs_per_account = 1 + has_addon
    first_sub_seq = next_seq["subs"] + np.cumsum(subs_per_account) - subs_per_account
    first_contact_seq = next_seq["contacts"] + np.cumsum(contacts + replacement) - (contacts + replacement)
    next_seq["subs"] += int(subs_per_account.sum())
    next_seq["contacts"] += int((contacts + replacement).sum())

    index = np.arange(first + 1, first + n + 1)
    names = _concat(
        _pick(NAME_PREFIXES, rng.integers(0, len(NAME_PREFIXES), n)),
        _pick(NAME_ROOTS, rng.integers(0, len(NAME_ROOTS), n)),
        " ",
        _pick(NAME_SUFFIXES, rng.integers(0, len(NAME_SUFFIXES), n)),
    )
    return _AccountDraw(
        index=index,
        account_ids=_ids("ACC-", index, run.account_width),
        names=names,
        archetype=archetype,
        segment=segment,
        currency=currency,
        product_plan=plan_index,
        seats=seats,
        arr_cents=arr_cents,
        churned=churned,
        start=start,
        terms=terms,
        renewal=renewal,
        anchor=anchor,
        created=start - rng.integers(0, 91, n),
        status=status,
        sentiment=sentiment,
        has_nps=has_nps,
        has_addon=has_addon,
        addon_product=rng.integers(0, len(PRODUCTS) - 1, n),
        addon_start=addon_start,
        addon_terms=addon_terms,
        addon_renewal=_add_years(addon_start, addon_terms),
        addon_status=np.where(churned, status, np.where(addon_cancelled, CANCELLED, ACTIVE)),
        addon_arr_cents=_round(arr_cents * rng.uniform(0.1, 0.3, n)),
        contacts=contacts,
        replacement_champion=replacement,
        champion_left=anchor - rng.integers(3, 86, n),
        first_contact_seq=first_contact_seq,
        first_sub_seq=first_sub_seq,
        region=region,
        region_missing=rng.random(n) < 0.02,
        industry=rng.integers(0, len(INDUSTRIES), n),
        industry_missing=rng.random(n) < 0.03,
        csm=rng.integers(0, len(CSM_OWNERS), n),
        csm_missing=(segment == 2) & (rng.random(n) < 0.15),  # small accounts are often pooled
        discount=discount,
        auto_renew=rng.random(n) < AUTO_RENEW_SHARE[segment],
    )


def _chunk_tables(
    rng: np.random.Generator, draw: _AccountDraw, run: _Run, next_seq: dict[str, int]
) -> dict[str, pl.DataFrame]:
    """Every entity's rows for one chunk of accounts, in contract column order and key order."""
    subs = _subscription_rows(draw)
    terms = _subscription_terms(subs)
    tables = {
        "accounts": _accounts(draw),
        "contacts": _contacts(rng, draw, run),
        "subs": _subscriptions(subs, run),
        "usage": _usage(rng, draw, run),
        "cases": _cases(rng, draw, run),
        "nps": _nps(rng, draw, run),
        "invoices": _invoices(rng, draw, run, terms),
        "crm_opps": _opportunities(rng, draw, run, subs, terms),
    }
    for name, id_column, prefix in (
        ("cases", "case_id", "CASE-"),
        ("nps", "response_id", "NPS-"),
        ("invoices", "invoice_id", "INV-"),
        ("crm_opps", "opp_id", "OPP-"),
    ):
        frame = tables[name].sort("_account", "_day", maintain_order=True)
        seq = np.arange(next_seq[name], next_seq[name] + frame.height)
        next_seq[name] += frame.height
        tables[name] = frame.with_columns(_ids(prefix, seq, run.id_width).alias(id_column))
    return {name: _conform(name, frame, draw) for name, frame in tables.items()}


def _conform(name: str, frame: pl.DataFrame, draw: _AccountDraw) -> pl.DataFrame:
    """Add account ids from the local account index; keep the contract's columns, types and order."""
    spec = ENTITIES[name]
    if "account_id" not in frame.columns:
        frame = frame.with_columns(draw.account_ids.gather(frame["_account"]).alias("account_id"))
    return frame.select(pl.col(f.name).cast(spec.polars_schema[f.name]) for f in spec.fields)


def _accounts(draw: _AccountDraw) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": draw.account_ids,
            "name": draw.names,
            "segment": _pick(SEGMENTS, draw.segment),
            "industry": _nullable(_pick(INDUSTRIES, draw.industry), ~draw.industry_missing),
            "region": _nullable(_pick(REGIONS, draw.region), ~draw.region_missing),
            "csm_owner": _nullable(_pick(CSM_OWNERS, draw.csm), ~draw.csm_missing),
            "created_on": _dates(draw.created),
        }
    )


@dataclass(frozen=True)
class _Subs:
    """Every subscription of the chunk as numpy columns, in id order (main, then its add-on)."""

    account: np.ndarray
    seq: np.ndarray
    product: np.ndarray  # index into PRODUCTS
    product_plan: np.ndarray
    seats: np.ndarray
    arr_cents: np.ndarray
    currency: np.ndarray
    start: np.ndarray
    terms: np.ndarray
    renewal: np.ndarray
    status: np.ndarray
    auto_renew: np.ndarray
    discount: np.ndarray


def _subscription_rows(draw: _AccountDraw) -> _Subs:
    addon = np.flatnonzero(draw.has_addon)
    seq = np.concatenate([draw.first_sub_seq, draw.first_sub_seq[addon] + 1])
    order = np.argsort(seq, kind="stable")

    def both(main: np.ndarray, addon_values: np.ndarray) -> np.ndarray:
        return np.concatenate([main, addon_values])[order]

    status = both(draw.status, draw.addon_status[addon])
    return _Subs(
        account=both(np.arange(len(draw.index)), addon),
        seq=seq[order],
        product=both(np.zeros(len(draw.index), dtype=np.int64), draw.addon_product[addon] + 1),
        product_plan=both(draw.product_plan, draw.product_plan[addon]),
        seats=both(draw.seats, np.zeros(len(addon), dtype=np.int64)),  # add-ons are flat-priced
        arr_cents=both(draw.arr_cents, draw.addon_arr_cents[addon]),
        currency=both(draw.currency, draw.currency[addon]),
        start=both(draw.start, draw.addon_start[addon]),
        terms=both(draw.terms, draw.addon_terms[addon]),
        renewal=both(draw.renewal, draw.addon_renewal[addon]),
        status=status,
        auto_renew=both(draw.auto_renew, draw.auto_renew[addon]) & (status != CANCELLED),
        discount=both(draw.discount, draw.discount[addon]),
    )


def _subscriptions(subs: _Subs, run: _Run) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subscription_id": _ids("SUB-", subs.seq, run.id_width),
            "_account": subs.account,
            "product": _pick(PRODUCTS, subs.product),
            "plan": _pick(PLANS, subs.product_plan),
            "seats": subs.seats,
            "arr": subs.arr_cents / 100,
            "currency": _pick(CURRENCIES, subs.currency),
            "start_date": _dates(subs.start),
            "renewal_date": _dates(subs.renewal),
            "status": subs.status,
            "auto_renew": subs.auto_renew,
            "discount_pct": subs.discount,
        }
    ).with_columns(pl.col("discount_pct").fill_nan(None))


def _usage(rng: np.random.Generator, draw: _AccountDraw, run: _Run) -> pl.DataFrame:
    """`weeks` as_of-aligned windows per account, shaped by the archetype relative to its anchor."""
    n, weeks = len(draw.index), run.weeks
    arch = draw.archetype
    window_end = run.as_of - 7 * np.arange(weeks - 1, -1, -1)
    live_until = np.where(draw.churned, draw.renewal, run.as_of + 1)
    present = (
        (window_end[None, :] - 6 >= draw.start[:, None])
        & (window_end[None, :] < live_until[:, None])
        & (arch != NO_USAGE)[:, None]
    )
    weeks_before_anchor = (draw.anchor[:, None] - window_end[None, :]) // 7
    utilization = rng.uniform(UTIL_LOW[arch], UTIL_HIGH[arch])
    growth = rng.uniform(0.02, 0.05, n)  # weekly, over the last 8-16 weeks; flat before
    growth_weeks = rng.integers(8, 17, n)
    slide = rng.uniform(0.35, 0.6, n)
    # A live account slid in the last 4 weeks; a churned one 4-12 weeks before it left, so the
    # slide shows in a past snapshot ahead of the churn rather than only on the churn date.
    slide_weeks = np.where(draw.churned, rng.integers(4, 13, n), 4)
    trend = np.where(
        (arch == GROWING)[:, None],
        (1 - growth[:, None]) ** np.clip(weeks_before_anchor, 0, growth_weeks[:, None]),
        np.where(((arch == SLIDING)[:, None]) & (weeks_before_anchor < slide_weeks[:, None]), slide[:, None], 1.0),
    )
    seats = draw.seats[:, None]
    users = _round(seats * utilization[:, None] * trend * _noise(rng, 0.04, (n, weeks)))
    # Only over-seat accounts reach their seat count, so "active users >= seats" singles them out.
    users = np.where((arch == OVER_SEAT)[:, None], np.maximum(users, seats), np.minimum(users, seats - 1))
    events = _round(users * rng.uniform(15, 60, n)[:, None] * _noise(rng, 0.08, (n, weeks)))
    low = (arch == LOW_ADOPTION)[:, None]
    adoption = np.where(low[:, 0], rng.uniform(0.03, 0.12, n), rng.uniform(0.35, 0.8, n))[:, None]
    features = np.clip(_round(FEATURE_CATALOG * adoption * _noise(rng, 0.06, (n, weeks))), 1, FEATURE_CATALOG)
    features = np.where(users == 0, 0, features)
    release_share = np.where(low[:, 0], rng.uniform(0.0, 0.05, n), rng.uniform(0.1, 0.35, n))[:, None]
    release = rng.binomial(features, np.broadcast_to(release_share, features.shape))
    keep = present.ravel()
    ends = np.broadcast_to(window_end, (n, weeks)).ravel()[keep]
    return pl.DataFrame(
        {
            "_account": np.repeat(np.arange(n), weeks)[keep],
            "window_start": _dates(ends - 6),
            "window_end": _dates(ends),
            "active_users": users.ravel()[keep],
            "events": events.ravel()[keep],
            "features_used": features.ravel()[keep],
            "release_features_used": release.ravel()[keep],
        }
    )


def _contacts(rng: np.random.Generator, draw: _AccountDraw, run: _Run) -> pl.DataFrame:
    per_account = draw.contacts + draw.replacement_champion
    account = np.repeat(np.arange(len(draw.index)), per_account)
    position = np.arange(len(account)) - np.repeat(np.cumsum(per_account) - per_account, per_account)
    is_replacement = position == draw.contacts[account]
    role = np.where(is_replacement, 0, np.minimum(position, len(ROLES) - 1))
    created, anchor = draw.created[account], draw.anchor[account]
    early = created + rng.integers(0, 31, len(account))  # champion and admin join at the start
    later = created + _whole_days(rng.random(len(account)) * (anchor - created) * 0.7)
    champion_left = draw.champion_left[account]
    successor = champion_left + rng.integers(0, 31, len(account))
    started = np.minimum(np.where(is_replacement, successor, np.where(position < 2, early, later)), anchor)
    departing = (position == 0) & (draw.archetype[account] == DEPARTING)
    room = anchor - 91 - started  # background departures end before the last 90 days
    background_left = (position >= 1) & ~is_replacement & (room > 0) & (rng.random(len(account)) < 0.08)
    ended = np.where(
        departing,
        np.maximum(champion_left, started),
        np.where(background_left, started + _whole_days(rng.random(len(account)) * np.maximum(room, 0)), -1),
    )
    first_name = rng.integers(0, len(FIRST_NAMES), len(account))
    last_name = rng.integers(0, len(LAST_NAMES), len(account))
    email = _concat(
        _pick([ascii_name for _, ascii_name in FIRST_NAMES], first_name),
        ".",
        _pick([ascii_name for _, ascii_name in LAST_NAMES], last_name),
        "@",
        draw.account_ids.gather(account).str.to_lowercase(),
        ".example.com",
    )
    return pl.DataFrame(
        {
            "contact_id": _ids("CON-", draw.first_contact_seq[account] + position, run.id_width),
            "_account": account,
            "name": _concat(
                _pick([display for display, _ in FIRST_NAMES], first_name),
                " ",
                _pick([display for display, _ in LAST_NAMES], last_name),
            ),
            "email": _nullable(email, rng.random(len(account)) >= 0.1),
            "role": _pick(ROLES, role),
            "started_on": _dates(started),
            "ended_on": _dates(ended, ended >= 0),
        }
    )


def _cases(rng: np.random.Generator, draw: _AccountDraw, run: _Run) -> pl.DataFrame:
    """Background cases over the live history, plus a burst before the anchor for support spikes."""
    n = len(draw.index)
    since = np.maximum(draw.start, run.as_of - HISTORY_DAYS)
    span = np.maximum(draw.anchor - since, 0)
    count = rng.poisson(CASES_PER_YEAR[draw.segment] * span / 365)
    account = np.repeat(np.arange(n), count)
    opened = since[account] + _whole_days(rng.random(len(account)) * span[account])
    severity = rng.choice(4, size=len(account), p=SEVERITY_SHARES) + 1
    sla = rng.random(len(account)) < SLA_BREACH_RATE[severity - 1]
    closed = opened + _whole_days(rng.exponential(DAYS_TO_CLOSE[severity - 1]))
    category = rng.integers(0, len(CASE_CATEGORIES), len(account))

    burst = np.where(draw.archetype == SUPPORT_SPIKE, rng.integers(4, 9, n), 0)
    spike_account = np.repeat(np.arange(n), burst)
    leading = np.arange(len(spike_account)) == np.repeat(np.cumsum(burst) - burst, burst)  # first of each burst
    anchor = draw.anchor[spike_account]
    lead = np.where(draw.churned, rng.integers(0, 91, n), 0)[spike_account]  # churned: trouble began earlier
    spike_opened = np.maximum(anchor - lead - rng.integers(1, 31, len(spike_account)), draw.start[spike_account])
    spike_severity = np.where(leading, 1, rng.choice(4, size=len(spike_account), p=SPIKE_SEVERITY_SHARES) + 1)
    spike_sla = leading | (rng.random(len(spike_account)) < 0.5)
    # The leading sev-1 stays open until the anchor (and past it for live accounts).
    spike_closed = np.where(
        leading,
        np.where(draw.churned[spike_account], anchor + rng.integers(0, 15, len(spike_account)), run.as_of + 1),
        spike_opened + _whole_days(rng.exponential(DAYS_TO_CLOSE[spike_severity - 1])),
    )
    spike_category = rng.integers(0, len(SPIKE_CATEGORIES), len(spike_account))

    closed_all = np.concatenate([closed, spike_closed])
    category_all = pl.concat([_pick(CASE_CATEGORIES, category), _pick(SPIKE_CATEGORIES, spike_category)])
    return pl.DataFrame(
        {
            "_account": np.concatenate([account, spike_account]),
            "_day": np.concatenate([opened, spike_opened]),
            "opened_on": _dates(np.concatenate([opened, spike_opened])),
            "closed_on": _dates(closed_all, closed_all <= run.as_of),
            "severity": np.concatenate([severity, spike_severity]),
            "sla_breached": np.concatenate([sla, spike_sla]),
            "category": _nullable(category_all, rng.random(len(closed_all)) >= 0.05),
        }
    )


def _nps(rng: np.random.Generator, draw: _AccountDraw, run: _Run) -> pl.DataFrame:
    """Roughly half-yearly responses; risky archetypes scored higher before their decline."""
    responses = np.where(draw.has_nps, rng.integers(1, 5, len(draw.index)), 0)
    account = np.repeat(np.arange(len(draw.index)), responses)
    nth = np.arange(len(account)) - np.repeat(np.cumsum(responses) - responses, responses)  # 0 = latest
    rows = len(account)
    responded = draw.anchor[account] - rng.integers(1, 121, rows) - 182 * nth - rng.integers(0, 31, rows)
    keep = (responded >= draw.start[account] + 14) & (responded >= run.as_of - HISTORY_DAYS)
    arch = draw.archetype[account]
    score = np.clip(_round(draw.sentiment[account] + (nth > 0) * NPS_DECLINE[arch] + rng.normal(0, 1.0, rows)), 0, 10)
    contact = draw.first_contact_seq[account] + rng.integers(0, draw.contacts[account])
    with_contact = rng.random(rows) < 0.7
    comment = _nullable(_pick(NPS_COMMENTS, rng.integers(0, len(NPS_COMMENTS), rows)), rng.random(rows) < 0.35)
    frame = pl.DataFrame(
        {
            "_account": account,
            "_day": responded,
            "contact_id": _nullable(_ids("CON-", contact, run.id_width), with_contact),
            "responded_on": _dates(responded),
            "score": score,
            "comment": comment,
        }
    )
    return frame.filter(pl.Series(keep))


@dataclass(frozen=True)
class _Terms:
    """One row per annual term of every subscription in the chunk (term 0 starts at start_date)."""

    account: np.ndarray
    sub_seq: np.ndarray
    product: np.ndarray
    term: np.ndarray
    term_start: np.ndarray
    arr_cents: np.ndarray


def _subscription_terms(subs: _Subs) -> _Terms:
    term = np.arange(int(subs.terms.sum())) - np.repeat(np.cumsum(subs.terms) - subs.terms, subs.terms)
    return _Terms(
        account=np.repeat(subs.account, subs.terms),
        sub_seq=np.repeat(subs.seq, subs.terms),
        product=np.repeat(subs.product, subs.terms),
        term=term,
        term_start=_add_years(np.repeat(subs.start, subs.terms), term),
        arr_cents=np.repeat(subs.arr_cents, subs.terms),
    )


def _invoices(rng: np.random.Generator, draw: _AccountDraw, run: _Run, terms: _Terms) -> pl.DataFrame:
    """An annual invoice per term, a past-due true-up for overdue accounts, some services invoices."""
    n = len(draw.index)
    recent = terms.term_start >= run.as_of - HISTORY_DAYS
    account, issued, cents = terms.account[recent], terms.term_start[recent], terms.arr_cents[recent]
    net = NET_DAYS[draw.segment[account]]
    late = rng.random(len(account)) < 0.08
    paid = issued + np.where(late, net + rng.integers(1, 31, len(account)), rng.integers(0, net - 4))

    overdue = np.flatnonzero(draw.archetype == OVERDUE)
    overdue_age = np.where(draw.churned, rng.integers(45, 161, n), rng.integers(45, 101, n))[overdue]
    overdue_issued = np.maximum(draw.anchor[overdue] - overdue_age, draw.start[overdue])
    overdue_cents = _round(draw.arr_cents[overdue] * rng.uniform(0.05, 0.25, len(overdue)))

    services = np.flatnonzero((draw.segment == 0) & (rng.random(n) < 0.05))
    services_issued = np.maximum(draw.anchor[services] - rng.integers(30, 301, len(services)), draw.start[services])
    services_cents = _round(rng.uniform(5000, 40000, len(services)) * FX_FROM_USD[draw.currency[services]] * 100)

    all_account = np.concatenate([account, overdue, services])
    all_issued = np.concatenate([issued, overdue_issued, services_issued])
    all_cents = np.concatenate([cents, overdue_cents, services_cents])
    due = all_issued + np.concatenate([net, np.full(len(overdue), 30), np.full(len(services), 45)])
    all_paid = np.concatenate([paid, np.full(len(overdue), -1), services_issued + rng.integers(0, 41, len(services))])
    sub_seq = np.concatenate([terms.sub_seq[recent], draw.first_sub_seq[overdue], np.zeros(len(services), np.int64)])
    credit = rng.random(len(all_account)) < 0.04
    credit_cents = _round(all_cents * rng.uniform(0.05, 0.15, len(all_account)))
    return pl.DataFrame(
        {
            "_account": all_account,
            "_day": all_issued,
            "subscription_id": _nullable(_ids("SUB-", sub_seq, run.id_width), sub_seq > 0),
            "issued_on": _dates(all_issued),
            "due_on": _dates(due),
            "paid_on": _dates(all_paid, (all_paid >= 0) & (all_paid <= run.as_of)),
            "amount": all_cents / 100,
            "credit_amount": _nullable(pl.Series(credit_cents / 100), credit),
            "currency": _pick(CURRENCIES, draw.currency[all_account]),
        }
    )


def _opportunities(rng: np.random.Generator, draw: _AccountDraw, run: _Run, subs: _Subs, terms: _Terms) -> pl.DataFrame:
    """New business at the start, renewals won/lost/open, and expansions for growing accounts."""
    n = len(draw.index)
    won_renewal = (terms.term >= 1) & (terms.term_start >= run.as_of - HISTORY_DAYS)
    lost = subs.status != ACTIVE
    ending = lost | (subs.renewal <= run.as_of + RENEWAL_OPP_DAYS)

    expanding = np.isin(draw.archetype, (GROWING, OVER_SEAT)) & (rng.random(n) < 0.6)
    past_expansion = rng.random(n) < 0.08
    expansion = np.flatnonzero(expanding | past_expansion)
    expansion_close = np.where(
        expanding[expansion] & ~draw.churned[expansion],
        run.as_of + rng.integers(15, 121, len(expansion)),
        np.maximum(draw.anchor[expansion] - rng.integers(10, 400, len(expansion)), draw.start[expansion]),
    )
    expansion_stage = np.where(expanding[expansion], np.where(draw.churned[expansion], "lost", "open"), "won")
    expansion_cents = _round(draw.arr_cents[expansion] * rng.uniform(0.1, 0.4, len(expansion)))

    parts = (
        # (account, close day, type, stage, amount cents, product for the name)
        (np.arange(n), draw.start, "new_business", np.full(n, "won"), draw.arr_cents, None),
        (
            terms.account[won_renewal],
            terms.term_start[won_renewal],
            "renewal",
            np.full(int(won_renewal.sum()), "won"),
            terms.arr_cents[won_renewal],
            terms.product[won_renewal],
        ),
        (
            subs.account[ending],
            subs.renewal[ending],
            "renewal",
            np.where(lost[ending], "lost", "open"),
            subs.arr_cents[ending],
            subs.product[ending],
        ),
        (expansion, expansion_close, "expansion", expansion_stage, expansion_cents, None),
    )
    frames = []
    for account, close, kind, stage, cents, product in parts:
        names = draw.names.gather(account)
        if product is None:
            name = _concat(names, {"new_business": " - New business", "expansion": " - Expansion"}[kind])
        else:
            name = _concat(names, " - ", _pick(PRODUCTS, product), " renewal ", _dates(close).dt.year().cast(pl.Utf8))
        frames.append(
            pl.DataFrame(
                {
                    "_account": account.astype(np.int64),
                    "_day": close.astype(np.int64),
                    "name": name,
                    "type": pl.repeat(kind, len(account), eager=True, dtype=pl.Utf8),
                    "stage": pl.Series(stage, dtype=pl.Utf8),
                    "amount": cents / 100,
                    "currency": _pick(CURRENCIES, draw.currency[account]),
                    "close_date": _dates(close),
                }
            )
        )
    return pl.concat(frames)


def _terms_past(start: np.ndarray, as_of: int) -> np.ndarray:
    """Annual terms from `start` until the first anniversary strictly after `as_of`."""
    terms = (as_of - start) // 366 + 1  # never past the answer: 366-day years undercount
    while True:
        early = _add_years(start, terms) <= as_of
        if not early.any():
            return terms
        terms = terms + early


def _add_years(days: np.ndarray, years: np.ndarray | int) -> np.ndarray:
    """The same month and day `years` later (day numbers in, day numbers out; no Feb 29 inputs)."""
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    day_in_month = (dates - months.astype("datetime64[D]")).astype(np.int64)
    shifted = (months + np.asarray(years) * 12).astype("datetime64[D]")
    return shifted.astype(np.int64) + day_in_month


def _no_leap_day(days: np.ndarray) -> np.ndarray:
    """Move Feb 29 to Feb 28, so every anniversary of the date exists."""
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    leap_day = (months.astype(np.int64) % 12 == 1) & ((dates - months.astype("datetime64[D]")).astype(np.int64) == 28)
    return np.where(leap_day, days - 1, days).astype(np.int64)


def _whole_days(values: np.ndarray) -> np.ndarray:
    """Truncate a non-negative number of days to int64."""
    return np.floor(values).astype(np.int64)


def _round(values: np.ndarray) -> np.ndarray:
    """Round half up to int64 (np.round rounds half to even)."""
    return _whole_days(np.asarray(values) + 0.5)


def _noise(rng: np.random.Generator, sigma: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """Multiplicative noise around 1."""
    return np.exp(rng.normal(0, sigma, shape))


def _choice_per_row(rng: np.random.Generator, shares: np.ndarray) -> np.ndarray:
    """One index per row drawn from that row's own probabilities (`shares` is rows x choices)."""
    return (rng.random(len(shares))[:, None] >= np.cumsum(shares, axis=1)[:, :-1]).sum(axis=1)


def _dates(days: np.ndarray, keep: np.ndarray | None = None) -> pl.Series:
    series = pl.Series(np.asarray(days, dtype=np.int32)).cast(pl.Date)
    return series if keep is None else _nullable(series, keep)


def _ids(prefix: str, seq: np.ndarray, width: int) -> pl.Series:
    return prefix + pl.Series(np.asarray(seq, dtype=np.int64)).cast(pl.Utf8).str.zfill(width)


def _pick(choices: tuple[str, ...] | list[str], index: np.ndarray) -> pl.Series:
    return pl.Series(list(choices), dtype=pl.Utf8).gather(np.asarray(index, dtype=np.int64))


def _nullable(series: pl.Series, keep: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(keep)).then(series)).to_series()


def _concat(*parts: pl.Series | str) -> pl.Series:
    """Row-wise string concatenation; a plain str is repeated on every row."""
    return pl.select(pl.concat_str([pl.lit(part) for part in parts])).to_series()
