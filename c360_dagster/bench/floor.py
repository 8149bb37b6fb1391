"""The benchmark floors: the health score's per-account measures in one DuckDB SQL pass.

The compute floor reads the same input files the loader reads (no validation, no Dagster, no
JSON, no Parquet) and computes what `health.health_measures` computes, so `pipeline ÷ floor` says how
much the pipeline's validation, persistence, evidence and orchestration cost over bare compute.

The output floor is the same pass that also writes what the chain writes, with DuckDB's own
JSON and Parquet writers and into a DuckDB lake: the 360 rows (every input row), a health record
and a signal record per account (the measures the scorecard and the signal rules compare), and
the subscriptions renewing in the window. `chain ÷ output floor` is the ratio that counts: the
chain cannot write its documents faster than a database engine writes the same records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb
import polars as pl

from c360_dagster.domain.core.errors import InputError
from c360_dagster.domain.ingest.entities import ENTITIES

SQL_TYPES = {
    "str": "VARCHAR",
    "enum": "VARCHAR",
    "date": "DATE",
    "int": "BIGINT",
    "decimal": "DOUBLE",
    "bool": "BOOLEAN",
}
FLOOR_ENTITIES = ("accounts", "subs", "usage", "cases", "nps", "invoices")

# Each CTE mirrors one measure group of health.py; "last N days" is (as_of - N, as_of].
MEASURES_SQL = """
WITH
entitlements AS (
    SELECT account_id, count(*) AS active_subscriptions, sum(seats)::BIGINT AS seats
    FROM subs WHERE status = 'active' GROUP BY account_id
),
contract_money AS (
    SELECT account_id, currency, sum(arr) AS arr,
           CASE WHEN sum(arr) > 0 THEN sum(arr * coalesce(discount_pct, 0)) / sum(arr) ELSE 0 END AS discount_pct
    FROM subs WHERE status = 'active' GROUP BY account_id, currency
),
billed_money AS (
    SELECT account_id, currency,
           coalesce(sum(amount) FILTER ((paid_on IS NULL OR paid_on > $as_of) AND due_on < $as_of), 0) AS overdue_amount,
           coalesce(sum(coalesce(credit_amount, 0)) FILTER (issued_on > $as_of - $credits_days), 0) AS credits
    FROM invoices WHERE issued_on <= $as_of GROUP BY account_id, currency
),
money_measures AS (
    -- Amounts against ARR in their own currency; the worst currency's ratio (health._money_measures).
    SELECT account_id,
           max(CASE WHEN arr > 0 THEN 100 * overdue_amount / arr WHEN overdue_amount > 0 THEN 100 ELSE 0 END) AS overdue_pct_of_arr,
           max(CASE WHEN arr > 0 THEN 100 * credits / arr WHEN credits > 0 THEN 100 ELSE 0 END) AS credits_pct_of_arr,
           max(discount_pct) AS discount_pct
    FROM (
        SELECT account_id, currency, coalesce(c.arr, 0) AS arr, coalesce(c.discount_pct, 0) AS discount_pct,
               coalesce(b.overdue_amount, 0) AS overdue_amount, coalesce(b.credits, 0) AS credits
        FROM contract_money c FULL JOIN billed_money b USING (account_id, currency)
    )
    GROUP BY account_id
),
usage_measures AS (
    SELECT account_id, count(*) AS usage_windows,
           count(*) FILTER (recent) AS recent_windows,
           CAST(sum(active_users) FILTER (recent) AS BIGINT) AS recent_active_users,
           CAST(sum(features_used) FILTER (recent) AS BIGINT) AS recent_features,
           CAST(sum(release_features_used) FILTER (recent) AS BIGINT) AS recent_release_features
    FROM (SELECT *, window_end > $as_of - $usage_days AS recent FROM usage WHERE window_end <= $as_of)
    GROUP BY account_id
),
support_measures AS (
    SELECT account_id, count(*) AS cases_total,
           count(*) FILTER (in_window) AS cases_in_window,
           count(*) FILTER (in_window AND severity = 1) AS severity1_cases,
           count(*) FILTER (in_window AND severity = 2) AS severity2_cases,
           count(*) FILTER (in_window AND severity = 3) AS severity3_cases,
           count(*) FILTER (in_window AND severity = 4) AS severity4_cases,
           count(*) FILTER (in_window AND sla_breached) AS sla_breaches,
           count(*) FILTER ((closed_on IS NULL OR closed_on > $as_of) AND severity = 1) AS open_sev1_cases
    FROM (SELECT *, opened_on > $as_of - $support_days AS in_window FROM cases WHERE opened_on <= $as_of)
    GROUP BY account_id
),
billing_measures AS (
    SELECT account_id, count(*) AS invoices,
           count(*) FILTER (overdue) AS overdue_invoices,
           max($as_of - due_on) FILTER (overdue) AS max_days_overdue,
           sum(amount) FILTER (overdue) AS overdue_amount
    FROM (
        SELECT *, (paid_on IS NULL OR paid_on > $as_of) AND due_on < $as_of AS overdue
        FROM invoices WHERE issued_on <= $as_of
    )
    GROUP BY account_id
),
responses AS (SELECT * FROM nps WHERE responded_on <= $as_of),
latest AS (
    SELECT account_id, count(*) AS nps_responses,
           arg_max(score, (responded_on, response_id)) AS latest_nps,
           max(responded_on) AS latest_on,
           arg_max(response_id, (responded_on, response_id)) AS latest_id
    FROM responses GROUP BY account_id
),
earlier AS (
    SELECT r.account_id, count(*) AS earlier_responses, avg(r.score) AS earlier_mean_nps
    FROM responses r JOIN latest l USING (account_id)
    WHERE r.response_id <> l.latest_id AND r.responded_on > $as_of - $nps_trend_days
    GROUP BY r.account_id
)
SELECT a.account_id, a.segment,
       coalesce(e.active_subscriptions, 0) AS active_subscriptions, coalesce(e.seats, 0) AS seats,
       coalesce(mm.overdue_pct_of_arr, 0) AS overdue_pct_of_arr, coalesce(mm.credits_pct_of_arr, 0) AS credits_pct_of_arr,
       coalesce(mm.discount_pct, 0) AS discount_pct,
       coalesce(u.usage_windows, 0) AS usage_windows, coalesce(u.recent_windows, 0) AS recent_windows,
       coalesce(u.recent_active_users, 0) AS recent_active_users, coalesce(u.recent_features, 0) AS recent_features,
       coalesce(u.recent_release_features, 0) AS recent_release_features,
       coalesce(s.cases_total, 0) AS cases_total, coalesce(s.cases_in_window, 0) AS cases_in_window,
       coalesce(s.severity1_cases, 0) AS severity1_cases, coalesce(s.severity2_cases, 0) AS severity2_cases,
       coalesce(s.severity3_cases, 0) AS severity3_cases, coalesce(s.severity4_cases, 0) AS severity4_cases,
       coalesce(s.sla_breaches, 0) AS sla_breaches, coalesce(s.open_sev1_cases, 0) AS open_sev1_cases,
       coalesce(b.invoices, 0) AS invoices, coalesce(b.overdue_invoices, 0) AS overdue_invoices,
       coalesce(b.max_days_overdue, 0) AS max_days_overdue, coalesce(b.overdue_amount, 0) AS overdue_amount,
       coalesce(l.nps_responses, 0) AS nps_responses, l.latest_nps, l.latest_on,
       coalesce(n.earlier_responses, 0) AS earlier_responses, n.earlier_mean_nps
FROM accounts a
LEFT JOIN entitlements e USING (account_id)
LEFT JOIN usage_measures u USING (account_id)
LEFT JOIN support_measures s USING (account_id)
LEFT JOIN billing_measures b USING (account_id)
LEFT JOIN money_measures mm USING (account_id)
LEFT JOIN latest l USING (account_id)
LEFT JOIN earlier n USING (account_id)
ORDER BY a.account_id
"""


# Per account, what the signal rules compare: usage now vs before, cases now vs before, overdue
# invoices, contacts who started or left, open expansion opportunities, the next renewal.
SIGNAL_INPUTS_SQL = """
SELECT a.account_id,
       u.recent_avg_users, u.prior_avg_users, u.recent_avg_features,
       coalesce(c.cases_recent, 0) AS cases_recent, coalesce(c.cases_prior, 0) AS cases_prior,
       m.overdue_invoices, m.max_days_overdue, m.overdue_amount,
       coalesce(k.contacts_started, 0) AS contacts_started, coalesce(k.contacts_ended, 0) AS contacts_ended,
       coalesce(o.open_expansion_opps, 0) AS open_expansion_opps, o.expansion_amount,
       r.next_renewal_on, r.renewing_arr
FROM accounts a
JOIN measures m USING (account_id)
LEFT JOIN (
    SELECT account_id,
           avg(active_users) FILTER (window_end > $as_of - $usage_days) AS recent_avg_users,
           avg(active_users) FILTER (window_end <= $as_of - $usage_days) AS prior_avg_users,
           avg(features_used) FILTER (window_end > $as_of - $usage_days) AS recent_avg_features
    FROM usage WHERE window_end <= $as_of AND window_end > $as_of - 4 * $usage_days GROUP BY account_id
) u USING (account_id)
LEFT JOIN (
    SELECT account_id,
           count(*) FILTER (opened_on > $as_of - $usage_days) AS cases_recent,
           count(*) FILTER (opened_on <= $as_of - $usage_days) AS cases_prior
    FROM cases WHERE opened_on <= $as_of AND opened_on > $as_of - $support_days GROUP BY account_id
) c USING (account_id)
LEFT JOIN (
    SELECT account_id,
           count(*) FILTER (started_on > $as_of - $support_days) AS contacts_started,
           count(*) FILTER (ended_on > $as_of - $support_days AND ended_on <= $as_of) AS contacts_ended
    FROM contacts GROUP BY account_id
) k USING (account_id)
LEFT JOIN (
    SELECT account_id, count(*) AS open_expansion_opps, sum(amount) AS expansion_amount
    FROM crm_opps WHERE type = 'expansion' AND stage = 'open' GROUP BY account_id
) o USING (account_id)
LEFT JOIN (
    SELECT account_id, min(renewal_date) AS next_renewal_on, arg_min(arr, (renewal_date, subscription_id)) AS renewing_arr
    FROM subs WHERE status = 'active' AND renewal_date > $as_of GROUP BY account_id
) r USING (account_id)
ORDER BY a.account_id
"""

# The subscriptions renewing in the window with their account and health measures.
RENEWALS_SQL = """
SELECT s.subscription_id, s.account_id, a.name AS account_name, a.segment, a.csm_owner, s.product, s.plan,
       s.renewal_date, s.renewal_date - $as_of AS days_to_renewal, s.arr, s.currency, s.auto_renew,
       m.recent_windows, m.cases_in_window, m.overdue_invoices, m.latest_nps
FROM subs s JOIN accounts a USING (account_id) JOIN measures m USING (account_id)
WHERE s.status = 'active' AND s.renewal_date > $as_of AND s.renewal_date <= $as_of + $window_days
ORDER BY s.renewal_date, s.subscription_id
"""

# What the output floor writes: name -> (query, the order of its rows); and its lake tables.
OUTPUT_RECORDS = {
    "health": ("SELECT * FROM measures", "account_id"),
    "signals": ("SELECT * FROM signal_inputs", "account_id"),
    "renewals": ("SELECT * FROM renewals", "renewal_date, subscription_id"),
}
LAKE_TABLES = {
    "crm_opps": "crm_opps",
    "account_health": "measures",
    "customer_signals": "signal_inputs",
    "renewal_forecasts": "renewals",
}


def floor_measures(input_dir: Path | str, as_of: dt.date, windows: Mapping[str, int]) -> pl.DataFrame:
    """One row per account with health's measures (same names), sorted by account_id."""
    with _inputs(Path(input_dir), FLOOR_ENTITIES) as con:
        return con.sql(MEASURES_SQL, params=_params(as_of, windows)).pl()


def write_output_floor(
    input_dir: Path | str, as_of: dt.date, windows: Mapping[str, int], window_days: int, out_dir: Path
) -> dict[str, int]:
    """The floor's pass, writing its records as JSON (one per line) and Parquet under `out_dir`
    and as tables of `out_dir/lake.duckdb`; return the rows written per record set."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "360").mkdir(exist_ok=True)
    params = {**_params(as_of, windows), "window_days": window_days}
    rows: dict[str, int] = {}
    with _inputs(Path(input_dir), tuple(ENTITIES)) as con:
        for table, sql in (
            ("measures", MEASURES_SQL),
            ("signal_inputs", SIGNAL_INPUTS_SQL),
            ("renewals", RENEWALS_SQL),
        ):
            # DuckDB takes exactly the parameters a statement names.
            con.execute(
                f"CREATE TEMP TABLE {table} AS {sql}", {key: value for key, value in params.items() if f"${key}" in sql}
            )
        written = {f"360/{name}": (f"SELECT * FROM {name}", ", ".join(ENTITIES[name].key)) for name in ENTITIES}
        for name, (query, order) in {**written, **OUTPUT_RECORDS}.items():
            for fmt in ("json", "parquet"):
                path = str(out_dir / f"{name}.{fmt}").replace("'", "''")
                (rows[name],) = con.execute(f"COPY ({query} ORDER BY {order}) TO '{path}' (FORMAT {fmt})").fetchall()[0]
        lake = str(out_dir / "lake.duckdb").replace("'", "''")
        con.execute(f"ATTACH '{lake}' AS lake")
        for table, source in LAKE_TABLES.items():
            con.execute(f"CREATE TABLE lake.{table} AS SELECT DATE '{as_of.isoformat()}' AS as_of, * FROM {source}")
        con.execute("DETACH lake")
    return rows


def _params(as_of: dt.date, windows: Mapping[str, int]) -> dict:
    return {
        "as_of": as_of,
        **{key: int(windows[key]) for key in ("usage_days", "support_days", "credits_days", "nps_trend_days")},
    }


@contextlib.contextmanager
def _inputs(folder: Path, names: tuple[str, ...]) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with a typed view over each input file."""
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        for name in names:
            con.execute(f"CREATE VIEW {name} AS {_source_sql(folder, name)}")
        yield con


def _source_sql(folder: Path, name: str) -> str:
    """A typed SELECT over the entity's file (whichever format), or no rows when it is absent."""
    fields = ENTITIES[name].fields
    columns = "{" + ", ".join(f"'{f.name}': '{SQL_TYPES[f.type]}'" for f in fields) + "}"
    found = [folder / f"{name}.{ext}" for ext in ("csv", "json", "jsonl") if (folder / f"{name}.{ext}").is_file()]
    if not found:
        if ENTITIES[name].required:
            raise InputError(f"required file {name}.csv (or .json / .jsonl) not found in {folder}", file=f"{name}.csv")
        typed = ", ".join(f"NULL::{SQL_TYPES[f.type]} AS {f.name}" for f in fields)
        return f"SELECT {typed} WHERE false"
    path = str(found[0]).replace("'", "''")
    names = ", ".join(f.name for f in fields)
    if found[0].suffix == ".csv":
        # Columns by header name (any order, extra ones ignored), each forced to its contract type.
        return f"SELECT {names} FROM read_csv('{path}', header=true, types={columns})"
    shape = "newline_delimited" if found[0].suffix == ".jsonl" else "array"
    return f"SELECT {names} FROM read_json('{path}', format='{shape}', columns={columns})"
