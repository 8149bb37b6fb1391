"""Health, signals and the account lifecycle: what the view says about each account."""
