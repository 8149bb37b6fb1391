"""Backtest: renewal outcomes from the term structure, hand-computed measures, determinism.

The hand-built scenario uses a health config where only sentiment carries weight and the NPS
ramp runs from 0 to 10, so an account's score is exactly 10 × its latest NPS (red < 40 <=
amber < 70 <= green). Buckets come from configs/customer/renewals.yaml (High 0.9, Medium 0.6,
Low 0.25; SIG_PAYMENT_OVERDUE weighs 2, so it alone makes the band "several").
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from xml.etree import ElementTree

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from c360_dagster.bench.generator import generate_dataset
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import sha256_file
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.timetravel import view_as_of
from c360_dagster.domain.ingest.view import Customer360, empty_table
from c360_dagster.domain.renewals.backtest import (
    render_backtest_chart_svg,
    render_backtest_md,
    renewal_outcomes,
    run_backtest,
    write_backtest,
)
from c360_dagster.domain.renewals.forecast import load_renewals_config
from c360_dagster.domain.scoring.health import health_config_from_dict, load_health_config
from c360_dagster.domain.scoring.signals import load_signals_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "customer"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "customer"
DATA_AS_OF = dt.date(2026, 6, 30)
SNAPSHOT = dt.date(2026, 1, 1)  # horizon 120 days: renewals in (2026-01-01, 2026-05-01]
D = dt.date


@pytest.fixture(scope="module")
def configs():
    health = yaml.safe_load((CONFIGS / "health.yaml").read_text(encoding="utf-8"))
    sentiment_only = copy.deepcopy(health)
    sentiment_only["weights"] = {"adoption": 0, "value": 0, "support": 0, "commercial": 0, "sentiment": 1}
    sentiment_only["segments"] = {}
    sentiment_only["tiers"].update(red_below=40, green_from=70)
    sentiment_only["min_available_components"] = 1
    sentiment_only["thresholds"]["sentiment"].update(nps_floor=0, nps_target=10)
    return (
        health_config_from_dict(sentiment_only),
        load_signals_config(CONFIGS / "signals.yaml"),
        load_renewals_config(CONFIGS / "renewals.yaml"),
    )


def make_view(as_of: dt.date, **rows: list[dict]) -> Customer360:
    tables = {}
    for name, spec in ENTITIES.items():
        full = [{f: row.get(f) for f in spec.field_names} for row in rows.get(name, [])]
        frame = pl.DataFrame(full, schema=spec.polars_schema, orient="row") if full else empty_table(name)
        tables[name] = frame.sort(list(spec.key))
    return Customer360(as_of=as_of, tables=tables)


def sub(account_id: str, start: dt.date, renewal: dt.date, status: str = "active") -> dict:
    return {
        "subscription_id": f"S-{account_id}", "account_id": account_id, "product": "Core", "plan": "growth",
        "seats": 10, "arr": 1000.0, "currency": "USD", "start_date": start, "renewal_date": renewal,
        "status": status, "auto_renew": True,
    }  # fmt: skip


def nps(account_id: str, on: dt.date, score: int, suffix: str = "") -> dict:
    return {"response_id": f"N-{account_id}{suffix}", "account_id": account_id, "responded_on": on, "score": score}


def overdue_invoice(account_id: str, paid: dt.date | None) -> dict:
    """Due 2025-10-31: 62 days overdue on 2026-01-01 unless paid by then."""
    return {
        "invoice_id": f"I-{account_id}", "account_id": account_id, "issued_on": D(2025, 10, 1),
        "due_on": D(2025, 10, 31), "paid_on": paid, "amount": 500.0, "currency": "USD",
    }  # fmt: skip


# account: (latest NPS before the snapshot → tier, its subscription, what happens in the horizon)
SCENARIO = {
    "A1": (2, sub("A1", D(2025, 2, 15), D(2026, 2, 15), "churned")),  # red, churned 02-15
    "A2": (3, sub("A2", D(2024, 3, 1), D(2027, 3, 1))),  # red, renewed 03-01
    "A3": (9, sub("A3", D(2023, 4, 10), D(2027, 4, 10))),  # green, renewed 04-10
    "A4": (8, sub("A4", D(2024, 3, 20), D(2026, 3, 20), "cancelled")),  # green, churned 03-20
    "A5": (5, sub("A5", D(2025, 2, 1), D(2026, 2, 1), "churned")),  # amber + overdue, churned 02-01
    "A6": (10, sub("A6", D(2025, 2, 20), D(2027, 2, 20))),  # green, renewed 02-20
    "A7": (7, sub("A7", D(2025, 4, 25), D(2027, 4, 25))),  # green (70), renewed 04-25
    "A8": (1, sub("A8", D(2025, 4, 1), D(2027, 4, 1))),  # red + overdue, renewed 04-01
    "A9": (9, sub("A9", D(2025, 8, 1), D(2026, 8, 1))),  # green, renews 08-01: after the horizon
}


def scenario_view() -> Customer360:
    accounts = [{"account_id": a, "name": a, "segment": "enterprise", "created_on": D(2020, 1, 1)} for a in SCENARIO]
    return make_view(
        DATA_AS_OF,
        accounts=[*accounts, {"account_id": "A10", "name": "A10", "segment": "smb", "created_on": D(2026, 3, 1)}],
        subs=[*(s for _, s in SCENARIO.values()), sub("A10", D(2026, 3, 1), D(2027, 3, 1))],
        nps=[
            *(nps(a, D(2025, 6, 1), score) for a, (score, _) in SCENARIO.items()),
            # After the snapshot: would make A4 red and A10 green if it leaked.
            nps("A4", D(2026, 3, 1), 1, "-late"),
            nps("A10", D(2026, 3, 5), 9),
        ],
        invoices=[overdue_invoice("A5", paid=D(2026, 2, 10)), overdue_invoice("A8", paid=None)],
    )


def test_renewal_outcomes_follow_the_annual_terms():
    view = make_view(
        DATA_AS_OF,
        subs=[
            sub("A", D(2023, 5, 10), D(2027, 5, 10)),  # active: renewed 2024, 2025, 2026
            sub("B", D(2024, 6, 1), D(2026, 6, 1), "churned"),  # renewed 2025, churned 2026
            sub("C", D(2024, 1, 15), D(2026, 1, 15), "cancelled"),  # renewed 2025, churned 2026
            sub("D", D(2026, 4, 1), D(2027, 4, 1)),  # no anniversary yet
            sub("E", D(2024, 2, 29), D(2027, 2, 28)),  # Feb 29 start: Feb 28 anniversaries
            sub("F", D(2025, 9, 1), D(2026, 9, 1), "churned"),  # churn recorded after as_of: not yet an event
        ],
    )
    got = renewal_outcomes(view, grace_days=30)
    assert got.columns == ["subscription_id", "account_id", "renewal_date", "outcome", "arr", "currency", "arr_after"]
    assert got.select("subscription_id", "renewal_date", "outcome").rows() == [
        ("S-A", D(2024, 5, 10), "renewed"),
        ("S-C", D(2025, 1, 15), "renewed"),
        ("S-E", D(2025, 2, 28), "renewed"),
        ("S-A", D(2025, 5, 10), "renewed"),
        ("S-B", D(2025, 6, 1), "renewed"),
        ("S-C", D(2026, 1, 15), "churned"),
        ("S-E", D(2026, 2, 28), "renewed"),
        ("S-A", D(2026, 5, 10), "renewed"),
        ("S-B", D(2026, 6, 1), "churned"),
    ]


def test_measures_match_the_hand_computation(configs):
    result = run_backtest(scenario_view(), *configs, start=SNAPSHOT, end=SNAPSHOT, step_days=30)
    # Eight renewals in the horizon (A9's is after it, A10 did not exist yet).
    assert result.observations.select("subscription_id", "outcome", "tier", "bucket").rows() == [
        ("S-A5", "churned", "amber", "Low"),  # amber x several (overdue weighs 2)
        ("S-A1", "churned", "red", "Medium"),  # red x none
        ("S-A6", "renewed", "green", "High"),
        ("S-A2", "renewed", "red", "Medium"),
        ("S-A4", "churned", "green", "High"),  # green on 2026-01-01: the NPS of 1 came later
        ("S-A8", "renewed", "red", "Low"),  # red x several
        ("S-A3", "renewed", "green", "High"),
        ("S-A7", "renewed", "green", "High"),
    ]
    # red: A1 churned, A2 and A8 renewed; amber: A5 churned; green: A4 churned, A3 A6 A7 renewed.
    assert result.tiers.rows() == [
        ("red", 3, 1, 2, 0, 0.3333),
        ("amber", 1, 1, 0, 0, 1.0),
        ("green", 4, 1, 3, 0, 0.25),
        ("insufficient_data", 0, 0, 0, 0, None),
    ]
    # Lift (1/3) / (1/4) = 1.33; precision 1 of 3 red renewals churned; recall 1 of 3 churns was red.
    assert result.lift_red_over_green == 1.33
    assert (result.red_flagged, result.red_churned, result.churned) == (3, 1, 3)
    assert (result.red_precision, result.red_recall) == (0.3333, 0.3333)
    # High: A3 A4 A6 A7 (3 renewed); Medium: A1 A2 (1); Low: A5 A8 (1). Gap in points.
    assert result.calibration.rows() == [
        ("High", 0.9, 4, 3, 0.75, -15.0),
        ("Medium", 0.6, 2, 1, 0.5, -10.0),
        ("Low", 0.25, 2, 1, 0.5, 25.0),
    ]
    # Nine accounts then (A10 came later); risk signals: 2 overdue invoices + 6 SIG_RENEWAL_SOON
    # (A1 A2 A4 A5 A6 A8 renew within 90 days; ignored by the matrix but still risk signals).
    assert result.snapshots.rows(named=True) == [
        {
            "as_of": SNAPSHOT, "accounts": 9, "red": 3, "amber": 1, "green": 5, "unscored": 0, "risk_signals": 8,
            "renewals": 8, "churned": 3, "downsold": 0, "not_yet_observed": 0,
        }
    ]  # fmt: skip
    markdown = render_backtest_md(result)
    assert "| Lift of red over green | 1.33 |" in markdown
    assert "| Precision of red | 33.3% |" in markdown
    assert "| red | 3 | 1 | 2 | 0 | 33.3% |" in markdown
    assert "| High | 90.0% | 4 | 3 | 75.0% | -15.0 |" in markdown
    assert "| Low | 25.0% | 2 | 1 | 50.0% | +25.0 |" in markdown
    assert "| 1 Jan 2026 | 9 | 3 | 1 | 5 | 0 | 8 | 8 | 3 | 0 | 0 |" in markdown


def contract(
    sid: str, account_id: str, start: dt.date, renewal: dt.date, status: str, arr: float, currency: str = "USD"
) -> dict:
    return {**sub(account_id, start, renewal, status), "subscription_id": sid, "arr": arr, "currency": currency}


def test_a_renewal_recorded_as_a_new_contract_is_not_churn_and_retention_is_per_quarter(configs):
    # X-S0 (USD 1,000) ends 2026-02-01 and X-S1 (1,200) starts that day: renewed, +200.
    # Y-S0 (USD 1,000) ends 2026-03-01, Y-S1 (600) starts 9 days later (grace 30): downsold, -400.
    # Z-S0 (EUR 1,000) churns 2026-04-15 with no successor. NPS 8 makes all three green.
    subs = [
        contract("X-S0", "X", D(2025, 2, 1), D(2026, 2, 1), "cancelled", 1000.0),
        contract("X-S1", "X", D(2026, 2, 1), D(2027, 2, 1), "active", 1200.0),
        contract("Y-S0", "Y", D(2025, 3, 1), D(2026, 3, 1), "cancelled", 1000.0),
        contract("Y-S1", "Y", D(2026, 3, 10), D(2027, 3, 10), "active", 600.0),
        contract("Z-S0", "Z", D(2025, 4, 15), D(2026, 4, 15), "churned", 1000.0, "EUR"),
    ]
    view = make_view(
        DATA_AS_OF,
        accounts=[{"account_id": a, "name": a, "segment": "enterprise", "created_on": D(2020, 1, 1)} for a in "XYZ"],
        subs=subs,
        nps=[nps(a, D(2025, 6, 1), 8) for a in "XYZ"],
    )
    assert renewal_outcomes(view, grace_days=30).select("subscription_id", "outcome", "arr", "arr_after").rows() == [
        ("X-S0", "renewed", 1000.0, 1200.0),
        ("Y-S0", "downsold", 1000.0, 600.0),
        ("Z-S0", "churned", 1000.0, 0.0),
    ]
    # With a 5-day grace Y-S1 (9 days late) is new business and Y-S0 churned.
    assert renewal_outcomes(view, grace_days=5)["outcome"].to_list() == ["renewed", "churned", "churned"]
    result = run_backtest(view, *configs, start=SNAPSHOT, end=SNAPSHOT, step_days=30)
    assert result.tiers.filter(pl.col("tier") == "green").rows() == [("green", 3, 1, 2, 1, 0.3333)]
    # 2026-Q1 USD: up 2,000; kept 2,000 - 400 = 1,600 (GRR 80%); after 1,200 + 600 = 1,800 (NRR 90%).
    # 2026-Q2 EUR: up 1,000, all churned: GRR and NRR 0.
    assert result.retention.rows(named=True) == [
        {"period": "2026-Q1", "currency": "USD", "renewals": 2, "arr_up": 2000.0, "churned_arr": 0.0, "downsold_arr": 400.0,
         "expanded_arr": 200.0, "arr_after": 1800.0, "kept_arr": 1600.0, "grr": 0.8, "nrr": 0.9},
        {"period": "2026-Q2", "currency": "EUR", "renewals": 1, "arr_up": 1000.0, "churned_arr": 1000.0, "downsold_arr": 0.0,
         "expanded_arr": 0.0, "arr_after": 0.0, "kept_arr": 0.0, "grr": 0.0, "nrr": 0.0},
    ]  # fmt: skip
    markdown = render_backtest_md(result)
    assert "| 2026-Q1 | 2 | USD 2,000 | USD 0 | USD 400 | USD 200 | USD 1,800 | 80.0% | 90.0% |" in markdown
    assert "| Downsold (renewed at lower ARR) | 1 |" in markdown


@pytest.mark.untraced
def test_the_bundled_fixtures_renewals_are_not_all_churn(default_configs):
    # ACME-S0, GLOBEX-S0 and UMBRELLA-S0 are cancelled the day their successor starts: renewed.
    # STARK-S0 (no later add-on) churned. With a 30-day step and a 120-day horizon each renewal is
    # seen from up to 4 snapshots (13 sightings: ACME-S0 2, GLOBEX-S0 4, STARK-S0 4, UMBRELLA-S0 3),
    # yet counts once, with the tier and bucket of the earliest snapshot that saw it.
    result = run_backtest(
        read_customer_360(FIXTURES), *default_configs, start=D(2025, 10, 1), end=D(2026, 5, 31), step_days=30
    )
    outcomes = (
        result.observations.unique("subscription_id").sort("subscription_id").select("subscription_id", "outcome")
    )
    assert outcomes.rows() == [
        ("ACME-S0", "renewed"),
        ("GLOBEX-S0", "renewed"),
        ("STARK-S0", "churned"),
        ("UMBRELLA-S0", "renewed"),
    ]
    assert (result.observations.height, result.counted.height, result.churned) == (13, 4, 1)
    assert result.counted.select("subscription_id", "as_of").rows() == [
        ("ACME-S0", D(2025, 10, 1)),
        ("GLOBEX-S0", D(2025, 10, 31)),
        ("STARK-S0", D(2025, 12, 30)),
        ("UMBRELLA-S0", D(2026, 3, 30)),
    ]
    assert result.tiers["renewals"].sum() == result.calibration["renewals"].sum() == 4
    assert "| Renewals observed | 4 |" in render_backtest_md(result) and "| Churned | 1 |" in render_backtest_md(result)
    # ACME 180,000 -> 240,000; GLOBEX EUR 300,000 -> 330,000; 2026-Q2 USD: STARK 80,000 lost,
    # UMBRELLA 430,000 -> 450,000: GRR 430 / 510 = 84.31%, NRR 450 / 510 = 88.24%.
    assert result.retention.select("period", "currency", "grr", "nrr").rows() == [
        ("2025-Q4", "USD", 1.0, 1.3333),
        ("2026-Q1", "EUR", 1.0, 1.1),
        ("2026-Q2", "USD", 0.8431, 0.8824),
    ]


def test_chart_draws_observed_against_configured(configs):
    result = run_backtest(scenario_view(), *configs, start=SNAPSHOT, end=SNAPSHOT, step_days=30)
    svg = ElementTree.fromstring(render_backtest_chart_svg(result))
    bars = {
        rect.find("{http://www.w3.org/2000/svg}title").text: rect.get("height")
        for rect in svg.iter("{http://www.w3.org/2000/svg}rect")
        if rect.find("{http://www.w3.org/2000/svg}title") is not None
    }
    # The plot is 240 units tall: 90% → 216, 75% → 180, 25% → 60, 50% → 120.
    assert bars == {
        "High configured: 90.0%": "216.0",
        "High observed: 75.0%": "180.0",
        "Medium configured: 60.0%": "144.0",
        "Medium observed: 50.0%": "120.0",
        "Low configured: 25.0%": "60.0",
        "Low observed: 50.0%": "120.0",
    }


def test_renewals_after_the_data_are_not_yet_observed(configs):
    # 2026-05-01 + 120 days: A9 renews on 2026-08-01, after the data's as_of (2026-06-30).
    result = run_backtest(scenario_view(), *configs, start=D(2026, 5, 1), end=D(2026, 5, 1), step_days=1)
    assert result.observations.is_empty()
    assert result.snapshots["not_yet_observed"].to_list() == [1]
    assert (result.lift_red_over_green, result.red_precision, result.red_recall) == (None, None, None)
    markdown = render_backtest_md(result)
    assert "| Lift of red over green | n/a |" in markdown
    assert "The lift is n/a here: no renewal of a green account was observed." in markdown
    assert "1 forecast renewal falls after 30 Jun 2026" in markdown
    assert "| High | 90.0% | 0 | 0 | n/a | n/a |" in markdown
    assert "High observed" not in render_backtest_chart_svg(result)  # no bar without a rate


@pytest.mark.parametrize(
    ("start", "end", "step", "horizon", "message"),
    [
        (D(2026, 1, 1), D(2026, 2, 1), 0, 120, "step must be at least 1"),
        (D(2026, 1, 1), D(2026, 2, 1), 30, 400, "horizon must be 1 to 365"),
        (D(2026, 2, 1), D(2026, 1, 1), 30, 120, "is after to"),
        (D(2026, 1, 1), D(2026, 7, 1), 30, 120, "after the data's as_of"),
    ],
)
def test_bad_requests_are_refused(configs, start, end, step, horizon, message):
    with pytest.raises(C360Error, match=message) as caught:
        run_backtest(scenario_view(), *configs, start=start, end=end, step_days=step, horizon_days=horizon)
    assert caught.value.code == "BACKTEST_INVALID"


@pytest.fixture(scope="module")
def generated_view(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    generate_dataset(folder, 300, seed=1)
    return read_customer_360(folder)


@pytest.fixture(scope="module")
def default_configs():
    return (
        load_health_config(CONFIGS / "health.yaml"),
        load_signals_config(CONFIGS / "signals.yaml"),
        load_renewals_config(CONFIGS / "renewals.yaml"),
    )


def test_cutting_generated_data_at_its_as_of_changes_nothing(generated_view):
    # The generator's terms are annual, so the reconstruction gives back the recorded rows.
    same = view_as_of(generated_view, generated_view.as_of)
    for name in ENTITIES:
        assert_frame_equal(same.tables[name], generated_view.tables[name])


@pytest.mark.untraced
def test_generated_data_gives_non_trivial_numbers(generated_view, default_configs):
    start, end = D(2025, 6, 1), D(2026, 5, 31)
    result = run_backtest(generated_view, *default_configs, start=start, end=end, step_days=60)
    assert result.as_of_dates == tuple(start + dt.timedelta(days=60 * i) for i in range(7))
    observations = result.observations
    assert observations.height > 100
    assert set(observations["outcome"]) == {"renewed", "churned"}
    # Usage covers only the last 13 weeks, so early snapshots lack adoption and value: those
    # accounts have no tier (insufficient data), are counted in their own row, and still get a bucket.
    assert observations["bucket"].null_count() == 0
    assert set(observations.filter(pl.col("tier").is_null())["status"]) == {"insufficient_data"}
    assert (
        result.tiers.filter(pl.col("tier") == "insufficient_data")["renewals"].item()
        == result.counted["tier"].null_count()
        > 0
    )
    horizon = (observations["renewal_date"] - observations["as_of"]).dt.total_days()
    assert horizon.min() > 0 and horizon.max() <= 120  # type: ignore[operator]  # Polars types a series' min and max as maybe None
    assert 0 < result.churned < result.counted.height < observations.height
    assert result.tiers["renewals"].sum() == result.calibration["renewals"].sum() == result.counted.height
    # Green needs 70% of the weight measured: without usage (adoption 30 + value 15 of 100) no
    # snapshot account earns it, however well the rest scores, so there is no lift to report.
    assert result.red_recall is not None and result.lift_red_over_green is None
    assert result.tiers.filter(pl.col("tier") == "green")["renewals"].item() == 0
    assert result.tiers.filter(pl.col("tier") == "amber")["renewals"].item() > 100
    # Nor the High bucket (green only): a rate is observed for every bucket with renewals.
    assert result.calibration.filter(pl.col("bucket") == "High")["renewals"].item() == 0
    assert result.calibration.filter(pl.col("renewals") > 0)["observed_rate"].null_count() == 0


@pytest.mark.untraced
def test_same_inputs_give_the_same_bytes(generated_view, default_configs, tmp_path):
    hashes = []
    for run in ("first", "second"):
        result = run_backtest(generated_view, *default_configs, start=D(2025, 9, 1), end=D(2026, 3, 1), step_days=90)
        written = write_backtest(result, tmp_path / run)
        assert written == {name: sha256_file(tmp_path / run / name) for name in ("backtest.md", "backtest.svg")}
        hashes.append(written)
    assert hashes[0] == hashes[1]
    assert (tmp_path / "first" / "backtest.md").read_bytes() == (tmp_path / "second" / "backtest.md").read_bytes()
