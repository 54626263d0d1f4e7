"""The codec's fast paths give exactly what the general code gives (issue: ITI-42 speed).

`object_to_bytes` writes fragments without an lxml tree: its bytes must be lxml's, to the byte,
and what lxml refuses it must refuse. `parse_submit_objects_request` skips per-element text
checks when one XPath shows the document has no stray text, and reads plain Slots and Names
directly: the model and every error must be those of the full checks.
"""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from registry import ebrim
from registry import model as M
from registry.errors import XdsFailure

from strategies_ebrim import registry_objects, submit_objects_requests

R = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"


def lxml_bytes(obj) -> bytes:
    return etree.tostring(ebrim.object_to_element(obj), encoding="UTF-8", xml_declaration=False)


@settings(max_examples=300)
@given(registry_objects)
def test_fragment_bytes_are_lxml_bytes(obj):
    assert ebrim.object_to_bytes(obj) == lxml_bytes(obj)


@settings(max_examples=200)
@given(st.text(max_size=20))
def test_any_text_is_escaped_as_lxml_escapes_it_or_refused_as_lxml_refuses_it(text):
    obj = M.Association(
        id="a" + text, association_type=text, source_object="s", target_object="t",
        slots=(M.Slot(text or "n", (text, "")),), name=(M.LocalizedString(text, lang=text),),
    )
    try:
        expected = lxml_bytes(obj)
    except (ValueError, UnicodeError) as exc:
        with pytest.raises(type(exc)):
            ebrim.object_to_bytes(obj)
    else:
        assert ebrim.object_to_bytes(obj) == expected


def test_every_character_class_escapes_like_lxml():
    specials = '&<>"\'\t\n\r\x7f\x85\u00a0\u2028\ud7ff\ue000\ufffd\U00010000\U0010ffff]]>é'
    obj = M.DocumentEntry(id=specials, mime_type=specials, slots=(M.Slot(specials, (specials,)),),
                          name=(M.LocalizedString(specials, lang=specials, charset=specials),))
    assert ebrim.object_to_bytes(obj) == lxml_bytes(obj)
    with pytest.raises(ValueError):
        ebrim.object_to_bytes(M.DocumentEntry(id="x\x01"))
    with pytest.raises(TypeError):
        ebrim.object_to_bytes(M.ObjectRef(id="x"))


def outcome(el, *, fast: bool, monkeypatch):
    monkeypatch.setattr(ebrim, "_no_stray_text", (lambda e: not ebrim._STRAY_TEXT(e)) if fast else (lambda e: False))
    try:
        req, layout = ebrim.parse_submit_objects_request_with_layout(el)
        return ("ok", req, layout.entries)
    except XdsFailure as failure:
        return ("fail", [(e.code, e.message, e.location, e.rule) for e in failure.errors])


def mutations(root: etree._Element, rng: random.Random, n: int):
    """Small damages of a valid request: text, comments, attributes, moved/extra elements."""
    for _ in range(n):
        doc = copy.deepcopy(root)
        els = list(doc.iter())
        el = rng.choice(els)
        kind = rng.randrange(7)
        if kind == 0:
            el.text = rng.choice(["x", " ", "\u00a0", "\n y"])
        elif kind == 1 and el.getparent() is not None:
            el.tail = rng.choice(["x", "\u00a0", " "])
        elif kind == 2:
            el.set(rng.choice(["foo", "{urn:x}bar", "name", "value"]), "v")
        elif kind == 3:
            el.append(etree.Comment("c"))
        elif kind == 4 and el.getparent() is not None:
            el.addnext(copy.deepcopy(el))
        elif kind == 5:
            el.insert(0, etree.Element(R + rng.choice(["Value", "ValueList", "LocalizedString", "Slot"])))
        elif kind == 6 and el.getparent() is not None:
            el.getparent().remove(el)
        yield doc


@settings(max_examples=40, suppress_health_check=list(HealthCheck))
@given(submit_objects_requests, st.integers(0, 2**32))
def test_parse_fast_path_equals_the_full_checks(monkeypatch, req, seed):
    root = ebrim.submit_objects_request_to_element(req)
    for doc in [root, *mutations(root, random.Random(seed), 8)]:
        assert outcome(doc, fast=True, monkeypatch=monkeypatch) == outcome(doc, fast=False, monkeypatch=monkeypatch)
