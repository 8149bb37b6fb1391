"""Shared plumbing: errors, deterministic IO, configs, text, stage generations, locks."""
