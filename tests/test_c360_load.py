"""Loading a folder into the Customer 360 view, its integrity checks and the 360.json document.

Expected values below are read off the small inputs in conftest.py by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from conftest import SMALL_INPUTS, write_inputs

from c360_dagster import load_customer_360
from c360_dagster.domain.core.io import write_chunks_atomic
from c360_dagster.domain.ingest import integrity
from c360_dagster.domain.ingest.entities import ENTITIES
from c360_dagster.domain.ingest.integrity import CHECKS, run_integrity_checks
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.view_json import customer_360_document, customer_360_json_chunks


def _native_rows(name: str) -> list[dict]:
    """The small CSV of `name` as JSON rows with real numbers, booleans and nulls."""
    types = {f.name: f.type for f in ENTITIES[name].fields}

    def native(column: str, text: str):
        if text == "":
            return None
        if types[column] == "int":
            return int(text)
        if types[column] == "decimal":
            return float(text)
        if types[column] == "bool":
            return text.lower() in ("true", "1")
        return text

    rows = csv.DictReader(io.StringIO(SMALL_INPUTS[f"{name}.csv"]))
    return [{column: native(column, text) for column, text in row.items()} for row in rows]


def _write_as(folder: Path, formats: dict[str, str]) -> Path:
    """Write every small entity in the format `formats` names (default csv)."""
    files: dict[str, str | bytes] = {}
    for name in ENTITIES:
        fmt = formats.get(name, "csv")
        if fmt == "csv":
            files[f"{name}.csv"] = SMALL_INPUTS[f"{name}.csv"]
        elif fmt == "json":
            files[f"{name}.json"] = json.dumps(_native_rows(name), indent=2)
        else:
            files[f"{name}.jsonl"] = "".join(json.dumps(row) + "\n" for row in _native_rows(name))
    return write_inputs(folder, files)


def test_small_csv_loads_typed_and_sorted_by_key(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    assert view.counts() == {
        "accounts": 2,
        "cases": 2,
        "contacts": 2,
        "crm_opps": 1,
        "invoices": 2,
        "nps": 2,
        "subs": 2,
        "usage": 3,
    }
    for name, spec in ENTITIES.items():
        assert view.tables[name].schema == pl.Schema(spec.polars_schema), name
    # usage.csv and cases.csv are written out of key order on purpose.
    assert view.usage.select("account_id", "window_start").rows() == [
        ("ACME-001", dt.date(2024, 6, 3)),
        ("ACME-001", dt.date(2024, 6, 10)),
        ("BETA-002", dt.date(2024, 6, 3)),
    ]
    assert view.cases["case_id"].to_list() == ["CS-1", "CS-2"]
    assert view.cases["sla_breached"].to_list() == [True, False]  # CSV 1 / 0
    assert view.cases["closed_on"].to_list() == [dt.date(2024, 5, 3), None]
    assert view.subs.select("arr", "auto_renew", "discount_pct").rows() == [
        (120000.5, True, 10.0),
        (3000.0, False, None),
    ]
    assert view.accounts["industry"].to_list() == ["Manufacturing", None]
    assert view.nps["comment"].to_list() == ['Great, says "thanks"', None]
    assert view.warnings == ()


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.untraced
def test_json_and_jsonl_give_the_same_frames_as_csv(small_dir: Path, tmp_path: Path, fmt: str) -> None:
    from_csv = read_customer_360(small_dir)
    other = read_customer_360(_write_as(tmp_path / fmt, dict.fromkeys(ENTITIES, fmt)))
    for name in ENTITIES:
        assert other.tables[name].equals(from_csv.tables[name]), name
    assert other.as_of == from_csv.as_of


def test_mixed_formats_in_one_folder(small_dir: Path, tmp_path: Path) -> None:
    formats = {"accounts": "jsonl", "subs": "json", "cases": "json", "nps": "jsonl", "invoices": "json"}
    mixed = read_customer_360(_write_as(tmp_path / "mixed", formats))
    from_csv = read_customer_360(small_dir)
    assert all(mixed.tables[name].equals(from_csv.tables[name]) for name in ENTITIES)
    assert sorted(mixed.source_hashes) == [
        "accounts.jsonl",
        "cases.json",
        "contacts.csv",
        "crm_opps.csv",
        "invoices.json",
        "nps.jsonl",
        "subs.json",
        "usage.csv",
    ]


@pytest.mark.untraced
def test_as_of_explicit_else_latest_usage_else_latest_date(small_dir: Path, tmp_path: Path) -> None:
    assert read_customer_360(small_dir, as_of=dt.date(2024, 7, 1)).as_of == dt.date(2024, 7, 1)
    assert read_customer_360(small_dir).as_of == dt.date(2024, 6, 16)  # ACME's last window_end
    only_required = write_inputs(
        tmp_path / "required", {"accounts.csv": SMALL_INPUTS["accounts.csv"], "subs.csv": SMALL_INPUTS["subs.csv"]}
    )
    assert read_customer_360(only_required).as_of == dt.date(2025, 3, 1)  # S-2 renewal_date


def test_absent_optional_files_are_empty_tables(tmp_path: Path) -> None:
    folder = write_inputs(
        tmp_path / "req", {"accounts.csv": SMALL_INPUTS["accounts.csv"], "subs.csv": SMALL_INPUTS["subs.csv"]}
    )
    view = read_customer_360(folder)
    for name in ("contacts", "usage", "cases", "nps", "invoices", "crm_opps"):
        assert view.tables[name].is_empty() and view.tables[name].schema == pl.Schema(ENTITIES[name].polars_schema)
    assert sorted(view.source_hashes) == ["accounts.csv", "subs.csv"]


def test_header_only_and_empty_json_files_load_as_no_rows(small_dir: Path) -> None:
    (small_dir / "cases.csv").write_text("case_id,account_id,opened_on,closed_on,severity,sla_breached,category\n")
    (small_dir / "nps.csv").unlink()
    (small_dir / "nps.json").write_text("[]\n")
    (small_dir / "crm_opps.csv").unlink()
    (small_dir / "crm_opps.jsonl").write_text("")
    view = read_customer_360(small_dir)
    assert (view.cases.height, view.nps.height, view.crm_opps.height) == (0, 0, 0)


def test_extra_columns_warn_once_and_unknown_files_are_ignored(small_dir: Path) -> None:
    accounts = SMALL_INPUTS["accounts.csv"].splitlines()
    (small_dir / "accounts.csv").write_text(
        "\n".join([accounts[0] + ",notes,tier"] + [line + ",x,y" for line in accounts[1:]]) + "\n"
    )
    (small_dir / "cases.csv").unlink()
    (small_dir / "cases.json").write_text(json.dumps([{**row, "zz_extra": 1} for row in _native_rows("cases")]))
    (small_dir / "README.md").write_text("not an input")
    (small_dir / "leads.csv").write_text("a,b\n1,2\n")
    view = read_customer_360(small_dir)
    assert view.warnings == (
        "file accounts.csv: column notes is not in the contract and was ignored",
        "file accounts.csv: column tier is not in the contract and was ignored",
        "file cases.json: column zz_extra is not in the contract and was ignored",
    )
    assert view.accounts.columns == list(ENTITIES["accounts"].field_names)
    assert "README.md" not in view.source_hashes and "leads.csv" not in view.source_hashes


def test_optional_columns_may_be_left_out(small_dir: Path) -> None:
    (small_dir / "accounts.csv").write_text(
        "account_id,name,segment,created_on\nACME-001,Acme,smb,2022-01-15\nBETA-002,Beta,smb,2023-03-01\n"
    )
    view = read_customer_360(small_dir)
    assert view.accounts["region"].to_list() == [None, None]


def test_source_hashes_are_the_file_contents(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    expected = {name: "sha256:" + hashlib.sha256((small_dir / name).read_bytes()).hexdigest() for name in SMALL_INPUTS}
    assert view.source_hashes == expected


@pytest.mark.untraced
def test_360_json_is_byte_deterministic(small_dir: Path, tmp_path: Path) -> None:
    view = read_customer_360(small_dir)
    checks = run_integrity_checks(view)
    first = write_chunks_atomic(tmp_path / "a" / "360.json", customer_360_json_chunks(view, checks))
    again = write_chunks_atomic(
        tmp_path / "b" / "360.json", customer_360_json_chunks(read_customer_360(small_dir), checks)
    )
    data = (tmp_path / "a" / "360.json").read_bytes()
    assert first == again == "sha256:" + hashlib.sha256(data).hexdigest()
    assert data == (tmp_path / "b" / "360.json").read_bytes()
    assert json.loads(data) == customer_360_document(view, checks) == load_customer_360(small_dir)
    assert list(tmp_path.glob("*/.*.tmp")) == []


def test_360_json_content(small_dir: Path, tmp_path: Path) -> None:
    view = read_customer_360(small_dir)
    write_chunks_atomic(tmp_path / "360.json", customer_360_json_chunks(view, run_integrity_checks(view)))
    text = (tmp_path / "360.json").read_text(encoding="utf-8")
    document = json.loads(text)
    assert list(document) == ["as_of", "checks", "counts", "records", "source_hashes", "warnings"]
    assert document["as_of"] == "2024-06-16"
    assert document["counts"] == view.counts()
    assert [check["name"] for check in document["checks"]] == [name for name, _, _ in CHECKS]
    assert all(check["passed"] and check["count"] == 0 for check in document["checks"])
    assert set(document["checks"][0]) == {"name", "severity", "passed", "count", "description", "sample"}
    assert sorted(document["records"]) == sorted(ENTITIES)
    records = document["records"]
    assert [row["subscription_id"] for row in records["subs"]] == ["S-1", "S-2"]
    assert [row["case_id"] for row in records["cases"]] == ["CS-1", "CS-2"]
    assert records["invoices"][1]["credit_amount"] == 100.0  # 99.999 rounded to 2 places
    assert records["invoices"][0]["credit_amount"] is None
    assert records["subs"][0]["arr"] == 120000.5
    # One canonical object per line: sorted keys, dates as ISO text, nulls kept.
    assert (
        '      {"account_id":"BETA-002","created_on":"2023-03-01","csm_owner":null,"industry":null,'
        '"name":"Beta LLC","region":"EMEA","segment":"smb"}\n'
    ) in text


def test_load_customer_360_accepts_an_as_of_string(small_dir: Path) -> None:
    assert load_customer_360(small_dir, as_of="2024-07-01")["as_of"] == "2024-07-01"


@pytest.mark.untraced
def test_bundled_fixtures_load_cleanly_and_deterministically(fixtures_dir: Path, tmp_path: Path) -> None:
    view = read_customer_360(fixtures_dir)
    assert "ACME-001" in view.accounts["account_id"].to_list()
    assert view.as_of == view.usage["window_end"].max()
    assert sorted(view.source_hashes) == sorted(p.name for p in fixtures_dir.iterdir() if p.stem in ENTITIES)
    checks = run_integrity_checks(view)
    assert all(check.passed for check in checks if check.severity == "ERROR")
    write_chunks_atomic(tmp_path / "one.json", customer_360_json_chunks(view, checks))
    write_chunks_atomic(
        tmp_path / "two.json",
        customer_360_json_chunks(read_customer_360(fixtures_dir), run_integrity_checks(view)),
    )
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


# --- integrity checks on crafted views, built directly (the loader would reject them) ---


def _checks(view) -> dict:
    return {check.name: check for check in run_integrity_checks(view)}


def _with(view, **tables: pl.DataFrame):
    return dataclasses.replace(view, tables={**view.tables, **tables})


def test_all_checks_pass_on_the_small_inputs(small_dir: Path) -> None:
    checks = run_integrity_checks(read_customer_360(small_dir))
    assert [(c.name, c.severity, c.passed, c.count) for c in checks] == [(n, s, True, 0) for n, s, _ in CHECKS]


def test_a_loaded_view_reports_the_contract_the_loader_enforced_without_evaluating_it_again(
    small_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = read_customer_360(small_dir)
    gamma = view.accounts.head(1).with_columns(account_id=pl.lit("GAMMA-003"))  # no subscription: a WARN
    warned = _with(view, accounts=pl.concat([view.accounts, gamma]))
    evaluated = [run_integrity_checks(view), run_integrity_checks(warned)]
    assert not evaluated[1][[name for name, _, _ in CHECKS].index("has_subscription")].passed
    monkeypatch.setattr(integrity, "_contract_offenders", None)  # the contract rules must not run again
    assert [run_integrity_checks(v, contract_enforced=True) for v in (view, warned)] == evaluated
    # Nor do they read more than WARN_TABLES (all customer_360 decodes of a shard's view).
    assert set(integrity.WARN_TABLES) < set(view.tables)
    only = [dataclasses.replace(v, tables={n: v.tables[n] for n in integrity.WARN_TABLES}) for v in (view, warned)]
    assert [run_integrity_checks(v, contract_enforced=True) for v in only] == evaluated


def test_unique_ids_check_fails_on_a_case_duplicate(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    twin = view.accounts.head(1).with_columns(account_id=pl.lit("acme-001"))
    check = _checks(_with(view, accounts=pl.concat([view.accounts, twin])))["unique_ids"]
    assert (check.passed, check.count, check.severity) == (False, 1, "ERROR")
    assert check.sample == [
        {"entity": "accounts", "key": "account_id=acme-001", "column": "account_id", "value": "acme-001"}
    ]


def test_references_check_fails_on_orphans_and_foreign_subscriptions(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    contacts = view.contacts.with_columns(
        account_id=pl.when(pl.col("contact_id") == "C-2").then(pl.lit("GONE-9")).otherwise("account_id")
    )
    invoices = view.invoices.with_columns(
        subscription_id=pl.when(pl.col("invoice_id") == "I-2").then(pl.lit("S-1")).otherwise("subscription_id")
    )
    check = _checks(_with(view, contacts=contacts, invoices=invoices))["references_resolve"]
    assert (check.passed, check.count) == (False, 2)
    assert check.sample == [
        {"entity": "contacts", "key": "contact_id=C-2", "column": "account_id", "value": "GONE-9"},
        {"entity": "invoices", "key": "invoice_id=I-2", "column": "subscription_id", "value": "S-1"},
    ]


def test_dates_ordered_check_fails_on_renewal_not_after_start(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    subs = view.subs.with_columns(
        renewal_date=pl.when(pl.col("subscription_id") == "S-2").then(pl.col("start_date")).otherwise("renewal_date")
    )
    check = _checks(_with(view, subs=subs))["dates_ordered"]
    assert (check.passed, check.count) == (False, 1)
    assert check.sample == [
        {"entity": "subs", "key": "subscription_id=S-2", "column": "renewal_date", "value": "2024-03-01"}
    ]


def test_usage_windows_check_fails_on_overlap(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    extra = pl.DataFrame(
        [("ACME-001", dt.date(2024, 6, 5), dt.date(2024, 6, 11), 1, 1, 1, 0)],
        schema=ENTITIES["usage"].polars_schema,
        orient="row",
    )
    usage = pl.concat([view.usage, extra]).sort("account_id", "window_start")
    check = _checks(_with(view, usage=usage))["usage_windows_disjoint"]
    # 06-05 starts before 06-03..06-09 ends, and 06-10 before 06-05..06-11 ends.
    assert (check.passed, check.count) == (False, 2)
    assert [row["value"] for row in check.sample] == ["2024-06-05", "2024-06-10"]
    assert check.sample[0]["key"] == "account_id=ACME-001, window_start=2024-06-05"


def test_values_in_range_check_fails_on_bad_values(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    accounts = view.accounts.with_columns(
        name=pl.when(pl.col("account_id") == "ACME-001").then(None).otherwise("name"),
        segment=pl.when(pl.col("account_id") == "BETA-002").then(pl.lit("platinum")).otherwise("segment"),
    )
    subs = view.subs.with_columns(seats=pl.when(pl.col("subscription_id") == "S-1").then(-1).otherwise("seats"))
    nps = view.nps.with_columns(score=pl.when(pl.col("response_id") == "N-1").then(11).otherwise("score"))
    check = _checks(_with(view, accounts=accounts, subs=subs, nps=nps))["values_in_range"]
    assert (check.passed, check.count) == (False, 4)
    assert check.sample == [
        {"entity": "accounts", "key": "account_id=ACME-001", "column": "name", "value": None},
        {"entity": "accounts", "key": "account_id=BETA-002", "column": "segment", "value": "platinum"},
        {"entity": "subs", "key": "subscription_id=S-1", "column": "seats", "value": "-1"},
        {"entity": "nps", "key": "response_id=N-1", "column": "score", "value": "11"},
    ]


def test_warn_checks(small_dir: Path) -> None:
    view = read_customer_360(small_dir)
    gamma = view.accounts.head(1).with_columns(account_id=pl.lit("GAMMA-003"))
    subs = view.subs.with_columns(
        status=pl.when(pl.col("subscription_id") == "S-2").then(pl.lit("churned")).otherwise("status"),
        renewal_date=pl.when(pl.col("subscription_id") == "S-1").then(dt.date(2024, 7, 1)).otherwise("renewal_date"),
    )
    invoices = view.invoices.with_columns(
        currency=pl.when(pl.col("invoice_id") == "I-1").then(pl.lit("GBP")).otherwise("currency")
    )
    crafted = dataclasses.replace(
        _with(view, accounts=pl.concat([view.accounts, gamma]), subs=subs, invoices=invoices),
        as_of=dt.date(2024, 7, 10),
    )
    checks = _checks(crafted)
    found = {name: (c.passed, c.count, c.sample) for name, c in checks.items() if c.severity == "WARN"}
    # BETA (its only subscription churned) and GAMMA (no subscription) are not expected to use the
    # product, so their missing recent usage is no finding (test_recent_usage_expected_only_from_live_accounts).
    assert found == {
        "has_subscription": (False, 1, [{"account_id": "GAMMA-003"}]),
        "has_active_subscription": (False, 1, [{"account_id": "BETA-002"}]),
        "has_recent_usage": (True, 0, []),
        "active_renewals_not_past": (
            False,
            1,
            [{"subscription_id": "S-1", "account_id": "ACME-001", "renewal_date": "2024-07-01"}],
        ),
        "invoice_currency_matches": (
            False,
            1,
            [{"invoice_id": "I-1", "subscription_id": "S-1", "currency": "GBP", "subscription_currency": "USD"}],
        ),
    }
    assert all(c.severity == "WARN" for name, c in checks.items() if name in found)


def test_check_descriptions_read_in_words() -> None:
    # The UI shows each check's description as its sentence: a user reads words there, not the
    # code's names such as "as_of" (the check's own name stays the identifier).
    assert all(not re.search(r"\b[a-z]+_[a-z_]+\b", text) for _, _, text in CHECKS)


def test_recent_usage_expected_only_from_live_accounts(small_dir: Path) -> None:
    """Usage is expected from accounts with an active subscription whose first one started at least
    RECENT_USAGE_DAYS before as_of: not from churned, not-started or brand-new accounts."""
    view = read_customer_360(small_dir)
    new = view.accounts.filter(pl.col("account_id") == "BETA-002").with_columns(account_id=pl.lit("NEW-003"))
    churned = view.accounts.filter(pl.col("account_id") == "BETA-002").with_columns(account_id=pl.lit("OLD-004"))
    beta_sub = view.subs.filter(pl.col("subscription_id") == "S-2")
    subs = pl.concat(
        [
            view.subs,
            # 27 days before as_of 2024-07-10: one day short of the 28-day window.
            beta_sub.with_columns(
                subscription_id=pl.lit("S-3"), account_id=pl.lit("NEW-003"), start_date=dt.date(2024, 6, 13)
            ),
            beta_sub.with_columns(
                subscription_id=pl.lit("S-4"), account_id=pl.lit("OLD-004"), status=pl.lit("churned")
            ),
        ]
    )
    crafted = dataclasses.replace(
        _with(view, accounts=pl.concat([view.accounts, new, churned]), subs=subs), as_of=dt.date(2024, 7, 10)
    )
    check = _checks(crafted)["has_recent_usage"]
    # as_of 2024-07-10: recent usage must end after 2024-06-12; BETA (live since 2024-03-01) last used 06-09.
    assert (check.passed, check.count, check.sample) == (
        False,
        1,
        [{"account_id": "BETA-002", "last_window_end": "2024-06-09"}],
    )
    assert "left out" in check.description and "churned" in check.description
    # The sentence the UI shows reads in words, not the code's names ("as_of").
    assert "the 28 days up to the as-of date (the day the data is read for)" in check.description
    # A day older, the new account is expected to have used the product too.
    subs = subs.with_columns(
        start_date=pl.when(pl.col("subscription_id") == "S-3").then(dt.date(2024, 6, 12)).otherwise("start_date")
    )
    check = _checks(dataclasses.replace(crafted, tables={**crafted.tables, "subs": subs}))["has_recent_usage"]
    assert [row["account_id"] for row in check.sample] == ["BETA-002", "NEW-003"]
