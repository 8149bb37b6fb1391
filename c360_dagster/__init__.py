"""c360: an offline, deterministic Customer 360 & Renewals pipeline on Dagster."""

from c360_dagster.domain.ingest.entities import (
    Account,
    Contact,
    Invoice,
    NPSResponse,
    Opportunity,
    Subscription,
    SupportCase,
    UsageWindow,
)

__all__ = [
    "Account",
    "Contact",
    "Invoice",
    "NPSResponse",
    "Opportunity",
    "Subscription",
    "SupportCase",
    "UsageWindow",
    "load_customer_360",
]


def load_customer_360(fixtures_dir, as_of=None):
    """Load and validate a folder of customer data; see `c360_dagster.domain.ingest.loader`."""
    from c360_dagster.domain.ingest.loader import load_customer_360 as _load

    return _load(fixtures_dir, as_of=as_of)
