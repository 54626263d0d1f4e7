"""The HL7 v3 codec alone: parse the shared samples, build schema-valid answers, round-trip records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from pix import hl7v3 as V
from pix.xref import Demographics, Identifier, PatientRecord
from pix_v3.pixv3_support import assert_schema_valid
from support import need_shared

R = V.Responder("1.2.250.1.999.1.1", now=lambda: "20250101120000", new_id=lambda: "7c1f0d4e-0000-4000-8000-000000000001")


def sample(*parts: str) -> etree._Element:
    return etree.parse(str(need_shared("samples", *parts))).getroot()


def test_ihe_add_reads_ids_demographics_and_other_ids():
    message = V.parse_feed(sample("iti44", "ihe__01_PatientRegistryRecordAdded1.xml"))
    assert message.interaction == V.ADD
    assert message.header.message_id == V.II("22a0f9e0-4454-11dc-a6be-3603d6866807")
    assert message.record.identifiers == (
        Identifier("34827G234", "1.2.840.114350.1.13.99998.8734"),
        Identifier("38273N237", "1.2.840.114350.1.13.99997.2.3412"),
    )
    d = message.record.demographics
    assert (d.family_name, d.given_names, d.birth_date, d.sex) == ("Dean", ("Jimmy",), "19570323", "M")
    assert message.subsumed is None


def test_merge_reads_the_subsumed_id():
    message = V.parse_feed(sample("iti44", "ihe__05_PatientRegistryDuplicatesResolved.xml"))
    assert message.record.identifiers == (Identifier("34827G409", "1.2.840.114350.1.13.99998.8734"),)
    assert message.subsumed == Identifier("34827G234", "1.2.840.114350.1.13.99998.8734")


def test_ids_without_root_or_with_null_flavor_are_skipped():
    message = V.parse_feed(sample("iti44", "ipf__PIX_FEED_REV_Maximal_Request.xml"))
    assert {i.authority for i in message.record.identifiers} == {
        "1.3.6.1.4.1.21367.2005.1.1", "1.2.3.4.5.1000", "2.16.840.1.113883.4.1", "1.2.3",
    }
    assert message.record.demographics.given_names == ("MARY", "ROSE")  # the legal name (use="L")


def test_two_patients_in_one_add_is_an_error_at_subject():
    with pytest.raises(V.Hl7v3MessageError) as info:
        V.parse_feed(sample("iti44", "ipf__iti44-multipatient-request-1.xml"))
    assert info.value.hl7_code == V.SEGMENT_SEQUENCE_ERROR
    assert info.value.location == "/PRPA_IN201301UV02/controlActProcess/subject"


def test_a_query_is_not_a_feed():
    with pytest.raises(V.WrongInteraction):
        V.parse_feed(sample("iti45", "ihe__06_PIXQuery1.xml"))
    with pytest.raises(V.WrongInteraction):
        V.parse_feed(sample("iti44", "ihe__01_PatientRegistryRecordAdded1.xml"), V.REVISE)


def test_query_reads_identifier_and_data_sources():
    query = V.parse_query(sample("iti45", "ipf__NistPixpdq_Mesa10501-05_Example_01.xml"))
    assert query.patient_identifier == Identifier("ABC10501", "1.3.6.1.4.1.21367.2005.1.1", "HIMSS2005")
    assert query.data_sources == ("1.3.6.1.4.1.21367.2005.1.2",)
    assert query.query_id == V.II("1.2.3.4.5")


def test_ack_targets_the_request_and_is_schema_valid():
    message = V.parse_feed(sample("iti44", "ihe__01_PatientRegistryRecordAdded1.xml"))
    detail = V.AckDetail("204", "unknown domain", "/PRPA_IN201301UV02/controlActProcess/subject")
    ack = V.build_ack(message.header, V.AE, [detail], R)
    assert_schema_valid(ack)
    summary = V.read_ack(ack)
    assert summary.type_code == "AE"
    assert summary.target_message == message.header.message_id
    assert summary.details == (detail,)
    # the answer goes back to the sender's device, from ours
    assert ack.find("{urn:hl7-org:v3}receiver/{urn:hl7-org:v3}device/{urn:hl7-org:v3}id").get("root") == \
        "1.2.840.114350.1.13.99998.8734"
    assert ack.find("{urn:hl7-org:v3}sender/{urn:hl7-org:v3}device/{urn:hl7-org:v3}id").get("root") == R.device_id


def test_query_response_groups_other_domains_in_as_other_ids():
    query = V.parse_query(sample("iti45", "ihe__06_PIXQuery1.xml"))
    ids = [Identifier("A1", "1.2.3.1"), Identifier("B1", "1.2.3.2"), Identifier("B2", "1.2.3.2")]
    response = V.build_query_response(query, query.header, type_code=V.AA, query_response_code=V.OK, identifiers=ids, responder=R)
    assert_schema_valid(response)
    summary = V.read_ack(response)
    assert (summary.type_code, summary.query_response_code) == ("AA", "OK")
    assert summary.identifiers == tuple(ids)
    others = response.findall(".//{urn:hl7-org:v3}asOtherIDs")
    assert len(others) == 1 and len(others[0].findall("{urn:hl7-org:v3}id")) == 2
    echoed = response.find(".//{urn:hl7-org:v3}queryByParameter/{urn:hl7-org:v3}parameterList/"
                           "{urn:hl7-org:v3}patientIdentifier/{urn:hl7-org:v3}value")
    assert echoed.get("extension") == "38273N237"


_oid = st.lists(st.integers(0, 999), min_size=2, max_size=6).map(lambda xs: "1." + ".".join(map(str, xs)))
_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"), min_size=1, max_size=20).map(str.strip).filter(bool)
_identifier = st.builds(Identifier, value=_text, authority=_oid)
_record = st.builds(
    PatientRecord,
    identifiers=st.lists(_identifier, min_size=1, max_size=5, unique_by=lambda i: (i.authority, i.value)).map(tuple),
    demographics=st.builds(
        Demographics,
        family_name=_text,
        given_names=st.lists(_text, max_size=3).map(tuple),
        birth_date=st.sampled_from(["", "19570323", "20011231"]),
        sex=st.sampled_from(["", "M", "F", "U"]),
        birth_place=st.sampled_from(["", "75056", "2A004"]),
    ),
    identity_reliability=st.lists(st.sampled_from(["VALI", "PROV", "DOUTE"]), max_size=2, unique=True).map(tuple),
)


@settings(max_examples=60)
@given(record=_record, interaction=st.sampled_from([V.ADD, V.REVISE]))
def test_feed_round_trip(record, interaction):
    """Whatever record is written as an ITI-44 message (our convention for the reliability
    included), parsing the bytes gives it back — identifiers grouped by domain."""
    data = etree.tostring(V.build_feed(interaction, record, R))
    message = V.parse_feed(V.parse_message(data))
    assert set(message.record.identifiers) == set(record.identifiers)
    assert message.record.identifiers[0] == record.identifiers[0]
    assert message.record.demographics.family_name == record.demographics.family_name
    assert message.record.demographics.given_names == record.demographics.given_names
    assert message.record.demographics.sex == record.demographics.sex
    assert message.record.demographics.birth_place == record.demographics.birth_place
    assert message.record.identity_reliability == record.identity_reliability


@settings(max_examples=30)
@given(record=_record)
def test_built_feeds_are_schema_valid(record):
    need_shared("xsd")
    assert_schema_valid(V.build_feed(V.ADD, record, R))
    assert_schema_valid(V.build_feed(V.MERGE, record, R, subsumed=Identifier("X", "1.2.9")))
