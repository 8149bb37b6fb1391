"""The benchmark floor: the health score's per-account measures in one DuckDB SQL pass.

It reads the same input files the loader reads (no validation, no Dagster, no JSON, no
Parquet) and computes what `health._measures` computes, so `pipeline ÷ floor` says how much
the pipeline's validation, persistence, evidence and orchestration cost over bare compute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import duckdb
import polars as pl

from c360_dagster.domain.entities import ENTITIES
from c360_dagster.domain.errors import InputError

SQL_TYPES = {"str": "VARCHAR", "enum": "VARCHAR", "date": "DATE", "int": "BIGINT", "decimal": "DOUBLE", "bool": "BOOLEAN"}
FLOOR_ENTITIES = ("accounts", "subs", "usage", "cases", "nps", "invoices")

# Each CTE mirrors one measure group of health.py; "last N days" is (as_of - N, as_of].
MEASURES_SQL = """
WITH
entitlements AS (
    SELECT account_id, count(*) AS active_subscriptions, sum(seats)::BIGINT AS seats, sum(arr) AS arr,
           CASE WHEN sum(arr) > 0 THEN sum(arr * coalesce(discount_pct, 0)) / sum(arr) ELSE 0 END AS discount_pct
    FROM subs WHERE status = 'active' GROUP BY account_id
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
           sum(amount) FILTER (overdue) AS overdue_amount,
           sum(coalesce(credit_amount, 0)) FILTER (issued_on > $as_of - $credits_days) AS credits
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
       coalesce(e.arr, 0) AS arr, coalesce(e.discount_pct, 0) AS discount_pct,
       coalesce(u.usage_windows, 0) AS usage_windows, coalesce(u.recent_windows, 0) AS recent_windows,
       coalesce(u.recent_active_users, 0) AS recent_active_users, coalesce(u.recent_features, 0) AS recent_features,
       coalesce(u.recent_release_features, 0) AS recent_release_features,
       coalesce(s.cases_total, 0) AS cases_total, coalesce(s.cases_in_window, 0) AS cases_in_window,
       coalesce(s.severity1_cases, 0) AS severity1_cases, coalesce(s.severity2_cases, 0) AS severity2_cases,
       coalesce(s.severity3_cases, 0) AS severity3_cases, coalesce(s.severity4_cases, 0) AS severity4_cases,
       coalesce(s.sla_breaches, 0) AS sla_breaches, coalesce(s.open_sev1_cases, 0) AS open_sev1_cases,
       coalesce(b.invoices, 0) AS invoices, coalesce(b.overdue_invoices, 0) AS overdue_invoices,
       coalesce(b.max_days_overdue, 0) AS max_days_overdue, coalesce(b.overdue_amount, 0) AS overdue_amount,
       coalesce(b.credits, 0) AS credits,
       coalesce(l.nps_responses, 0) AS nps_responses, l.latest_nps, l.latest_on,
       coalesce(n.earlier_responses, 0) AS earlier_responses, n.earlier_mean_nps
FROM accounts a
LEFT JOIN entitlements e USING (account_id)
LEFT JOIN usage_measures u USING (account_id)
LEFT JOIN support_measures s USING (account_id)
LEFT JOIN billing_measures b USING (account_id)
LEFT JOIN latest l USING (account_id)
LEFT JOIN earlier n USING (account_id)
ORDER BY a.account_id
"""


def floor_measures(input_dir: Path | str, as_of: dt.date, windows: Mapping[str, int]) -> pl.DataFrame:
    """One row per account with health's measures (same names), sorted by account_id."""
    folder = Path(input_dir)
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        for name in FLOOR_ENTITIES:
            con.execute(f"CREATE VIEW {name} AS {_source_sql(folder, name)}")
        params = {"as_of": as_of, **{key: int(windows[key]) for key in ("usage_days", "support_days", "credits_days", "nps_trend_days")}}
        return con.sql(MEASURES_SQL, params=params).pl()


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
