"""ITI-18 AdhocQueryRequest parsing (ITI TF-2a §3.18.4.1.2) on real requests and mutations."""

from __future__ import annotations

import pytest
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import XdsErrorCode, XdsFailure
from support import need_shared

P = etree.XMLParser(resolve_entities=False, no_network=True)


def query_element(rel: str) -> etree._Element:
    tree = etree.parse(str(need_shared("samples", "iti18", rel)), P)
    (el,) = tree.getroot().iter(ebrim.T_ADHOC_QUERY_REQUEST)
    return el


def test_ihe_sample_query_id_is_stripped_and_slots_kept_raw_in_order():
    req = ebrim.parse_adhoc_query_request(query_element("ihe__RegistryStoredQueryRequest.xml"))
    assert req.query_id == C.SQ_FIND_DOCUMENTS  # the sample writes id=" urn:uuid:… "
    assert req.return_type == "LeafClass"
    assert req.return_composed_objects is True
    assert [s.name for s in req.slots] == [
        "$XDSDocumentEntryPatientId",
        "$XDSDocumentEntryStatus",
        "$XDSDocumentEntryCreationTimeFrom",
        "$XDSDocumentEntryCreationTimeTo",
        "$XDSDocumentEntryHealthcareFacilityTypeCode",
    ]
    assert req.slot("$XDSDocumentEntryPatientId") == ("st3498702^^^&1.3.6.1.4.1.21367.2005.3.7&ISO",)
    assert req.slot("$XDSDocumentEntryHealthcareFacilityTypeCode") == ("(\u2018Emergency Department\u2019)",)
    assert (req.home, req.federated, req.start_index, req.max_results) == (None, False, 0, -1)


@pytest.mark.parametrize(
    "rel,slot,value",
    [
        ("ihe__RegistryStoredQueryRequest_SOAP.xml", "$XDSDocumentEntryCreationTimeTo", "200501010800"),
        ("nist-validator__sq-req.xml", "$XDSDocumentEntryClassCode", "('value^^scheme')"),
        ("nist-validator__soap-sq-req.xml", "$XDSDocumentEntryClassCode", "('value^^scheme')"),
        ("nist-validator__sq-req-bad-code.xml", "$XDSDocumentEntryClassCode", "('value^^')"),
        ("nist-validator__sq-req-bad-stat-format1.xml", "$XDSDocumentEntryStatus",
         "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"),
        ("ipf__iti18request.xml", "$XDSDocumentEntryCreationTimeFrom", "'20221015151515'"),
    ],
)
def test_samples_parse(rel, slot, value):
    req = ebrim.parse_adhoc_query_request(query_element(rel))
    assert req.query_id == C.SQ_FIND_DOCUMENTS
    assert req.return_type == "LeafClass"
    assert value in req.slot(slot)


def test_missing_status_sample_has_no_status_slot():
    req = ebrim.parse_adhoc_query_request(query_element("nist-validator__sq-req-missing-stat.xml"))
    assert req.slot("$XDSDocumentEntryStatus") == ()


def test_request_in_wrong_namespace_is_refused():
    # the NIST log carries an AdhocQuery in no namespace
    with pytest.raises(XdsFailure) as info:
        ebrim.parse_adhoc_query_request(query_element("nist-validator__sq-log.xml"))
    assert info.value.errors[0].code is XdsErrorCode.XDSRegistryMetadataError


REQ = """<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" {attrs}>
  <query:ResponseOption {option}/>
  <rim:AdhocQuery id="urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4" home="urn:oid:1.2.3">
    <rim:Slot name="$XDSDocumentEntryUUID"><rim:ValueList>
      <rim:Value>('urn:uuid:a', 'urn:uuid:b')</rim:Value><rim:Value>('urn:uuid:c')</rim:Value>
    </rim:ValueList></rim:Slot>
  </rim:AdhocQuery>
</query:AdhocQueryRequest>"""


def test_request_attributes_and_object_ref():
    el = etree.fromstring(
        REQ.format(
            attrs='federated="true" startIndex="5" maxResults="20" id="r1"',
            option='returnType="ObjectRef"',
        ),
        P,
    )
    req = ebrim.parse_adhoc_query_request(el)
    assert req.query_id == C.SQ_GET_DOCUMENTS
    assert req.home == "urn:oid:1.2.3"
    assert req.return_type == "ObjectRef" and req.return_composed_objects is False
    assert (req.federated, req.start_index, req.max_results, req.id) == (True, 5, 20, "r1")
    assert req.slot("$XDSDocumentEntryUUID") == ("('urn:uuid:a', 'urn:uuid:b')", "('urn:uuid:c')")


@pytest.mark.parametrize(
    "attrs,option",
    [
        ('maxResults="many"', 'returnType="LeafClass"'),
        ("", 'returnType="LeafClass" returnComposedObjects="yes"'),
        ("", 'returnType="LeafClass" bogus="1"'),
    ],
)
def test_malformed_request_attributes_are_metadata_errors(attrs, option):
    el = etree.fromstring(REQ.format(attrs=attrs, option=option), P)
    with pytest.raises(XdsFailure) as info:
        ebrim.parse_adhoc_query_request(el)
    assert info.value.errors[0].code is XdsErrorCode.XDSRegistryMetadataError


def test_missing_response_option_is_refused():
    el = etree.fromstring(REQ.format(attrs="", option='returnType="LeafClass"'), P)
    el.remove(el.find(ebrim.T_RESPONSE_OPTION))
    with pytest.raises(XdsFailure):
        ebrim.parse_adhoc_query_request(el)
