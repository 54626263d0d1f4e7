"""ITI-81 search parameters (atna.arr.query): FHIR date ranges and prefixes, patient identifiers,
refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atna.arr.query import (
    DateBound,
    PatientRef,
    SearchParameterError,
    fhir_date_range,
    format_time,
    parse_search,
    patient_ref,
)


def test_date_prefixes_give_half_open_bounds_at_the_value_precision():
    q = parse_search({"date": ["ge2024-05-01", "lt2024-05-02T10:30"]})
    assert q.dates == (
        DateBound("2024-05-01T00:00:00.000000Z", None),
        DateBound(None, "2024-05-02T10:30:00.000000Z"),
    )
    assert parse_search({"date": ["2024-05"]}).dates == (
        DateBound("2024-05-01T00:00:00.000000Z", "2024-06-01T00:00:00.000000Z"),
    )
    assert parse_search({"date": ["gt2024"]}).dates == (DateBound("2025-01-01T00:00:00.000000Z", None),)
    assert parse_search({"date": ["le2024-12-31T23:59:59+01:00"]}).dates == (
        DateBound(None, "2024-12-31T23:00:00.000000Z"),
    )


@pytest.mark.parametrize(
    "text, ref",
    [
        ("123^^^&1.2.250.1.213.1.4.10&ISO", PatientRef("123", "1.2.250.1.213.1.4.10")),
        ("123^^^FAC&1.2.3&ISO^PI", PatientRef("123", "1.2.3")),
        ("TestPatient1^^^&&1.3.6.1.4.1.21367.13.20.1000&ISO", PatientRef("TestPatient1", "1.3.6.1.4.1.21367.13.20.1000")),
        ("urn:oid:1.2.3|123", PatientRef("123", "1.2.3")),
        ("1.2.3|123", PatientRef("123", "1.2.3")),
        ("|123", PatientRef("123", None)),
        ("123", PatientRef("123", None)),
        ("123^^^NS", PatientRef("123", None)),
    ],
)
def test_patient_identifier_forms(text, ref):
    assert patient_ref(text) == ref


def test_comma_is_or_and_repetition_is_and():
    q = parse_search({"subtype": ["ITI-18,ITI-43"], "agent": ["a", "urn:x|b"], "outcome": ["0"]})
    assert q.subtypes == (("ITI-18", "ITI-43"),)
    assert q.agents == (("a",), ("b",))
    assert q.outcomes == (("0",),)


@pytest.mark.parametrize(
    "params",
    [
        {"name": ["x"]},
        {"patient:exact": ["x"]},
        {"date": ["sa2024"]},
        {"date": ["2024-02-30"]},
        {"date": ["yesterday"]},
        {"date": ["2024,2025"]},
        {"outcome": ["1"]},
        {"action": ["X"]},
        {"_count": ["0"]},
        {"_count": ["1", "2"]},
        {"_offset": ["-1"]},
        {"_format": ["xml"]},
        {"patient": [""]},
        {"patient": ["^^^&1.2.3&ISO"]},
    ],
)
def test_refused_searches(params):
    with pytest.raises(SearchParameterError):
        parse_search(params)


def test_count_is_capped():
    assert parse_search({"_count": ["100000"]}).count == 1000


instants = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2999, 12, 30), timezones=st.just(dt.timezone.utc)
)


@given(instants, st.sampled_from([4, 7, 10, 16, 19, 23, 26]))
def test_a_date_value_range_contains_the_instant_it_was_cut_from(when, length):
    """Property: truncating an instant to any FHIR precision gives a range [start, end) holding it."""
    text = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:length]
    start, end = fhir_date_range(text)
    assert start <= when < end
    assert format_time(start) <= format_time(when) < format_time(end)  # stored strings sort in time order


@given(st.text(alphabet=st.characters(blacklist_characters="^|~&,", blacklist_categories=("Cs", "Cc", "Zs")), min_size=1, max_size=30),
       st.lists(st.integers(0, 999), min_size=2, max_size=8))
def test_cx_and_token_forms_name_the_same_patient(value, arcs):
    oid = "1." + ".".join(str(a) for a in arcs)
    assert patient_ref(f"{value}^^^&{oid}&ISO") == patient_ref(f"urn:oid:{oid}|{value}") == PatientRef(value, oid)
