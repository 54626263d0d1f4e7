"""The property tests' profile (tests/conftest.py): a slow example is not a failure."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=2)
@given(st.integers())
def test_an_example_slower_than_hypothesis_default_deadline_passes(_n):
    # Hypothesis' own default deadline is 200 ms: this example fails under it (DeadlineExceeded).
    time.sleep(0.25)


def test_the_profile_keeps_hypothesis_checks_that_are_not_timings():
    assert settings.default.deadline is None
    assert settings.default.max_examples == 100  # Hypothesis' default: the profile changes timings only
