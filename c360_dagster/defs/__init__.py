"""The Dagster layer: thin wiring from assets to the pure domain code."""
