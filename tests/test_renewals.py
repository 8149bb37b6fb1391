"""Renewal forecast: matrix cells, window edges, reason phrases, currencies, summary rollups.

Expected values are computed by hand from configs/customer/renewals.yaml (probabilities
High 0.9 / Medium 0.6 / Low 0.25; SIG_PAYMENT_OVERDUE weighs 2; at risk = the Low bucket).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from c360_dagster.domain.core.errors import C360Error, ConfigError
from c360_dagster.domain.core.io import canonical_json, write_json_stream_text
from c360_dagster.domain.core.text import format_amount
from c360_dagster.domain.governance import lake_tables
from c360_dagster.domain.governance.contracts import load_contract, validate_frame
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.view import Customer360, empty_table
from c360_dagster.domain.renewals import forecast as renewals
from c360_dagster.domain.renewals.forecast import (
    FRAME_COLUMNS,
    PUBLISHED_COLUMNS,
    forecast_renewals,
    load_renewals_config,
    render_renewal_summary_md,
    renewal_json_items,
    renewal_records,
    renewal_summary,
)
from c360_dagster.domain.renewals.playbooks import select_playbooks
from c360_dagster.domain.scoring import health, signals
from c360_dagster.domain.scoring.health import COMPONENTS

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "customer"
CONTRACTS = CONFIGS.parents[1] / "contracts" / "schemas"
AS_OF = dt.date(2024, 1, 1)
SIGNAL_SCHEMA = {"account_id": pl.Utf8, "code": pl.Utf8, "kind": pl.Utf8, "evidence": pl.Utf8}


@pytest.fixture(scope="module")
def config():
    return load_renewals_config(CONFIGS / "renewals.yaml")


def account(account_id, name=None, segment="enterprise", csm_owner="Ann"):
    return {
        "account_id": account_id,
        "name": name or f"Account {account_id}",
        "segment": segment,
        "industry": None,
        "region": None,
        "csm_owner": csm_owner,
        "created_on": dt.date(2020, 1, 1),
    }


def sub(subscription_id, account_id, days=30, arr=1000.0, currency="USD", status="active"):
    return {
        "subscription_id": subscription_id,
        "account_id": account_id,
        "product": "Core",
        "plan": "growth",
        "seats": 10,
        "arr": arr,
        "currency": currency,
        "start_date": dt.date(2023, 1, 1),
        "renewal_date": AS_OF + dt.timedelta(days=days),
        "status": status,
        "auto_renew": True,
        "discount_pct": None,
    }


def make_view(accounts, subs):
    tables = {name: empty_table(name) for name in ENTITIES}
    tables["accounts"] = pl.DataFrame(accounts, schema=ENTITIES["accounts"].polars_schema)
    tables["subs"] = pl.DataFrame(subs, schema=ENTITIES["subs"].polars_schema)
    return Customer360(AS_OF, tables)


def make_health(tiers: dict[str, str], tier_reasons: dict[str, str] | None = None, unmeasured=()):
    """Health rows with a tier; the components named in `unmeasured` had no data (a null score)."""
    reasons = tier_reasons or {}
    return pl.DataFrame(
        {
            "account_id": list(tiers),
            "tier": list(tiers.values()),
            "tier_reason": [reasons.get(a) for a in tiers],
            **{f"{c}_score": [None if c in unmeasured else 50.0] * len(tiers) for c in COMPONENTS},
        },
        schema={
            "account_id": pl.Utf8,
            "tier": pl.Utf8,
            "tier_reason": pl.Utf8,
            **{f"{c}_score": pl.Float64 for c in COMPONENTS},
        },
    )


def signal(account_id, code, evidence=None, kind="risk"):
    return {"account_id": account_id, "code": code, "kind": kind, "evidence": canonical_json(evidence or {})}


def make_signals(rows):
    return pl.DataFrame(rows, schema=SIGNAL_SCHEMA).sort("account_id", "code")


BAND_SIGNALS = {
    # SIG_RENEWAL_SOON is ignored and the expansion signal is not a risk: still band "none".
    "none": ["SIG_RENEWAL_SOON", "SIG_EXPANSION_TRAIL"],
    "one": ["SIG_SUPPORT_SPIKE", "SIG_RENEWAL_SOON"],
    "several": ["SIG_SUPPORT_SPIKE", "SIG_USAGE_SLIDE_4W"],
    "severe": ["SIG_PAYMENT_OVERDUE"],  # one signal, weight 2: band "several"
}
# (tier, signals) → (bucket, counted risk signals), by hand from the matrix in renewals.yaml.
MATRIX_CASES = [
    ("green", "none", "High", 0),
    ("green", "one", "High", 1),
    ("green", "several", "Medium", 2),
    ("green", "severe", "Medium", 1),
    ("amber", "none", "Medium", 0),
    ("amber", "one", "Medium", 1),
    ("amber", "several", "Low", 2),
    ("amber", "severe", "Low", 1),
    ("red", "none", "Medium", 0),
    ("red", "one", "Low", 1),
    ("red", "several", "Low", 2),
    ("red", "severe", "Low", 1),
]
PROBABILITY = {"High": 0.9, "Medium": 0.6, "Low": 0.25}


def test_a_scored_account_without_usage_data_is_suggested_to_connect_it(config):
    # Amber, no signal, adoption and value unmeasured (SOYLENT-006 without its overdue invoice):
    # the usage play comes before more outreach; with usage measured, outreach is the top play.
    view = make_view([account("A1")], [sub("S1", "A1", days=100)])
    unmeasured = forecast_renewals(
        view, make_health({"A1": "amber"}, unmeasured=("adoption", "value")), make_signals([]), config
    )
    measured = forecast_renewals(view, make_health({"A1": "amber"}), make_signals([]), config)
    assert (unmeasured["suggested_playbook"].to_list(), measured["suggested_playbook"].to_list()) == (
        ["connect_usage"],
        ["outreach_cadence"],
    )


@pytest.mark.parametrize(("tier", "band", "bucket", "count"), MATRIX_CASES)
def test_every_matrix_cell(config, tier, band, bucket, count):
    view = make_view([account("A1")], [sub("S1", "A1", arr=1000.0)])
    signals = make_signals(
        [
            signal("A1", code, kind="expansion" if code == "SIG_EXPANSION_TRAIL" else "risk")
            for code in BAND_SIGNALS[band]
        ]
    )
    row = forecast_renewals(view, make_health({"A1": tier}), signals, config).to_dicts()[0]
    assert (row["tier"], row["bucket"], row["risk_signal_count"]) == (tier, bucket, count)
    assert row["probability"] == PROBABILITY[bucket]
    assert row["expected_arr"] == round(1000.0 * PROBABILITY[bucket], 2)
    # 30 days out: a Low renewal is due for the renewal play (playbooks.yaml `renewal_due`).
    due = bucket == "Low"
    assert row["suggested_playbook"] == select_playbooks(tier, BAND_SIGNALS[band], config.library, renewal_due=due)[0]


def test_account_without_health_row_gets_the_unscored_bucket(config):
    view = make_view([account("A1")], [sub("S1", "A1")])
    row = forecast_renewals(view, make_health({}), make_signals([]), config).to_dicts()[0]
    assert (row["tier"], row["bucket"], row["probability"]) == (None, "Medium", 0.6)
    assert row["suggested_playbook"] == "get_measured"  # no score: measure first


def test_window_edges_include_day_0_and_day_n_only(config):
    subs = [
        sub("S-before", "A1", days=-1),
        sub("S-day0", "A1", days=0),
        sub("S-day120", "A1", days=120),
        sub("S-day121", "A1", days=121),
        sub("S-cancelled", "A1", days=10, status="cancelled"),
        sub("S-churned", "A1", days=10, status="churned"),
    ]
    frame = forecast_renewals(make_view([account("A1")], subs), make_health({"A1": "green"}), make_signals([]), config)
    assert frame["subscription_id"].to_list() == ["S-day0", "S-day120"]
    assert frame["days_to_renewal"].to_list() == [0, 120]
    narrow = forecast_renewals(
        make_view([account("A1")], subs), make_health({"A1": "green"}), make_signals([]), config, window_days=0
    )
    assert narrow["subscription_id"].to_list() == ["S-day0"]


def test_negative_window_is_a_user_error(config):
    with pytest.raises(C360Error, match="window_days"):
        forecast_renewals(make_view([account("A1")], []), make_health({}), make_signals([]), config, window_days=-1)


def test_frame_has_exactly_the_architecture_columns_sorted_by_date_then_id(config):
    subs = [sub("S2", "A1", days=5), sub("S1", "A1", days=5), sub("S0", "A1", days=40)]
    frame = forecast_renewals(make_view([account("A1")], subs), make_health({"A1": "green"}), make_signals([]), config)
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame["subscription_id"].to_list() == ["S1", "S2", "S0"]
    assert frame.schema["days_to_renewal"] == pl.Int64 and frame.schema["risk_signal_count"] == pl.Int64
    assert frame.schema["renewal_date"] == pl.Date
    assert frame.row(0, named=True)["account_name"] == "Account A1"


def reasons_for(config, rows):
    view = make_view([account("A1")], [sub("S1", "A1")])
    frame = forecast_renewals(view, make_health({"A1": "amber"}), make_signals(rows), config)
    return frame["risk_reasons"][0]


USAGE_SLIDE = {  # evidence keys as domain/scoring/signals.py writes them
    "drop_pct": 41.666,
    "prior_avg_active_users": 120.0,
    "recent_avg_active_users": 70.0,
    "recent_from": "2023-12-05",
    "recent_to": "2024-01-01",
    "prior_from": "2023-11-07",
    "prior_to": "2023-12-04",
}
OVERDUE = {
    "invoice_id": "INV-9",
    "due_on": "2023-11-17",
    "days_overdue": 45,
    "amount": 1200.0,
    "currency": "EUR",
    "overdue_invoices": 2,
    "overdue_amount": 1500.5,
}


def test_reason_phrases_use_the_evidence_numbers(config):
    text = reasons_for(
        config,
        [
            signal("A1", "SIG_USAGE_SLIDE_4W", USAGE_SLIDE),
            signal(
                "A1",
                "SIG_FEATURE_ADOPTION_LOW",
                {
                    "avg_features_used": 6.0,
                    "feature_catalog_size": 40,
                    "breadth_pct": 15.0,
                    "recent_from": "2023-12-05",
                },
            ),
            signal("A1", "SIG_PAYMENT_OVERDUE", OVERDUE),
            signal(
                "A1",
                "SIG_STAKEHOLDER_CHANGE",
                {"changes": [{"role": "champion"}, {"role": "admin"}], "since": "2023-10-04"},
            ),
            signal("A1", "SIG_RENEWAL_SOON", {"days_to_renewal": 30}),
            signal("A1", "SIG_EXPANSION_TRAIL", {"utilisation_pct": 98.0}, kind="expansion"),
        ],
    )
    expected = [
        # 1200.0 and 120.0 lose their ".0"; 41.666 rounds to one decimal, as the decks write it; ISO
        # dates read as words; a list gives its count.
        # The ignored SIG_RENEWAL_SOON and the expansion signal give no risk reason.
        # Order: heaviest weight first (SIG_PAYMENT_OVERDUE weighs 2), then by code.
        # The amount goes through format_amount with the evidence's currency (`amounts` in the config).
        {
            "code": "SIG_PAYMENT_OVERDUE",
            "text": "Invoice INV-9 (EUR 1,200) is 45 days past its due date of 17 Nov 2023; overdue invoices in all: 2",
        },
        {
            "code": "SIG_FEATURE_ADOPTION_LOW",
            "text": "Uses 6 of 40 product features a week on average (15%) since 5 Dec 2023",
        },
        {"code": "SIG_STAKEHOLDER_CHANGE", "text": "Key-contact changes since 4 Oct 2023: 2"},
        {
            "code": "SIG_USAGE_SLIDE_4W",
            "text": "Weekly active users fell 41.7% (from 120 to 70 on average) between 5 Dec 2023 and 1 Jan 2024, "
            "against the weeks before",
        },
    ]
    assert json.loads(text) == expected
    assert text == canonical_json(expected)  # byte-identical to the project's canonical JSON


def test_reason_falls_back_to_the_signal_name_and_numbers_when_a_key_is_missing(config):
    text = reasons_for(
        config,
        [
            signal("A1", "SIG_USAGE_SLIDE_4W", {"users_before": 120, "users_now": 70.50}),  # no drop_pct
            signal("A1", "SIG_CUSTOM_RISK", {"score": -0.004, "tags": ["a"]}),  # no reasons entry, no name
        ],
    )
    assert json.loads(text) == [
        {"code": "SIG_CUSTOM_RISK", "text": "Custom Risk: score 0, tags count 1"},
        {"code": "SIG_USAGE_SLIDE_4W", "text": "Usage falling: users before 120, users now 70.5"},
    ]


def test_null_template_value_falls_back_for_that_row_only(config):
    view = make_view([account("A1"), account("A2")], [sub("S1", "A1"), sub("S2", "A2")])
    base = {"avg_features_used": 3.0, "feature_catalog_size": 20, "breadth_pct": 15.0, "recent_from": "2023-12-05"}
    signals = make_signals(
        [
            signal("A1", "SIG_FEATURE_ADOPTION_LOW", base),
            signal("A2", "SIG_FEATURE_ADOPTION_LOW", {**base, "breadth_pct": None}),
        ]
    )
    frame = forecast_renewals(view, make_health({"A1": "amber", "A2": "amber"}), signals, config)
    texts = [json.loads(r)[0]["text"] for r in frame["risk_reasons"]]
    assert texts == [
        "Uses 3 of 20 product features a week on average (15%) since 5 Dec 2023",
        "Few features in use: avg features used 3, feature catalog size 20, recent from 5 Dec 2023",
    ]


def multi_currency_frame(config):
    accounts = [
        account("A1", segment="enterprise", csm_owner="Ann"),
        account("A2", segment="smb", csm_owner=None),
        account("A3", name="Evil | Corp\n<script>", segment="smb", csm_owner="Bob"),
    ]
    subs = [
        sub("S1", "A1", days=10, arr=1000.0, currency="USD"),  # green, High
        sub("S2", "A2", days=20, arr=2000.0, currency="EUR"),  # red + overdue: Low
        sub("S3", "A2", days=30, arr=500.0, currency="XYZ"),  # red + overdue: Low
        sub("S4", "A3", days=40, arr=3000.0, currency="USD"),  # amber, no signal: Medium
    ]
    signals = make_signals([signal("A2", "SIG_PAYMENT_OVERDUE", {**OVERDUE, "amount": 10.0, "days_overdue": 40})])
    health = make_health({"A1": "green", "A2": "red", "A3": "amber"})
    return forecast_renewals(make_view(accounts, subs), health, signals, config)


def bucket_rows(high=(0, 0.0, 0.0), medium=(0, 0.0, 0.0), low=(0, 0.0, 0.0)):
    return [
        {"bucket": bucket, "subscriptions": n, "arr": arr, "expected_arr": expected}
        for bucket, (n, arr, expected) in zip(("High", "Medium", "Low"), (high, medium, low), strict=True)
    ]


def test_summary_is_per_currency_and_at_risk_is_the_configured_bucket(config):
    summary = renewal_summary(multi_currency_frame(config), config)
    # S1 USD 1000 High (exp 900), S2 EUR 2000 Low (exp 500), S3 XYZ 500 Low (exp 125),
    # S4 USD 3000 Medium (exp 1800). At risk = Low only: Medium S4 is not at risk.
    assert summary["at_risk_buckets"] == ["Low"]
    assert summary["probabilities"] == {"High": 0.9, "Medium": 0.6, "Low": 0.25}
    assert summary["subscriptions"] == 4 and summary["accounts"] == 3
    assert summary["by_currency"] == [
        {
            "currency": "EUR",
            "subscriptions": 1,
            "accounts": 1,
            "arr": 2000.0,
            "expected_arr": 500.0,
            "arr_at_risk": 2000.0,
            "expected_loss": 1500.0,
            "buckets": bucket_rows(low=(1, 2000.0, 500.0)),
        },
        {
            "currency": "USD",
            "subscriptions": 2,
            "accounts": 2,
            "arr": 4000.0,
            "expected_arr": 2700.0,
            "arr_at_risk": 0.0,
            "expected_loss": 1300.0,
            "buckets": bucket_rows(high=(1, 1000.0, 900.0), medium=(1, 3000.0, 1800.0)),
        },
        {
            "currency": "XYZ",
            "subscriptions": 1,
            "accounts": 1,
            "arr": 500.0,
            "expected_arr": 125.0,
            "arr_at_risk": 500.0,
            "expected_loss": 375.0,
            "buckets": bucket_rows(low=(1, 500.0, 125.0)),
        },
    ]
    assert "totals" not in summary  # nothing is ever added across currencies


def test_at_risk_buckets_come_from_the_config(config):
    wider = dataclasses.replace(config, at_risk_buckets=("Medium", "Low"))
    usd = renewal_summary(multi_currency_frame(config), wider)["by_currency"][1]
    assert (usd["currency"], usd["arr_at_risk"]) == ("USD", 3000.0)


def test_summary_rollups_by_segment_and_owner_keep_currencies_apart(config):
    summary = renewal_summary(multi_currency_frame(config), config)
    assert summary["by_segment"] == [
        {
            "segment": "enterprise",
            "currency": "USD",
            "subscriptions": 1,
            "arr": 1000.0,
            "expected_arr": 900.0,
            "arr_at_risk": 0.0,
        },
        {
            "segment": "smb",
            "currency": "EUR",
            "subscriptions": 1,
            "arr": 2000.0,
            "expected_arr": 500.0,
            "arr_at_risk": 2000.0,
        },
        {
            "segment": "smb",
            "currency": "USD",
            "subscriptions": 1,
            "arr": 3000.0,
            "expected_arr": 1800.0,
            "arr_at_risk": 0.0,
        },
        {
            "segment": "smb",
            "currency": "XYZ",
            "subscriptions": 1,
            "arr": 500.0,
            "expected_arr": 125.0,
            "arr_at_risk": 500.0,
        },
    ]
    assert summary["by_csm_owner"] == [
        {
            "csm_owner": "(unassigned)",
            "currency": "EUR",
            "subscriptions": 1,
            "arr": 2000.0,
            "expected_arr": 500.0,
            "arr_at_risk": 2000.0,
        },
        {
            "csm_owner": "(unassigned)",
            "currency": "XYZ",
            "subscriptions": 1,
            "arr": 500.0,
            "expected_arr": 125.0,
            "arr_at_risk": 500.0,
        },
        {
            "csm_owner": "Ann",
            "currency": "USD",
            "subscriptions": 1,
            "arr": 1000.0,
            "expected_arr": 900.0,
            "arr_at_risk": 0.0,
        },
        {
            "csm_owner": "Bob",
            "currency": "USD",
            "subscriptions": 1,
            "arr": 3000.0,
            "expected_arr": 1800.0,
            "arr_at_risk": 0.0,
        },
    ]


def test_top_risks_are_at_risk_rows_largest_first_within_each_currency_and_limited(config):
    frame = multi_currency_frame(config)
    top = renewal_summary(frame, config)["top_risks"]
    assert [(r["currency"], r["subscription_id"], r["arr"]) for r in top] == [
        ("EUR", "S2", 2000.0),
        ("XYZ", "S3", 500.0),
    ]
    assert top[0]["main_reason"] == "Payment overdue"  # the signal's name, for the table cell
    assert top[0]["reasons"] == [
        "Invoice INV-9 (EUR 10) is 40 days past its due date of 17 Nov 2023; overdue invoices in all: 2"
    ]
    assert (top[0]["suggested_playbook"], top[0]["suggested_playbook_title"]) == ("collections", "Collections")
    every = dataclasses.replace(config, at_risk_buckets=("High", "Medium", "Low"))
    usd = [r["subscription_id"] for r in renewal_summary(frame, every)["top_risks"] if r["currency"] == "USD"]
    assert usd == ["S4", "S1"]  # USD 3000 before USD 1000
    one = renewal_summary(frame, dataclasses.replace(every, top_risks=1))["top_risks"]
    assert [r["subscription_id"] for r in one] == ["S2", "S4", "S3"]  # one per currency


def test_summary_markdown_tables_hold_phrases_and_formatted_amounts(config):
    frame = multi_currency_frame(config)
    wider = dataclasses.replace(config, at_risk_buckets=("Medium", "Low"))
    first = render_renewal_summary_md(renewal_summary(frame, wider), AS_OF, 120)
    again = render_renewal_summary_md(renewal_summary(multi_currency_frame(config), wider), AS_OF, 120)
    assert first == again
    assert "<script>" not in first
    assert "| USD | 2 | USD 4,000 | USD 2,700 | USD 1,000 | USD 3,000 | USD 0 | USD 3,000 |" in first
    assert (
        "**At risk** is the ARR in the Medium and Low buckets: the renewals configuration says which buckets count"
        in first
    )
    assert "`" not in first  # no config key in a CS leader's prose
    assert "| Enterprise | USD |" in first and "| SMB | EUR |" in first and "| smb |" not in first  # segments in words
    assert (
        "| 2 | Evil \\| Corp &lt;script&gt; | S4 | 10 Feb 2024 | amber | Medium | USD 3,000 | no risk signal | Outreach cadence |"
        in first
    )
    assert "| 1 | Account A2 | S2 | 21 Jan 2024 | red | Low | EUR 2,000 | Payment overdue | Collections |" in first
    # The sentence goes below the table, in prose.
    assert (
        "1. Account A2 (S2):\n   - Invoice INV-9 (EUR 10) is 40 days past its due date of 17 Nov 2023; overdue invoices in all: 2.\n"
        in first
    )
    assert first.startswith("# Renewal forecast as of 1 Jan 2024\n") and "between 1 Jan 2024 and 30 Apr 2024" in first
    assert not re.search(r"\d{4}-\d{2}-\d{2}", first.split("## Forecast")[1])  # dates in words; the hash aside
    table_rows = [line for line in first.splitlines() if line.startswith("| ")]
    assert table_rows and not any(".00 |" in line for line in table_rows)  # one amount format: whole units


def _one_row_per_line(summary, rows: list) -> str:
    """The layout spelled out: the envelope pretty, each row one line of compact canonical JSON."""
    pretty_summary = json.dumps(summary, sort_keys=True, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    listed = ",\n    ".join(canonical_json(row) for row in rows)
    return '{\n  "renewals": [\n    ' + listed + '\n  ],\n  "summary": ' + pretty_summary + "\n}\n"


def _renewals_file(tmp_path: Path, frame: pl.DataFrame, summary) -> tuple[bytes, str]:
    path = tmp_path / "renewals.json"
    digest = write_json_stream_text(
        path, {"summary": summary}, "renewals", renewal_json_items(frame, chunk_rows=3), array=True
    )
    return path.read_bytes(), digest


def test_renewals_json_holds_rows_with_decoded_reasons_in_json_dumps_bytes(config, tmp_path, monkeypatch):
    frame = multi_currency_frame(config)
    summary = renewal_summary(frame, config)
    document = {"summary": summary, "renewals": list(renewal_records(frame))}
    monkeypatch.setattr(renewals, "renewal_records", None)  # the columnar path must not need the fallback
    data, digest = _renewals_file(tmp_path, frame, summary)
    assert data.decode() == _one_row_per_line(summary, document["renewals"])
    assert json.loads(data) == document
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    rows = json.loads(data)["renewals"]
    assert [r["subscription_id"] for r in rows] == ["S1", "S2", "S3", "S4"]
    assert rows[1]["renewal_date"] == "2024-01-21"
    assert rows[1]["risk_reasons"][0]["code"] == "SIG_PAYMENT_OVERDUE"
    # The spec's field: bucket and probability together, not as two loose fields.
    assert rows[1]["renewal_prob"] == {"bucket": "Low", "probability": 0.25}
    assert "bucket" not in rows[1] and "probability" not in rows[1]
    assert rows[3]["account_name"] == "Evil | Corp\n<script>"
    # By hand: a row on a line of its own, one level into the array (4 spaces), its keys sorted, compact.
    assert '\n    {"account_id":"A1","account_name":"Account A1","arr":1000.0,' in data.decode()


def test_lake_rows_carry_renewal_prob_and_meet_the_contract(config):
    rows = lake_tables.renewal_rows(multi_currency_frame(config))
    assert rows["renewal_prob"].to_list()[:2] == [
        '{"bucket":"High","probability":0.9}',
        '{"bucket":"Low","probability":0.25}',
    ]
    schema = load_contract("renewal_forecasts", CONTRACTS)
    # The lake adds the snapshot keys, as_of and the shard, to every row it writes.
    keyed = rows.with_columns(as_of=pl.lit(AS_OF), shard=pl.lit(0, dtype=pl.Int64))
    assert validate_frame(keyed, schema, "renewal_forecasts") == []


def test_renewals_json_falls_back_to_json_dumps_where_a_reason_would_re_encode_differently(config, tmp_path):
    # Keys out of order: a decoded struct would print them sorted, so the text must come from json.dumps.
    frame = multi_currency_frame(config).with_columns(risk_reasons=pl.lit('[{"text":"x \\u00e9","code":"SIG_A"}]'))
    data, _ = _renewals_file(tmp_path, frame, {})
    assert data.decode() == _one_row_per_line({}, list(renewal_records(frame)))
    assert '"risk_reasons":[{"code":"SIG_A","text":"x é"}]' in data.decode()


def test_renewals_json_of_no_renewals_is_an_empty_array(config, tmp_path):
    frame = multi_currency_frame(config).clear()
    data, _ = _renewals_file(tmp_path, frame, {"subscriptions": 0})
    assert data == b'{\n  "renewals": [],\n  "summary": {\n    "subscriptions": 0\n  }\n}\n'


def write_config(tmp_path: Path, edit) -> Path:
    shutil.copy(CONFIGS / "playbooks.yaml", tmp_path / "playbooks.yaml")
    raw = yaml.safe_load((CONFIGS / "renewals.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "renewals.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda r: r["matrix"]["amber"].pop("several"), "matrix.amber.several"),
        (lambda r: r["matrix"]["red"].update(lots="Low"), "matrix.red.lots"),
        (lambda r: r["buckets"].update(Medium=0.95), "buckets.Medium"),
        (lambda r: r["risk_bands"][0].update(min_points=1), "risk_bands.0.min_points"),
        (lambda r: r["risk_bands"][2].update(min_points=1), "risk_bands.2.min_points"),
        (lambda r: r.update(colour="red"), "colour"),
        (lambda r: r.update(at_risk_buckets=[]), "at_risk_buckets"),
        (lambda r: r.update(at_risk_buckets=["Doubtful"]), "at_risk_buckets"),
        (lambda r: r.pop("at_risk_buckets"), "at_risk_buckets"),
        (
            lambda r: r["reasons"]["SIG_PAYMENT_OVERDUE"].update(amounts={"Amount": "currency"}),
            "reasons.SIG_PAYMENT_OVERDUE.amounts",
        ),
        (
            lambda r: r["risk_signals"]["weights"].update(SIG_PAYMENT_OVERDUE=0),
            "risk_signals.weights.SIG_PAYMENT_OVERDUE",
        ),
        (
            lambda r: r["reasons"]["SIG_SUPPORT_SPIKE"].update(template="{n:.1f} cases"),
            "reasons.SIG_SUPPORT_SPIKE.template",
        ),
        (lambda r: r.update(playbook_library="missing.yaml"), "missing.yaml"),
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_renewals_config(write_config(tmp_path, edit))


def test_config_hash_covers_the_playbook_library(tmp_path, config):
    path = write_config(tmp_path, lambda raw: None)
    assert load_renewals_config(path).config_hash == config.config_hash
    library = tmp_path / "playbooks.yaml"
    library.write_text(library.read_text(encoding="utf-8").replace("target: 80", "target: 85"), encoding="utf-8")
    assert load_renewals_config(path).config_hash != config.config_hash


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (150000.0, "USD 150,000"),
        (1234567.891, "USD 1,234,568"),
        (0.5, "USD 1"),
        (2.5, "USD 3"),
        (-0.4, "USD 0"),
        (0, "USD 0"),
        (None, "n/a"),
    ],
)
def test_format_amount_is_whole_units_grouped_and_rounded_half_up(value, text):
    assert format_amount(value, "USD") == text


def test_on_the_fixtures_at_risk_is_the_low_bucket_not_all_arr_up_for_renewal(config):
    view = read_customer_360(CONFIGS.parents[1] / "fixtures" / "customer")
    health_config = health.load_health_config(CONFIGS / "health.yaml")
    scored = health.score_health(view, health_config)
    fired = signals.detect_signals(view, signals.load_signals_config(CONFIGS / "signals.yaml"), health_config.lifecycle)
    frame = forecast_renewals(view, scored, fired, config)
    # A run opens only the view's VIEW_TABLES: the forecast reads nothing else.
    only = Customer360(as_of=view.as_of, tables={name: view.tables[name] for name in renewals.VIEW_TABLES})
    assert set(renewals.VIEW_TABLES) < set(view.tables)
    assert forecast_renewals(only, scored, fired, config).equals(frame)
    summary = renewal_summary(frame, config)
    usd = next(row for row in summary["by_currency"] if row["currency"] == "USD")
    # subs.csv, active and renewing by 2027-01-25: STARK-S1 600,000, ACME-S1 240,000,
    # INITECH-S1 96,000, SOYLENT-S1 72,000 (USD); WAYNE-S1 EUR 120,000; PIPE-S1 GBP 15,000.
    assert [(row["currency"], row["arr"]) for row in summary["by_currency"]] == [
        ("EUR", 120000.0),
        ("GBP", 15000.0),
        ("USD", 1008000.0),
    ]
    low = frame.filter((pl.col("bucket") == "Low") & (pl.col("currency") == "USD"))["arr"].sum()
    # SOYLENT-S1 is Low too: its account is amber (green's score on too little measured data)
    # with an overdue invoice (2 risk points, several). Every USD renewal is at risk ...
    assert usd["arr_at_risk"] == low == 1008000.0 == usd["arr"]
    # ... but not WAYNE-S1 (amber, one support spike: Medium): EUR at risk is 0 of 120,000.
    eur = next(row for row in summary["by_currency"] if row["currency"] == "EUR")
    assert (eur["arr_at_risk"], eur["arr"]) == (0.0, 120000.0)
    assert usd["expected_arr"] == round(sum(frame.filter(currency="USD")["expected_arr"]), 2)


def test_the_summary_says_why_an_account_held_at_amber_is_not_green(config):
    # SOYLENT-006 scores green's 84 with adoption and value (15 + 30 of its smb scorecard's 100)
    # unmeasured: held at amber. A reader of the top risks sees why, not a bare "amber".
    view = read_customer_360(CONFIGS.parents[1] / "fixtures" / "customer")
    health_config = health.load_health_config(CONFIGS / "health.yaml")
    scored = health.score_health(view, health_config)
    fired = signals.detect_signals(view, signals.load_signals_config(CONFIGS / "signals.yaml"), health_config.lifecycle)
    summary = renewal_summary(forecast_renewals(view, scored, fired, config), config)
    reasons = {row["account_id"]: row["tier_reason"] for row in summary["top_risks"]}
    held = (
        "amber, not green: adoption and value (45% of the scorecard's weight) are not measured; "
        "green needs at least 70% measured"
    )
    # ACME-001 is amber on its score (68): nothing held it back, so no reason.
    assert reasons == {"STARK-008": None, "ACME-001": None, "INITECH-003": None, "SOYLENT-006": held}
    text = render_renewal_summary_md(summary, view.as_of, 120)
    soylent = text.split("4. Soylent Foods (SOYLENT-S1):\n")[1]
    assert soylent.splitlines()[1] == f"   - Health tier {held}."
    assert "Health tier" not in text.split("4. Soylent Foods")[0]
    # The renewals JSON and the lake publish rows without it: health's own table holds it.
    assert "tier_reason" not in PUBLISHED_COLUMNS
