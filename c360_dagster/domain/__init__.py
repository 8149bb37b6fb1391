"""Pure domain code: plain data in, plain data out. Imports no Dagster."""
