"""Property tests: any model object survives model → XML → model (hypothesis strategies in
tests/strategies_ebrim.py, shared with the other suites)."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry import model as M

from strategies_ebrim import (
    associations,
    document_entries,
    folders,
    registry_objects,
    submission_sets,
    submit_objects_requests,
    xml_text,
)

P = etree.XMLParser(resolve_entities=False, no_network=True)


def reload(obj):
    return ebrim.element_to_object(etree.fromstring(ebrim.object_to_bytes(obj), P))


@given(document_entries)
def test_document_entry_round_trip(obj):
    assert reload(obj) == obj


@given(submission_sets)
def test_submission_set_round_trip(obj):
    back = reload(obj)
    assert isinstance(back, M.SubmissionSet)
    assert back == obj


@given(folders)
def test_folder_round_trip(obj):
    back = reload(obj)
    assert isinstance(back, M.Folder)
    assert back == obj


@given(associations)
def test_association_round_trip(obj):
    assert reload(obj) == obj


@settings(max_examples=50)
@given(obj=registry_objects)
def test_fragment_is_schema_valid_inside_a_leaf_class_response(obj, xdsb_schema):
    # Schema validity needs schema-valid values (anyURI ids, xs:boolean…); the generated text is
    # arbitrary, so only the element structure is checked here: wrap, validate, ignore
    # datatype-only complaints.
    raw = ebrim.adhoc_query_response_bytes(status=C.RESPONSE_SUCCESS, leaf_fragments=[ebrim.object_to_bytes(obj)])
    el = etree.fromstring(raw, P)
    xdsb_schema.validate(el)
    structural = [
        e for e in xdsb_schema.error_log
        if "This element is not expected" in e.message or "Missing child element" in e.message
    ]
    assert not structural, structural


@settings(max_examples=40)
@given(submit_objects_requests)
def test_submit_objects_request_round_trip(req):
    wire = ebrim.submit_objects_request_to_bytes(req)
    assert ebrim.parse_submit_objects_request(etree.fromstring(wire, P)) == req


@st.composite
def requests_with_top_level_classifications(draw):
    """A request whose packages' trailing classifications travel top level, anywhere in the list."""
    req = draw(submit_objects_requests)
    # objects and refs keep their relative order (the model keeps them in document order);
    # only their interleaving and the top-level classifications' places vary
    entries: list[tuple] = [("object", i) for i in range(len(req.objects))]
    for j in range(len(req.object_refs)):
        pos = draw(st.integers(0, len(entries)))
        later = [k for k, e in enumerate(entries) if e[0] == "ref"]
        entries.insert(max([pos] + [k + 1 for k in later]), ("ref", j))
    ids = [o.id for o in req.objects]
    for i, obj in enumerate(req.objects):
        if ids.index(obj.id) != i:
            continue  # a duplicated id folds into its first holder; keep those nested
        n = len(obj.classifications)
        moved = draw(st.integers(0, n))
        floor = 0  # the same object's top-level classifications stay in their relative order
        for k in range(n - moved, n):
            if obj.classifications[k].classified_object != obj.id:
                # a top-level Classification names its object: make it so
                fixed = list(obj.classifications)
                fixed[k] = attrs.evolve(fixed[k], classified_object=obj.id)
                obj = attrs.evolve(obj, classifications=tuple(fixed))
            floor = draw(st.integers(floor, len(entries)))
            entries.insert(floor, ("classification", i, k))
            floor += 1
        req = attrs.evolve(req, objects=req.objects[:i] + (obj,) + req.objects[i + 1 :])
    return req, ebrim.WireLayout(tuple(entries))


@settings(max_examples=40)
@given(requests_with_top_level_classifications())
def test_layout_round_trip(pair):
    req, layout = pair
    wire = ebrim.submit_objects_request_to_bytes(req, layout)
    back, back_layout = ebrim.parse_submit_objects_request_with_layout(etree.fromstring(wire, P))
    assert back == req
    assert back_layout == layout


@given(document_entries, st.sampled_from([C.STATUS_DEPRECATED, C.STATUS_APPROVED, C.STATUS_DMP_ARCHIVED]))
def test_replace_status_in_fragment_equals_with_status(obj, status):
    frag = ebrim.replace_status_in_fragment(ebrim.object_to_bytes(obj), status)
    assert ebrim.element_to_object(etree.fromstring(frag, P)) == ebrim.with_status(obj, status)


@given(registry_objects, xml_text.filter(bool), st.lists(xml_text, max_size=3))
def test_set_slot(obj, name, values):
    new = ebrim.set_slot(obj, name, values)
    assert new.slot(name) == tuple(values)
    assert [s.name for s in new.slots].count(name) == 1
    others = [s for s in obj.slots if s.name != name]
    assert [s for s in new.slots if s.name != name] == others
    assert reload(new) == new
