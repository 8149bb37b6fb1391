"""Each defect of docs/inputs.md is rejected with one message naming file, row, column and expectation.

Every test breaks one spot of the small valid inputs (conftest.py); the expected messages,
row numbers (CSV: 1-based after the header; JSON: the array index) and JSON positions are
worked out by hand from those inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import replace_in

from c360_dagster import load_customer_360
from c360_dagster.domain.core.errors import C360Error, InputError
from c360_dagster.domain.ingest import loader
from c360_dagster.domain.ingest.loader import read_customer_360


def error_of(folder: Path, as_of: dt.date | None = None) -> InputError:
    with pytest.raises(InputError) as caught:
        read_customer_360(folder, as_of=as_of)
    assert "\n" not in str(caught.value)  # one paragraph for the CLI
    return caught.value


# --- files and formats ---


def test_missing_required_file(small_dir: Path) -> None:
    (small_dir / "subs.csv").unlink()
    assert (
        str(error_of(small_dir))
        == f"file subs.csv: required file subs.csv (or subs.json / subs.jsonl) not found in {small_dir}"
    )


def test_missing_input_folder(tmp_path: Path) -> None:
    assert str(error_of(tmp_path / "nowhere")) == f"input folder {tmp_path / 'nowhere'} not found"


def test_two_formats_of_one_entity(small_dir: Path) -> None:
    (small_dir / "accounts.json").write_text("[]")
    assert str(error_of(small_dir)) == (
        "file accounts.csv: accounts.csv and accounts.json both hold accounts: keep exactly one format per entity"
    )


def test_missing_required_column(small_dir: Path) -> None:
    (small_dir / "accounts.csv").write_text(
        "account_id,name,industry,region,csm_owner,created_on\nACME-001,Acme,,,,2022-01-15\n"
    )
    error = error_of(small_dir)
    assert (error.file, error.row, error.column) == ("accounts.csv", None, "segment")
    assert str(error) == (
        "file accounts.csv, column segment: missing required column"
        " (the file has: account_id, name, industry, region, csm_owner, created_on)"
    )


def test_duplicate_header_column(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "account_id,name,segment", "account_id,name,name")
    assert str(error_of(small_dir)) == "file accounts.csv, column name: the header names this column more than once"


def test_empty_csv_file(small_dir: Path) -> None:
    (small_dir / "accounts.csv").write_text("")
    assert str(error_of(small_dir)) == "file accounts.csv: the file is empty: expected a header row naming the columns"


def test_broken_csv_quoting(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "BETA-002,Beta LLC,", 'BETA-002,"Beta LLC,')
    assert str(error_of(small_dir)) == (
        "file accounts.csv, row 2: broken CSV quoting: a quoted value is not closed or has text after"
        ' its closing quote (write a quote inside a quoted value as "")'
    )


def test_csv_row_with_too_many_fields(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "Dana,2022-01-15", "Dana,2022-01-15,surplus")
    assert (
        str(error_of(small_dir)) == "file accounts.csv, row 1: broken CSV: expected 7 fields as in the header, found 8"
    )


def test_the_first_file_in_entity_order_is_reported_while_the_next_one_is_read_ahead(small_dir: Path) -> None:
    # The loader reads contacts.csv on a thread while accounts.csv is validated; both are broken.
    replace_in(small_dir / "accounts.csv", "Acme Corp", "   ")
    replace_in(small_dir / "contacts.csv", "Ann Lee,", '"Ann Lee,')
    assert str(error_of(small_dir)) == 'file accounts.csv, row 1, column name: expected a non-empty text, got "   "'
    replace_in(small_dir / "accounts.csv", "   ", "Acme Corp")
    assert error_of(small_dir).file == "contacts.csv"


def test_a_consumer_that_stops_early_stops_the_read_ahead_thread() -> None:
    # A loader that stops at a bad file leaves the next file's read-ahead behind: its thread,
    # waiting to hand over more than the reader will take, must end, not read the file to its end.
    made: list[int] = []

    def items() -> Iterator[int]:
        for item in range(100):
            made.append(item)
            yield item

    before = set(threading.enumerate())
    reader = loader._read_ahead(items(), depth=2)
    assert next(reader) == 0
    (thread,) = set(threading.enumerate()) - before
    assert thread.name == "c360-read-ahead"
    reader.close()  # what a consumer that stops early does, by error or by break
    assert not thread.is_alive()
    assert len(made) <= 5  # the one taken, two waiting, one being handed over, one seen after the stop


def test_non_utf8_bytes_in_csv(small_dir: Path) -> None:
    path = small_dir / "accounts.csv"
    path.write_bytes(path.read_bytes().replace(b"Beta LLC", b"Beta \xff LLC"))
    error = error_of(small_dir)
    assert (error.file, error.row) == ("accounts.csv", 2)
    assert str(error) == "file accounts.csv, row 2: not valid UTF-8 (the file must be UTF-8 encoded)"


def test_non_utf8_bytes_in_json(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    (small_dir / "cases.json").write_bytes(b'[\n  {"case_id": "CS-\xe9"}\n]')
    assert str(error_of(small_dir)) == (
        "file cases.json: not valid UTF-8 at line 2, byte 20 (the file must be UTF-8 encoded)"
    )


def test_malformed_json_names_the_position(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    (small_dir / "cases.json").write_text('[\n  {"case_id": "CS-1",}\n]')
    # From Python 3.13 json names the trailing comma itself (column 21); before, the brace after it.
    where_and_what = (
        "column 21 (character 22): Illegal trailing comma before end of object"
        if sys.version_info >= (3, 13)
        else "column 22 (character 23): Expecting property name enclosed in double quotes"
    )
    assert str(error_of(small_dir)) == f"file cases.json: not valid JSON at line 2, {where_and_what}"


def test_json_that_is_not_an_array(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    (small_dir / "cases.json").write_text('{"case_id": "CS-1"}')
    assert str(error_of(small_dir)) == "file cases.json: expected a JSON array of objects ([{...}, ...])"


def test_json_array_item_that_is_not_an_object(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    (small_dir / "cases.json").write_text('[{"case_id": "CS-1"}, 5]')
    assert str(error_of(small_dir)) == "file cases.json, row 1: expected a JSON object, got 5"


def test_json_nested_value(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    rows = [
        {"case_id": "CS-1", "account_id": "ACME-001", "opened_on": "2024-05-01", "severity": 2, "sla_breached": True},
        {
            "case_id": "CS-2",
            "account_id": "ACME-001",
            "opened_on": "2024-05-01",
            "severity": 2,
            "sla_breached": True,
            "category": {"name": "billing"},
        },
    ]
    (small_dir / "cases.json").write_text(json.dumps(rows))
    assert str(error_of(small_dir)) == (
        "file cases.json, row 1, column category: expected a plain value (text, number, true/false or null), got a JSON object"
    )


def test_jsonl_bad_line(small_dir: Path) -> None:
    (small_dir / "nps.csv").unlink()
    (small_dir / "nps.jsonl").write_text(
        '{"response_id": "N-1", "account_id": "ACME-001", "responded_on": "2024-05-20", "score": 9}\n'
        '{"response_id": "N-2", \n'
    )
    error = error_of(small_dir)
    assert (error.file, error.row) == ("nps.jsonl", 2)
    assert str(error) == (
        "file nps.jsonl, row 2: not valid JSON at line 2, column 24: Expecting property name enclosed in double quotes"
    )


@pytest.mark.parametrize(("layout", "row"), [("{0}\n{1}", 2), ("  \n{0}{1}", 1)])
def test_jsonl_blank_line_before_an_object(small_dir: Path, layout: str, row: int) -> None:
    (small_dir / "nps.csv").unlink()
    line = '{"response_id": "N-1", "account_id": "ACME-001", "responded_on": "2024-05-20", "score": 9}\n'
    (small_dir / "nps.jsonl").write_text(layout.format(line, line.replace("N-1", "N-2")))
    assert str(error_of(small_dir)) == f"file nps.jsonl, row {row}: blank line in JSON Lines: write one object per line"


# --- values ---


def test_empty_non_optional_value(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "Acme Corp", "")
    error = error_of(small_dir)
    assert (error.file, error.row, error.column) == ("accounts.csv", 1, "name")
    assert (
        str(error)
        == "file accounts.csv, row 1, column name: expected a value (this field is not optional), got nothing"
    )


def test_json_null_in_non_optional_field(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    row = {"case_id": "CS-1", "account_id": "ACME-001", "opened_on": None, "severity": 2, "sla_breached": False}
    (small_dir / "cases.json").write_text(json.dumps([row]))
    assert str(error_of(small_dir)) == (
        "file cases.json, row 0, column opened_on: expected a value (this field is not optional), got nothing"
    )


def test_blank_name(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "Acme Corp", "   ")
    assert str(error_of(small_dir)) == 'file accounts.csv, row 1, column name: expected a non-empty text, got "   "'


def test_impossible_date(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "EUR,2024-03-01", "EUR,2024-02-30")
    assert str(error_of(small_dir)) == (
        "file subs.csv, row 2, column start_date: expected a date YYYY-MM-DD (a real calendar date), got 2024-02-30"
    )


def test_date_in_another_shape(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "2022-01-15", "2022-1-15")
    assert str(error_of(small_dir)) == (
        "file accounts.csv, row 1, column created_on: expected a date YYYY-MM-DD (a real calendar date), got 2022-1-15"
    )


def test_wrong_type_integer(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "starter,5,", "starter,five,")
    assert str(error_of(small_dir)) == "file subs.csv, row 2, column seats: expected an integer, got five"


def test_wrong_type_decimal(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "120000.50", '"120000,50"')
    assert str(error_of(small_dir)) == 'file subs.csv, row 1, column arr: expected a decimal number, got "120000,50"'


def test_bad_bool(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "active,FALSE", "active,yes")
    assert (
        str(error_of(small_dir)) == "file subs.csv, row 2, column auto_renew: expected true or false (or 1/0), got yes"
    )


def test_json_bool_does_not_take_1(small_dir: Path) -> None:
    (small_dir / "cases.csv").unlink()
    rows = [
        {"case_id": "CS-1", "account_id": "ACME-001", "opened_on": "2024-05-01", "severity": 2, "sla_breached": False},
        {"case_id": "CS-2", "account_id": "ACME-001", "opened_on": "2024-05-01", "severity": 2, "sla_breached": 1},
    ]
    (small_dir / "cases.json").write_text(json.dumps(rows))
    assert str(error_of(small_dir)) == "file cases.json, row 1, column sla_breached: expected true or false, got 1"


def test_out_of_range_score(small_dir: Path) -> None:
    replace_in(small_dir / "nps.csv", "2024-05-20,9,", "2024-05-20,11,")
    assert str(error_of(small_dir)) == "file nps.csv, row 1, column score: expected a value from 0 to 10, got 11"


def test_negative_arr(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "120000.50", "-5")
    assert str(error_of(small_dir)) == "file subs.csv, row 1, column arr: expected a value of at least 0, got -5"


def test_discount_over_100(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "true,10", "true,150")
    assert (
        str(error_of(small_dir)) == "file subs.csv, row 1, column discount_pct: expected a value from 0 to 100, got 150"
    )


def test_unknown_enum(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "smb,,EMEA", "platinum,,EMEA")
    assert str(error_of(small_dir)) == (
        "file accounts.csv, row 2, column segment: expected one of enterprise, mid_market, smb, got platinum"
    )


def test_bad_currency(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "USD,2024-01-01", "usd,2024-01-01")
    assert str(error_of(small_dir)) == (
        "file subs.csv, row 1, column currency: expected an ISO 4217 currency code matching ^[A-Z]{3}$, got usd"
    )


# --- ids and references ---


def test_duplicate_id(small_dir: Path) -> None:
    replace_in(small_dir / "contacts.csv", "C-2,BETA-002", "C-1,BETA-002")
    assert (
        str(error_of(small_dir)) == "file contacts.csv, row 2, column contact_id: expected a unique contact_id, got C-1"
    )


def test_duplicate_account_id_differing_only_in_case(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "BETA-002,Beta LLC", "acme-001,Beta LLC")
    assert str(error_of(small_dir)) == (
        "file accounts.csv, row 2, column account_id: expected a unique account_id (ignoring case), got acme-001"
    )


def test_unsafe_account_id(small_dir: Path) -> None:
    replace_in(small_dir / "accounts.csv", "BETA-002,Beta LLC", "../x,Beta LLC")
    assert str(error_of(small_dir)) == (
        "file accounts.csv, row 2, column account_id: expected an id matching"
        " ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ (it becomes a file name), got ../x"
    )


def test_orphan_account_reference(small_dir: Path) -> None:
    replace_in(small_dir / "contacts.csv", "C-2,BETA-002", "C-2,NOPE-9")
    assert str(error_of(small_dir)) == (
        "file contacts.csv, row 2, column account_id: expected an account_id that exists in accounts, got NOPE-9"
    )


def test_invoice_subscription_of_another_account(small_dir: Path) -> None:
    replace_in(small_dir / "invoices.csv", "BETA-002,S-2", "BETA-002,S-1")
    assert str(error_of(small_dir)) == (
        "file invoices.csv, row 2, column subscription_id: expected a subscription_id in subs"
        " of this row's account_id (BETA-002), got S-1"
    )


def test_invoice_subscription_that_does_not_exist(small_dir: Path) -> None:
    replace_in(small_dir / "invoices.csv", "BETA-002,S-2", "BETA-002,S-7")
    assert str(error_of(small_dir)) == (
        "file invoices.csv, row 2, column subscription_id: expected a subscription_id that exists in subs, got S-7"
    )


def test_nps_contact_missing(small_dir: Path) -> None:
    replace_in(small_dir / "nps.csv", "ACME-001,C-1,", "ACME-001,C-9,")
    assert str(error_of(small_dir)) == (
        "file nps.csv, row 1, column contact_id: expected a contact_id that exists in contacts, got C-9"
    )


# --- dates in order ---


def test_end_before_start(small_dir: Path) -> None:
    replace_in(small_dir / "contacts.csv", "2023-03-05,2024-01-31", "2023-03-05,2023-03-04")
    assert str(error_of(small_dir)) == (
        "file contacts.csv, row 2, column ended_on: expected a date on or after started_on (2023-03-05), got 2023-03-04"
    )


def test_renewal_not_after_start(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "2024-03-01,2025-03-01", "2024-03-01,2024-03-01")
    assert str(error_of(small_dir)) == (
        "file subs.csv, row 2, column renewal_date: expected a date after start_date (2024-03-01), got 2024-03-01"
    )


def test_usage_window_ending_before_it_starts(small_dir: Path) -> None:
    replace_in(small_dir / "usage.csv", "BETA-002,2024-06-03,2024-06-09", "BETA-002,2024-06-03,2024-06-02")
    assert str(error_of(small_dir)) == (
        "file usage.csv, row 1, column window_end: expected a date on or after window_start (2024-06-03), got 2024-06-02"
    )


def test_overlapping_usage_windows_in_an_unsorted_file(small_dir: Path) -> None:
    # Row 2 (06-08..06-16) starts before row 3 (06-03..06-09), the same account's earlier window, ends.
    replace_in(small_dir / "usage.csv", "ACME-001,2024-06-10", "ACME-001,2024-06-08")
    assert str(error_of(small_dir)) == (
        "file usage.csv, row 2, column window_start: expected a window_start after the end of the previous"
        " window of the same account_id (ACME-001), got 2024-06-08"
    )


def test_overlapping_usage_windows_in_a_sorted_file(small_dir: Path) -> None:
    # Windows include both ends, so a window starting on the day the previous one ends overlaps it.
    (small_dir / "usage.csv").write_text(
        "account_id,window_start,window_end,active_users,events,features_used,release_features_used\n"
        "ACME-001,2024-06-03,2024-06-09,1,1,1,0\n"
        "ACME-001,2024-06-09,2024-06-15,1,1,1,0\n"
        "BETA-002,2024-06-03,2024-06-09,1,1,1,0\n"
    )
    error = error_of(small_dir)
    assert (error.file, error.row, error.column) == ("usage.csv", 2, "window_start")


# --- which error comes first ---


def test_first_error_is_the_earliest_row_then_column(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "starter,5,", "starter,five,")  # row 2, seats
    replace_in(small_dir / "subs.csv", "120000.50,USD", "-5,usd")  # row 1, arr and currency
    assert str(error_of(small_dir)) == "file subs.csv, row 1, column arr: expected a value of at least 0, got -5"


def test_first_error_follows_the_entity_order(small_dir: Path) -> None:
    replace_in(small_dir / "subs.csv", "starter,5,", "starter,five,")
    replace_in(small_dir / "accounts.csv", "smb,,EMEA", "platinum,,EMEA")
    assert error_of(small_dir).file == "accounts.csv"


def test_bad_as_of_string_is_a_user_error(small_dir: Path) -> None:
    with pytest.raises(C360Error, match=r"^as_of: expected a date YYYY-MM-DD, got 2024-13-01$"):
        load_customer_360(small_dir, as_of="2024-13-01")
