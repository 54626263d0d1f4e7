"""The value syntax of stored query parameters (ITI TF-2a §3.18.4.1.2.3.5).

A `rim:Value` of a stored query slot holds one of:

- a string, single-quoted, a quote inside doubled: ``'O''Brien'``;
- a number, unquoted (times, `$MetadataLevel`): ``20040101``;
- a list in parentheses, comma-separated: ``('a', 'b')``. A list may be split over several
  `rim:Value` elements of the same slot (CP 295): ``('a')`` then ``('b')`` means ``('a','b')``.

Codes are strings of the form ``code^^codingScheme`` (ITI TF-2a §3.18.4.1.2.3.4).

`parse_value` turns one `rim:Value` text into `Token`s or raises `ValueSyntaxError`; it never
raises anything else (a hypothesis test holds it to that).
"""

from __future__ import annotations

import attrs


class ValueSyntaxError(ValueError):
    """The text of a `rim:Value` does not follow ITI TF-2a §3.18.4.1.2.3.5."""


@attrs.frozen
class Token:
    """One scalar of a parameter value: `text` is the unescaped content; `quoted` tells a string
    (`'…'`) from a number."""

    text: str
    quoted: bool


@attrs.frozen
class ParsedValue:
    tokens: tuple[Token, ...]
    is_list: bool


_DIGITS = frozenset("0123456789")


def quote(text: str) -> str:
    """The quoted form of a string (the inverse of parsing a quoted token)."""
    return "'" + text.replace("'", "''") + "'"


def _scan_quoted(s: str, i: int) -> tuple[str, int]:
    """Read a quoted string starting at s[i] == "'"; return (content, index after it)."""
    out: list[str] = []
    i += 1
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "'":
            if i + 1 < n and s[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ValueSyntaxError("unterminated quoted string")


def _scan_number(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] in _DIGITS:
        j += 1
    if j == i:
        raise ValueSyntaxError(f"expected a quoted string or a number at {s[i:i + 20]!r}")
    return s[i:j], j


def _scan_token(s: str, i: int) -> tuple[Token, int]:
    if i < len(s) and s[i] == "'":
        text, j = _scan_quoted(s, i)
        return Token(text, True), j
    text, j = _scan_number(s, i)
    return Token(text, False), j


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def parse_value(text: str | None) -> ParsedValue:
    """Parse one `rim:Value` text (ITI TF-2a §3.18.4.1.2.3.5)."""
    s = (text or "").strip()
    if not s:
        raise ValueSyntaxError("empty value")
    if s[0] != "(":
        token, i = _scan_token(s, 0)
        if _skip_ws(s, i) != len(s):
            raise ValueSyntaxError(f"unexpected text after the value: {s[i:i + 20]!r}")
        return ParsedValue((token,), False)
    tokens: list[Token] = []
    i = _skip_ws(s, 1)
    while True:
        token, i = _scan_token(s, i)
        tokens.append(token)
        i = _skip_ws(s, i)
        if i >= len(s):
            raise ValueSyntaxError("list not closed by ')'")
        if s[i] == ")":
            i += 1
            break
        if s[i] != ",":
            raise ValueSyntaxError(f"expected ',' or ')' at {s[i:i + 20]!r}")
        i = _skip_ws(s, i + 1)
    if _skip_ws(s, i) != len(s):
        raise ValueSyntaxError(f"unexpected text after the list: {s[i:i + 20]!r}")
    return ParsedValue(tuple(tokens), True)


@attrs.frozen
class CodeValue:
    """A code parameter value ``code^^codingScheme`` (ITI TF-2a §3.18.4.1.2.3.4)."""

    code: str
    coding_scheme: str


def parse_code(text: str) -> CodeValue:
    code, sep, scheme = text.partition("^^")
    if not sep:
        raise ValueSyntaxError(f"code {text!r} is not of the form code^^codingScheme")
    if not code or not scheme:
        raise ValueSyntaxError(f"code {text!r} lacks its code or its coding scheme")
    return CodeValue(code, scheme)
