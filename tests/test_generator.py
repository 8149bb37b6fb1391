"""The synthetic data generator: determinism, the input contract, archetypes, past outcomes, formats.

Expected counts are worked out by hand from the shares in generator.py: with 2000 accounts,
an archetype of share 8% has about 160 accounts, of which 70-95% are still live (churn rates
4-35%); the rarest, no_usage (4%, churn 35%), leaves about 80 x 0.62 x 0.8 (live long enough)
= 40. "At least 20 accounts show the pattern" leaves a margin and still fails if the pattern
is never generated.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from c360_dagster.bench import generator
from c360_dagster.bench.generator import ARCHETYPES, generate_dataset
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import sha256_file
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.loader import read_customer_360

AS_OF = dt.date(2026, 9, 30)
N = 2000


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    return out, generate_dataset(out, N, seed=7)


@pytest.fixture(scope="module")
def view(base):
    return read_customer_360(base[0])


def _days_before(days: int) -> dt.date:
    return AS_OF - dt.timedelta(days=days)


def test_same_parameters_give_identical_bytes_and_reported_hashes(base, tmp_path):
    out, summary = base
    again = generate_dataset(tmp_path / "again", N, seed=7)
    assert again.hashes == summary.hashes
    for entity, name in summary.files.items():
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), entity
        assert sha256_file(out / name) == summary.hashes[name]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_different_seed_changes_every_file(base, tmp_path):
    other = generate_dataset(tmp_path, N, seed=8)
    assert all(other.hashes[name] != hash_ for name, hash_ in base[1].hashes.items())


def test_output_loads_through_the_loader_with_the_reported_counts(base, view):
    _, summary = base
    assert view.as_of == AS_OF  # the latest usage window ends on as_of
    assert view.counts() == dict(summary.counts)
    assert set(summary.files.values()) == {f"{name}.csv" for name in ENTITIES}
    assert summary.counts["accounts"] == N
    ids = view.accounts["account_id"]
    assert ids[0] == "ACC-0000001" and ids[-1] == "ACC-0002000"
    assert ids.str.to_lowercase().n_unique() == N


def test_files_are_sorted_by_entity_key(base):
    out, summary = base
    for name, spec in ENTITIES.items():
        raw = pl.read_csv(out / summary.files[name], infer_schema=False)
        assert raw.columns == list(spec.field_names)
        assert raw.select(spec.key).equals(raw.select(spec.key).sort(spec.key)), name


def test_usage_windows_are_weekly_aligned_to_as_of_and_within_limits(view):
    usage = view.usage
    assert usage.select(
        (pl.col("window_end") - pl.col("window_start")).dt.total_days().unique()
    ).to_series().to_list() == [6]
    ends = usage.select(((pl.lit(AS_OF) - pl.col("window_end")).dt.total_days()).alias("d"))["d"]
    assert ends.min() == 0 and ends.max() == 7 * 12 and (ends % 7 == 0).all()
    assert usage.group_by("account_id").len()["len"].max() == 13
    assert (usage["release_features_used"] <= usage["features_used"]).all()
    assert (usage["features_used"] <= generator.FEATURE_CATALOG).all()


def test_every_archetype_is_drawn_and_churn_follows_risk(base):
    _, summary = base
    assert set(summary.archetypes) == set(ARCHETYPES)
    assert all(count > 0 for count in summary.archetypes.values())
    assert sum(summary.archetypes.values()) == N

    def churn_rate(names):
        return sum(summary.churned[a] for a in names) / sum(summary.archetypes[a] for a in names)

    healthy = churn_rate(["growing", "stable"])  # 2-5% (+ low-NPS bump) by construction
    risky = churn_rate(["sliding_usage", "support_spike", "overdue_invoices", "departing_champion"])  # 25-30%
    assert 0 < healthy < 0.12 and 0.2 < risky < 0.45
    assert risky > 3 * healthy


def _last_weeks(usage: pl.DataFrame, first: int, last: int) -> pl.DataFrame:
    """Mean active users and features over windows ending first..last weeks before as_of."""
    weeks_back = (pl.lit(AS_OF) - pl.col("window_end")).dt.total_days() // 7
    return (
        usage.filter(weeks_back.is_between(first, last))
        .group_by("account_id")
        .agg(users=pl.col("active_users").mean(), features=pl.col("features_used").mean(), windows=pl.len())
        .filter(pl.col("windows") == last - first + 1)
    )


def test_each_archetype_shows_its_pattern_in_the_data(view):
    recent, prior, early = _last_weeks(view.usage, 0, 3), _last_weeks(view.usage, 4, 7), _last_weeks(view.usage, 9, 12)
    trend = recent.join(prior, on="account_id", suffix="_prior").join(early, on="account_id", suffix="_early")
    sliding = trend.filter(pl.col("users") < 0.7 * pl.col("users_prior"))
    growing = trend.filter(pl.col("users") > 1.25 * pl.col("users_early"))
    low_adoption = recent.filter(pl.col("features") < 8)  # under 20% of the 40-feature catalog

    live_seats = view.subs.filter(pl.col("status") == "active").group_by("account_id").agg(pl.col("seats").sum())
    over_seat = recent.join(live_seats, on="account_id").filter(pl.col("users") >= pl.col("seats"))

    cases = view.cases.filter(pl.col("opened_on") > _days_before(30))
    spikes = (
        cases.group_by("account_id")
        .agg(
            n=pl.len(),
            open_sev1=((pl.col("severity") == 1) & pl.col("closed_on").is_null()).sum(),
            breaches=pl.col("sla_breached").sum(),
        )
        .filter((pl.col("n") >= 4) & (pl.col("open_sev1") >= 1) & (pl.col("breaches") >= 1))
    )

    overdue = view.invoices.filter(pl.col("paid_on").is_null() & (pl.col("due_on") < _days_before(14)))
    departed = view.contacts.filter(
        (pl.col("role") == "champion") & pl.col("ended_on").is_between(_days_before(89), AS_OF)
    )
    live_since_long = view.subs.filter((pl.col("status") == "active") & (pl.col("start_date") < _days_before(120)))
    no_usage = live_since_long.join(view.usage, on="account_id", how="anti")

    found = {
        "sliding_usage": sliding,
        "growing": growing,
        "low_adoption": low_adoption,
        "over_seat": over_seat,
        "support_spike": spikes,
        "overdue_invoices": overdue,
        "departing_champion": departed,
        "no_usage": no_usage,
    }
    assert {name: frame["account_id"].n_unique() >= 20 for name, frame in found.items()} == dict.fromkeys(found, True)


def test_subscriptions_run_annual_terms_with_past_outcomes(view):
    subs = view.subs.with_columns(
        years=pl.col("renewal_date").dt.year() - pl.col("start_date").dt.year(),
        same_day=pl.col("renewal_date").dt.strftime("%m-%d") == pl.col("start_date").dt.strftime("%m-%d"),
    )
    assert subs["same_day"].all() and (subs["years"] >= 1).all()
    assert (subs["start_date"] >= _days_before(3 * 365)).all()  # up to 3 years back
    active, ended = subs.filter(pl.col("status") == "active"), subs.filter(pl.col("status") != "active")
    assert set(ended["status"].unique()) == {"churned", "cancelled"}
    assert ended.height > 100
    # Ended: the anniversary they did not renew at, within ~18 months before as_of.
    assert ended["renewal_date"].max() <= AS_OF and ended["renewal_date"].min() >= _days_before(541)
    # Active: the next anniversary after as_of, spread over every month of the coming year.
    assert active["renewal_date"].min() > AS_OF
    assert active["renewal_date"].max() <= AS_OF + dt.timedelta(days=366)
    months_ahead = active.select(((pl.col("renewal_date") - pl.lit(AS_OF)).dt.total_days() // 31).unique())
    assert set(months_ahead.to_series().to_list()) >= set(range(11))
    assert (active["years"] >= 2).any()  # earlier anniversaries were renewals


def test_churned_accounts_have_history_before_churn_and_nothing_after(view):
    churn = (
        view.subs.group_by("account_id")
        .agg(live=(pl.col("status") == "active").any(), churned_on=pl.col("renewal_date").max())
        .filter(~pl.col("live"))
    )
    assert churn.height > 100
    for table, column in (
        ("usage", "window_end"),
        ("cases", "opened_on"),
        ("nps", "responded_on"),
        ("invoices", "issued_on"),
    ):
        rows = view.tables[table].join(churn, on="account_id")
        assert rows.height > 0, table
        assert (rows[column] < rows["churned_on"]).all(), table
    lost = view.crm_opps.filter((pl.col("type") == "renewal") & (pl.col("stage") == "lost"))
    assert set(churn["account_id"]) <= set(lost["account_id"])
    won = view.crm_opps.filter((pl.col("type") == "renewal") & (pl.col("stage") == "won"))
    assert won.height > 100 and won["close_date"].max() <= AS_OF


def test_variety_of_segments_regions_currencies_and_optional_values(view):
    accounts, subs = view.accounts, view.subs
    assert set(accounts["segment"]) == {"enterprise", "mid_market", "smb"}
    assert set(accounts["region"].drop_nulls()) == {"NA", "EMEA", "APAC", "LATAM"}
    assert accounts["csm_owner"].n_unique() > 10 and accounts["csm_owner"].null_count() > 0
    currencies = subs.group_by("currency").len().sort("len", descending=True)["currency"].to_list()
    assert currencies == ["USD", "EUR", "GBP"]
    arr = subs.join(accounts, on="account_id").group_by("segment").agg(pl.col("arr").median())
    median = dict(zip(arr["segment"], arr["arr"], strict=True))
    assert median["enterprise"] > 10 * median["mid_market"] / 2 > median["smb"]
    with_nps = view.nps["account_id"].n_unique()
    assert 0.6 * N < with_nps < 0.9 * N  # most accounts, not all
    assert view.invoices["subscription_id"].null_count() > 0
    assert accounts["name"].str.contains(",").any() and accounts["name"].str.contains('"').any()


@pytest.mark.parametrize("fmt", ["mixed", "jsonl", "json"])
def test_formats_load_to_the_same_data(base, view, fmt, tmp_path):
    summary = generate_dataset(tmp_path, N, seed=7, fmt=fmt)
    suffixes = {name: Path(file).suffix for name, file in summary.files.items()}
    if fmt == "mixed":
        assert {n for n, s in suffixes.items() if s == ".json"} == {"cases", "nps", "invoices"}
        assert {n for n, s in suffixes.items() if s == ".csv"} == {"accounts", "contacts", "subs", "usage", "crm_opps"}
    else:
        assert set(suffixes.values()) == {f".{fmt}"}
    other = read_customer_360(tmp_path)
    for name in ENTITIES:
        assert other.tables[name].equals(view.tables[name]), name


def test_regenerating_in_another_format_removes_the_old_files(tmp_path):
    generate_dataset(tmp_path, 50)
    generate_dataset(tmp_path, 50, fmt="mixed")
    assert not (tmp_path / "cases.csv").exists() and (tmp_path / "cases.json").exists()
    read_customer_360(tmp_path)  # one format per entity, so it loads


def test_row_counts_scale_with_accounts(base, tmp_path):
    small = generate_dataset(tmp_path, N // 4, seed=7)
    assert small.counts["accounts"] == N // 4
    for name in ENTITIES:
        assert 3.0 < base[1].counts[name] / small.counts[name] < 5.0, name


def test_chunks_join_seamlessly(monkeypatch, tmp_path):
    monkeypatch.setattr(generator, "MAX_CHUNK_ACCOUNTS", 300)
    monkeypatch.setattr(generator, "MIN_CHUNK_ACCOUNTS", 300)
    summary = generate_dataset(tmp_path, 1000, seed=3)  # four chunks: 300, 300, 300, 100
    view = read_customer_360(tmp_path)
    assert view.counts() == dict(summary.counts)
    for name, id_column in (("contacts", "contact_id"), ("cases", "case_id"), ("invoices", "invoice_id")):
        ids = view.tables[name][id_column].str.slice(-8).cast(pl.Int64)
        assert ids.to_list() == list(range(1, view.tables[name].height + 1)), name


def test_weeks_and_as_of_are_honoured(tmp_path):
    summary = generate_dataset(tmp_path, 200, weeks=5, as_of=dt.date(2025, 3, 2))
    view = read_customer_360(tmp_path)
    assert view.as_of == dt.date(2025, 3, 2) and summary.as_of == dt.date(2025, 3, 2)
    assert view.usage["window_start"].min() >= dt.date(2025, 3, 2) - dt.timedelta(days=7 * 5 - 1)
    assert view.usage.group_by("account_id").len()["len"].max() == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accounts": 0}, "--accounts must be at least 1"),
        ({"accounts": 5, "seed": -1}, "--seed must be 0 or more"),
        ({"accounts": 5, "weeks": 0}, "--weeks must be at least 1"),
        ({"accounts": 5, "fmt": "xml"}, "format must be one of csv, mixed, json, jsonl"),
    ],
)
def test_bad_parameters_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(C360Error, match=message):
        generate_dataset(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []
