"""The suite's own rule for coverage holds in every test process (tests/conftest.py): a test marked
`untraced` runs with no trace function, in xdist's workers as with `-n 0`, and every other test is
traced whenever coverage runs."""

from __future__ import annotations

import sys

import pytest


@pytest.mark.untraced
def test_an_untraced_test_runs_with_no_trace_function():
    # In a worker, pytest-cov's first coverage traced on while the worker's own was paused.
    assert sys.gettrace() is None


def test_a_test_is_traced_exactly_when_coverage_runs(pytestconfig):
    coverage_runs = bool(pytestconfig.getoption("cov_source")) and not pytestconfig.getoption("no_cov")
    assert (sys.gettrace() is not None) == coverage_runs
