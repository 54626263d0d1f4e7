"""The stored query value syntax (ITI TF-2a §3.18.4.1.2.3.5): round trips and garbage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import pytest

from registry.queries.values import CodeValue, Token, ValueSyntaxError, parse_code, parse_value, quote

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(text)
def test_quoted_string_round_trips(s):
    parsed = parse_value(quote(s))
    assert parsed.tokens == (Token(s, True),) and not parsed.is_list


@given(st.lists(text, min_size=1, max_size=5), st.sampled_from(["", " ", "\n  "]))
def test_quoted_list_round_trips(items, ws):
    value = "(" + ("," + ws).join(quote(i) for i in items) + ws + ")"
    parsed = parse_value(ws + value + ws)
    assert parsed.is_list
    assert [t.text for t in parsed.tokens] == items


@given(text)
def test_garbage_gives_a_typed_error_never_an_exception(s):
    try:
        parsed = parse_value(s)
    except ValueSyntaxError:
        return
    assert parsed.tokens


@given(st.text(alphabet="()',0123456789 ab^", max_size=25))
def test_garbage_from_the_syntax_alphabet(s):
    try:
        parse_value(s)
    except ValueSyntaxError:
        pass


@pytest.mark.parametrize(
    "value, tokens, is_list",
    [
        ("'a'", [("a", True)], False),
        ("20040101", [("20040101", False)], False),
        ("('a','b')", [("a", True), ("b", True)], True),
        ("( 'a' , 'b' )", [("a", True), ("b", True)], True),
        ("'O''Brien'", [("O'Brien", True)], False),
        ("''", [("", True)], False),
        ("('it''s, (fine)')", [("it's, (fine)", True)], True),
    ],
)
def test_examples(value, tokens, is_list):
    parsed = parse_value(value)
    assert [(t.text, t.quoted) for t in parsed.tokens] == tokens and parsed.is_list is is_list


@pytest.mark.parametrize(
    "value",
    ["", "  ", "abc", "'a", "'a''", "('a'", "('a',)", "()", "('a' 'b')", "'a' x", "('a'))", "(a)", "12a", "-1"],
)
def test_syntax_errors(value):
    with pytest.raises(ValueSyntaxError):
        parse_value(value)


def test_codes():
    assert parse_code("Communication^^Connect-a-thon classCodes") == CodeValue("Communication", "Connect-a-thon classCodes")
    for bad in ("value^^", "^^scheme", "value", "value^scheme"):
        with pytest.raises(ValueSyntaxError):
            parse_code(bad)
