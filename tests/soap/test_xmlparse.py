"""The hardened parser: XXE, billion laughs, DTDs, size and depth caps (DESIGN.md §3 rule 5)."""

from __future__ import annotations

import resource

import pytest
from hypothesis import given, settings, strategies as st

from soap.xmlparse import XmlInputError, parse_xml


def test_parses_plain_xml_with_namespaces():
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><a:x xmlns:a="urn:a"><a:y>t</a:y></a:x>')
    assert root.tag == "{urn:a}x"
    assert root[0].text == "t"


def test_external_entity_is_refused_without_leaking_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT-4711")
    doc = f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]><x>&e;</x>'.encode()
    with pytest.raises(XmlInputError) as info:
        parse_xml(doc)
    assert "TOP-SECRET" not in str(info.value)
    assert "DOCTYPE" in str(info.value)


def test_external_parameter_entity_and_external_dtd_are_refused(tmp_path):
    (tmp_path / "evil.dtd").write_text('<!ENTITY leak "LEAKED">')
    for doc in (
        f'<!DOCTYPE x [<!ENTITY % p SYSTEM "file://{tmp_path}/evil.dtd"> %p;]><x>&leak;</x>',
        f'<!DOCTYPE x SYSTEM "file://{tmp_path}/evil.dtd"><x>&leak;</x>',
        '<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd"><x/>',
    ):
        with pytest.raises(XmlInputError) as info:
            parse_xml(doc.encode())
        assert "LEAKED" not in str(info.value)


def _billion_laughs(levels: int = 10) -> bytes:
    decl = ['<!ENTITY lol0 "lollollollollollollollollollol">']
    for i in range(1, levels):
        decl.append(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">')
    return f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(decl)}]><lolz>&lol{levels - 1};</lolz>'.encode()


def test_billion_laughs_is_refused_in_bounded_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(XmlInputError):
        parse_xml(_billion_laughs())  # 10^10 x 30 bytes if expanded
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024


def test_undeclared_entity_is_not_well_formed():
    with pytest.raises(XmlInputError, match="not well-formed"):
        parse_xml(b"<x>&e;</x>")


def test_size_cap():
    with pytest.raises(XmlInputError, match="exceeds"):
        parse_xml(b"<x>" + b"a" * 100 + b"</x>", max_bytes=50)
    assert parse_xml(b"<x>" + b"a" * 40 + b"</x>", max_bytes=50).tag == "x"


def test_depth_cap():
    assert parse_xml(b"<a>" * 10 + b"</a>" * 10, max_depth=10).tag == "a"
    with pytest.raises(XmlInputError, match="deeper than 10"):
        parse_xml(b"<a>" * 11 + b"</a>" * 11, max_depth=10)
    with pytest.raises(XmlInputError):  # libxml2's own cap bounds the parse itself
        parse_xml(b"<a>" * 5000 + b"</a>" * 5000)


@pytest.mark.parametrize("doc", [b"", b"   ", b"<x>", b"<x/><y/>", b"\xff\xfe<x/>", b"<x>\x00</x>", b"no xml"])
def test_garbage_is_a_typed_error(doc):
    with pytest.raises(XmlInputError):
        parse_xml(doc)


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: ("<x>" + t).encode("utf-8", "replace")))
def test_any_input_parses_or_raises_the_typed_error(data):
    try:
        parse_xml(data)
    except XmlInputError:
        pass
