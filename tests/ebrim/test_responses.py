"""RegistryResponse and AdhocQueryResponse builders, validated against the official XDS.b XSD."""

from __future__ import annotations

import pytest
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import RegistryError, XdsErrorCode

from strategies_ebrim import SUBMIT_SAMPLES as SAMPLES
from strategies_ebrim import submit_element

P = etree.XMLParser(resolve_entities=False, no_network=True)
RS = "{%s}" % C.NS_RS

ERR = RegistryError(XdsErrorCode.XDSUnknownPatientId, "patient 123 unknown", "Document01")
WARN = RegistryError(XdsErrorCode.XDSExtraMetadataNotSaved, "slot urn:x dropped", "Document01").as_warning()


@pytest.mark.parametrize(
    "errors,status,expected",
    [
        ((), None, C.RESPONSE_SUCCESS),
        ((WARN,), None, C.RESPONSE_SUCCESS),
        ((WARN, ERR), None, C.RESPONSE_FAILURE),
        ((ERR,), None, C.RESPONSE_FAILURE),
        ((WARN,), C.RESPONSE_PARTIAL_SUCCESS, C.RESPONSE_PARTIAL_SUCCESS),
    ],
)
def test_registry_response_status_and_errors(errors, status, expected, xdsb_schema):
    el = ebrim.registry_response(errors, status=status, request_id="urn:uuid:r")
    xdsb_schema.assertValid(el)
    assert el.tag == RS + "RegistryResponse"
    assert el.get("status") == expected
    assert el.get("requestId") == "urn:uuid:r"
    listed = el.findall(f"{RS}RegistryErrorList/{RS}RegistryError")
    assert [(e.get("errorCode"), e.get("codeContext"), e.get("location"), e.get("severity")) for e in listed] == [
        (e.code.value, e.message, e.location, e.severity) for e in errors
    ]
    if errors:
        highest = el.find(f"{RS}RegistryErrorList").get("highestSeverity")
        assert highest == (C.SEVERITY_ERROR if ERR in errors else C.SEVERITY_WARNING)
    else:
        assert el.find(f"{RS}RegistryErrorList") is None


def test_registry_response_bytes_parse_back(xdsb_schema):
    raw = ebrim.registry_response_bytes([ERR])
    xdsb_schema.assertValid(etree.fromstring(raw, P))


def _fragments() -> list[bytes]:
    frags = []
    for rel in SAMPLES:
        req = ebrim.parse_submit_objects_request(submit_element(rel))
        frags += [ebrim.object_to_bytes(o) for o in req.objects]
    return frags


def test_leaf_class_response_concatenates_fragments(xdsb_schema):
    frags = _fragments()
    raw = ebrim.adhoc_query_response_bytes(status=C.RESPONSE_SUCCESS, leaf_fragments=frags, errors=[WARN])
    el = etree.fromstring(raw, P)
    xdsb_schema.assertValid(el)
    rol = el.find(ebrim.T_REGISTRY_OBJECT_LIST)
    assert len(rol) == len(frags)
    # each child reloads to the same object as its fragment
    for child, frag in zip(rol, frags):
        assert ebrim.element_to_object(child) == ebrim.element_to_object(etree.fromstring(frag, P))
    assert el.find(f"{RS}RegistryErrorList/{RS}RegistryError").get("errorCode") == "XDSExtraMetadataNotSaved"


def test_object_ref_response(xdsb_schema):
    raw = ebrim.adhoc_query_response_bytes(
        status=C.RESPONSE_SUCCESS, object_refs=[("urn:uuid:1", None), ("urn:uuid:2", "urn:oid:1.2.3")]
    )
    el = etree.fromstring(raw, P)
    xdsb_schema.assertValid(el)
    refs = el.find(ebrim.T_REGISTRY_OBJECT_LIST).findall(ebrim.T_OBJECT_REF)
    assert [(r.get("id"), r.get("home")) for r in refs] == [("urn:uuid:1", None), ("urn:uuid:2", "urn:oid:1.2.3")]


def test_failure_response_has_empty_object_list(xdsb_schema):
    raw = ebrim.adhoc_query_response_bytes(status=C.RESPONSE_FAILURE, errors=[ERR])
    el = etree.fromstring(raw, P)
    xdsb_schema.assertValid(el)
    assert len(el.find(ebrim.T_REGISTRY_OBJECT_LIST)) == 0
    assert el.get("status") == C.RESPONSE_FAILURE


def test_leaf_fragments_and_refs_together_are_refused():
    with pytest.raises(ValueError):
        ebrim.adhoc_query_response_bytes(
            status=C.RESPONSE_SUCCESS, leaf_fragments=[b"<x/>"], object_refs=[("a", None)]
        )


def test_leaf_class_response_carries_200_stored_fragments_verbatim_in_order():
    # The answer is the stored fragments joined, never re-parsed nor re-serialised (what that saves
    # is measured in `make bench`, not here): each fragment's bytes appear as stored, in order.
    frags = (_fragments() * 5)[:200]
    raw = ebrim.adhoc_query_response_bytes(status=C.RESPONSE_SUCCESS, leaf_fragments=frags)
    at = 0
    for f in frags:
        found = raw.find(f, at)
        assert found >= 0, f"fragment not verbatim at or after byte {at}"
        at = found + len(f)
    assert len(etree.fromstring(raw, P).find(ebrim.T_REGISTRY_OBJECT_LIST)) == 200
