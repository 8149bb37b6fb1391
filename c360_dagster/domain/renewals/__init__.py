"""The renewal forecast, its backtest, and the success playbooks that act on both."""
