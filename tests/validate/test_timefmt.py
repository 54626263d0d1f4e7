"""registry.timefmt: DTM keys for storage and range comparison."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from registry.timefmt import dtm_key, dtm_to_datetime, now_dtm

datetimes = st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59))
precisions = st.sampled_from([4, 6, 8, 10, 12, 14])


def full(d: dt.datetime) -> str:
    return d.strftime("%Y%m%d%H%M%S")


def test_padding_is_earliest_instant():
    assert dtm_key("2005") == "20050101000000"
    assert dtm_key("200412") == "20041201000000"
    assert dtm_key("20051224") == "20051224000000"
    assert dtm_key("200412230800") == "20041223080000"
    assert dtm_key("20041225235050") == "20041225235050"


@pytest.mark.parametrize("bad", ["", "200", "2005-12", "20051332", "2005123", "20051224250000", "abcd"])
def test_invalid_raises(bad):
    with pytest.raises(ValueError):
        dtm_key(bad)


@given(datetimes, precisions)
def test_key_is_14_digits_and_keeps_prefix(d, n):
    value = full(d)[:n]
    key = dtm_key(value)
    assert len(key) == 14 and key.isdigit() and key.startswith(value)
    assert dtm_key(key) == key


@given(datetimes, datetimes)
def test_keys_sort_in_time_order(a, b):
    a, b = a.replace(microsecond=0), b.replace(microsecond=0)
    assert (dtm_key(full(a)) < dtm_key(full(b))) == (a < b)


@given(datetimes, precisions)
def test_truncation_never_moves_later(d, n):
    # a partial value denotes the start of its period: From (>=) includes the whole period
    assert dtm_key(full(d)[:n]) <= dtm_key(full(d))


def test_range_semantics_from_inclusive_to_exclusive():
    # ITI TF-2a §3.18.4.1.2.3.7: From <= value < To
    stored = dtm_key("20041231235959")
    assert dtm_key("2004") <= stored < dtm_key("2005")
    assert not (dtm_key("2005") <= dtm_key("20050101000000") < dtm_key("2005"))
    assert dtm_key("2005") <= dtm_key("20050101000000")


def test_now_dtm():
    assert now_dtm(dt.datetime(2024, 1, 2, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == "20240102030506"
    value = now_dtm()
    assert len(value) == 14 and dtm_key(value) == value
    assert dtm_to_datetime("2024").tzinfo is dt.timezone.utc
