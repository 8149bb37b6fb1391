"""The signed event log, its trust anchor, the lake and its contracts, the run counters."""
