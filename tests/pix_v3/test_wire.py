"""ITI-44 and ITI-45 over real HTTP (SOAP 1.2 + WS-Addressing) against `SoapEndpoint`, on the
fake and the SQL stores: every request of ../shared/samples/iti44 and iti45 with the outcome of
MANIFEST.tsv; every HL7 v3 answer is checked against its official schema (PixService.call)."""

from __future__ import annotations

import csv

import pytest
from lxml import etree

from pix import hl7v3 as V
from pix.ins import INS_NIR_TEST, with_key
from pix.v3_endpoint import ACTIONS
from pix.xref import Demographics, Identifier, PatientRecord
from pix_v3.pixv3_support import IPP, IPP2, MANAGER_DEVICE, ack_of, action_of, sample_bytes, served
from registry.errors import InfrastructureError
from support import need_shared

HL7 = "{urn:hl7-org:v3}"
R = V.Responder("1.2.250.1.999.9.9")


def manifest(transaction: str) -> dict[str, str]:
    path = need_shared("samples", "MANIFEST.tsv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["file"].split("/", 1)[1]: r["expected_outcome"] for r in rows if r["transaction"] == transaction}


def request_samples(transaction: str) -> list[str]:
    """The sample files that are requests (MANIFEST says `n/a (response...)` for answers)."""
    return sorted(f for f, outcome in manifest(transaction).items() if not outcome.startswith("n/a"))


# --- ITI-44: every request sample, with its expected outcome ------------------------------------


ITI44_REQUESTS = [
    "ihe__01_PatientRegistryRecordAdded1.xml", "ihe__03_PatientRegistryRecordAdded2.xml",
    "ihe__04_PatientRegistryRecordRevised2.xml", "ihe__05_PatientRegistryDuplicatesResolved.xml",
    "ipf__A01_Response.xml", "ipf__A04_Response.xml", "ipf__A08_Response.xml", "ipf__A40_Response.xml",
    "ipf__PIX_FEED_MERGE_Maximal_Request.xml", "ipf__PIX_FEED_REG_Maximal_Request.xml",
    "ipf__PIX_FEED_REV_Maximal_Request.xml", "ipf__iti44-multipatient-request-1.xml",
    "ipf__prpa-invalid.xml", "ipf__prpa-valid.xml",
]


def test_every_iti44_request_sample_is_replayed():
    assert sorted(ITI44_REQUESTS) == request_samples("iti44")


@pytest.mark.parametrize("name", ITI44_REQUESTS)
def test_iti44_sample(pix, name):
    expected = manifest("iti44")[name]
    data = sample_bytes("iti44", name)
    status, answer = pix.call(action_of(data), data)
    assert status == 200 and answer.tag == HL7 + V.ACK
    ack = ack_of(answer)
    request_id = etree.fromstring(data).find(HL7 + "id")
    if expected.startswith("success"):
        assert ack.type_code == "AA", ack.details
        assert ack.details == ()
        assert ack.target_message == V.II(request_id.get("root"), request_id.get("extension") or "")
    else:
        assert expected.startswith("error"), expected
        assert ack.type_code == "AE"
        assert len(ack.details) == 1 and ack.details[0].code in ("100", "101")
    if name == "ipf__iti44-multipatient-request-1.xml":
        assert ack.details[0].location == "/PRPA_IN201301UV02/controlActProcess/subject"


def test_multipatient_add_stores_nothing(pix):
    data = sample_bytes("iti44", "ipf__iti44-multipatient-request-1.xml")
    _, answer = pix.call(action_of(data), data)
    assert ack_of(answer).type_code == "AE"
    from pix.xref import UnknownIdentifier

    with pytest.raises(UnknownIdentifier):
        pix.xref.query(Identifier("761337618155745564", "2.16.756.5.30.1.127.3.10.3"))


# --- the IHE sequence: add, add, revise, merge, then ITI-45 -------------------------------------


def feed_ihe_sequence(pix) -> None:
    for name in ("ihe__01_PatientRegistryRecordAdded1.xml", "ihe__03_PatientRegistryRecordAdded2.xml",
                 "ihe__04_PatientRegistryRecordRevised2.xml", "ihe__05_PatientRegistryDuplicatesResolved.xml"):
        data = sample_bytes("iti44", name)
        _, answer = pix.call(action_of(data), data)
        assert ack_of(answer).type_code == "AA", (name, ack_of(answer).details)


def test_merge_by_iti44_then_query_by_iti45(pix):
    """IHE's PIXV3 examples 01-05 then 06: the answer names what example 07 names — the
    surviving 34827G409 and the SSN — and never the merged 34827G234."""
    feed_ihe_sequence(pix)
    data = sample_bytes("iti45", "ihe__06_PIXQuery1.xml")
    status, answer = pix.call(action_of(data), data)
    assert status == 200 and answer.tag == HL7 + V.QUERY_RESPONSE
    ack = ack_of(answer)
    assert (ack.type_code, ack.query_response_code) == ("AA", "OK")
    assert set(ack.identifiers) == {
        Identifier("34827G409", "1.2.840.114350.1.13.99998.8734"),
        Identifier("999-99-4452", "2.16.840.1.113883.4.1"),
    }
    expected = V.read_ack(etree.fromstring(sample_bytes("iti45", "ihe__07_PIXQuery1Response.xml")))
    assert set(ack.identifiers) == set(expected.identifiers) - {Identifier("38273N237", "1.2.840.114350.1.13.99997.2.3412")}
    assert ack.target_message == V.II("2220c1c4-87ef-11dc-b865-3603d6866807")
    query_id = answer.find(f"{HL7}controlActProcess/{HL7}queryAck/{HL7}queryId")
    assert (query_id.get("root"), query_id.get("extension")) == ("1.2.840.114350.1.13.99999.4567.34", "33452")

    # the subsumed id is no longer known: §3.45.4.2.3, AE / AE / 204 at patientIdentifier
    subsumed = V.build_query(Identifier("34827G234", "1.2.840.114350.1.13.99998.8734"), R)
    _, answer = pix.call(ACTIONS[V.QUERY], subsumed)
    ack = ack_of(answer)
    assert (ack.type_code, ack.query_response_code) == ("AE", "AE")
    assert [(d.code, d.type_code, d.location) for d in ack.details] == [
        ("204", "E", "/PRPA_IN201309UV02/controlActProcess/queryByParameter/parameterList/patientIdentifier/value")
    ]
    assert answer.find(f"{HL7}controlActProcess/{HL7}subject") is None


# --- ITI-45: every request sample ---------------------------------------------------------------


def test_every_iti45_request_sample_is_listed():
    assert request_samples("iti45") == [
        "ihe__06_PIXQuery1.xml",
        "ipf__NistPixpdq_Mesa10501-04_Example_01.xml",
        "ipf__NistPixpdq_Mesa10501-05_Example_01.xml",
        "ipf__NistPixpdq_Mesa10502-03_UnknownId_Example_01.xml",
        "ipf__NistPixpdq_Mesa10503-01_UnknownAssigningAuth_Example_01.xml",
    ]


def feed(pix, *identifiers: Identifier, reliability=(), interaction=V.ADD, subsumed=None):
    record = PatientRecord(tuple(identifiers), Demographics("MESA", ("PIX",)), tuple(reliability))
    _, answer = pix.call(ACTIONS[interaction], V.build_feed(interaction, record, R, subsumed=subsumed))
    return ack_of(answer)


def test_mesa_10501_04_finds_the_id_in_the_data_source(pix):
    assert feed(pix, Identifier("PIX10501", "1.3.6.1.4.1.21367.2005.1.1"),
                Identifier("XYZ10501", "1.3.6.1.4.1.21367.2005.1.2"),
                Identifier("SSN10501", "2.16.840.1.113883.4.1")).type_code == "AA"
    data = sample_bytes("iti45", "ipf__NistPixpdq_Mesa10501-04_Example_01.xml")
    _, answer = pix.call(action_of(data), data)
    ack = ack_of(answer)
    assert manifest("iti45")["ipf__NistPixpdq_Mesa10501-04_Example_01.xml"] == "success"
    assert (ack.type_code, ack.query_response_code) == ("AA", "OK")
    assert ack.identifiers == (Identifier("XYZ10501", "1.3.6.1.4.1.21367.2005.1.2"),)  # only the data source


def test_mesa_10501_05_known_id_without_one_in_the_data_source_is_nf(pix):
    assert feed(pix, Identifier("ABC10501", "1.3.6.1.4.1.21367.2005.1.1"),
                Identifier("SSN10502", "2.16.840.1.113883.4.1")).type_code == "AA"
    data = sample_bytes("iti45", "ipf__NistPixpdq_Mesa10501-05_Example_01.xml")
    _, answer = pix.call(action_of(data), data)
    ack = ack_of(answer)
    assert (ack.type_code, ack.query_response_code, ack.identifiers, ack.details) == ("AA", "NF", (), ())
    assert answer.find(f"{HL7}controlActProcess/{HL7}subject") is None


def test_mesa_10502_03_unknown_id(pix):
    data = sample_bytes("iti45", "ipf__NistPixpdq_Mesa10502-03_UnknownId_Example_01.xml")
    _, answer = pix.call(action_of(data), data)
    ack = ack_of(answer)
    assert manifest("iti45")["ipf__NistPixpdq_Mesa10502-03_UnknownId_Example_01.xml"].startswith("error")
    assert (ack.type_code, ack.query_response_code) == ("AE", "AE")
    assert [(d.code, d.location) for d in ack.details] == [
        ("204", "/PRPA_IN201309UV02/controlActProcess/queryByParameter/parameterList/patientIdentifier/value")
    ]
    echoed = answer.find(f".//{HL7}patientIdentifier/{HL7}value")
    assert echoed.get("extension") == "XX10502"  # the queried-for identifier is returned


def test_mesa_10503_01_unknown_assigning_authority(pix):
    data = sample_bytes("iti45", "ipf__NistPixpdq_Mesa10503-01_UnknownAssigningAuth_Example_01.xml")
    _, answer = pix.call(action_of(data), data)
    ack = ack_of(answer)
    assert (ack.type_code, ack.query_response_code) == ("AE", "AE")
    assert [d.code for d in ack.details] == ["204"]
    assert ack.details[0].location.endswith("/patientIdentifier/value")
    assert "1.3.6.1.4.1.21367.2005.3.3333" in ack.details[0].text


def test_ihe_06_before_any_feed_is_unknown(pix):
    data = sample_bytes("iti45", "ihe__06_PIXQuery1.xml")
    _, answer = pix.call(action_of(data), data)
    assert (ack_of(answer).type_code, ack_of(answer).query_response_code) == ("AE", "AE")


def test_each_unknown_data_source_gets_its_detail(pix):
    """§3.45.4.2.3 case 5: one 204 per unrecognised domain, at that dataSource's value."""
    assert feed(pix, Identifier("P1", IPP), Identifier("Q1", IPP2)).type_code == "AA"
    query = V.build_query(Identifier("P1", IPP), R, data_sources=[IPP2, "1.9.9.1", "1.9.9.2"])
    _, answer = pix.call(ACTIONS[V.QUERY], query)
    ack = ack_of(answer)
    assert (ack.type_code, ack.query_response_code) == ("AE", "AE")
    assert [(d.code, d.location.rsplit("/", 2)[-2]) for d in ack.details] == [
        ("204", "dataSource[2]"), ("204", "dataSource[3]")
    ]


def test_unknown_domain_in_a_feed_is_ae_204_and_stores_nothing(pix):
    ack = feed(pix, Identifier("P9", IPP), Identifier("Z9", "1.9.9.9"))
    assert ack.type_code == "AE"
    assert [d.code for d in ack.details] == ["204"]
    assert ack.details[0].location == "/PRPA_IN201301UV02/controlActProcess/subject/registrationEvent/subject1/patient/id"
    _, answer = pix.call(ACTIONS[V.QUERY], V.build_query(Identifier("P9", IPP), R))
    assert ack_of(answer).query_response_code == "AE"


# --- the INS: qualified identity only ------------------------------------------------------------

NIR = with_key("1850175056123")


def test_ins_of_a_qualified_identity_is_made_known_to_the_registry(pix):
    ins = Identifier(NIR, INS_NIR_TEST)
    assert feed(pix, Identifier("IPP1", IPP), ins, reliability=["VALI"]).type_code == "AA"
    assert pix.xref.is_known(ins.xds_cx())
    _, answer = pix.call(ACTIONS[V.QUERY], V.build_query(Identifier("IPP1", IPP), R, data_sources=[INS_NIR_TEST]))
    assert ack_of(answer).identifiers == (ins,)


def test_ins_without_qualified_identity_is_refused(pix):
    ins = Identifier(NIR, INS_NIR_TEST)
    ack = feed(pix, Identifier("IPP2", IPP), ins, reliability=["PROV"])
    assert ack.type_code == "AE"
    assert [d.code for d in ack.details] == ["102"]
    assert "qualified" in ack.details[0].text
    assert not pix.xref.is_known(ins.xds_cx())


# --- SOAP-level refusals and our own failures ----------------------------------------------------


def test_a_body_that_is_not_the_announced_message_is_a_sender_fault(pix):
    data = sample_bytes("iti45", "ihe__06_PIXQuery1.xml")
    status, answer = pix.call(ACTIONS[V.ADD], data)
    assert status == 400
    assert answer.tag == "{http://www.w3.org/2003/05/soap-envelope}Fault"


class BrokenStore:
    """A store whose database is down (a fake)."""

    def known_domains(self):
        return frozenset({IPP})

    def feed(self, record):
        raise InfrastructureError("connection refused")

    merge = feed

    def query(self, identifier, domains=()):
        raise InfrastructureError("connection refused")

    def is_known(self, patient_id):
        raise InfrastructureError("connection refused")


def test_a_store_failure_is_ar_207_never_a_domain_code():
    with served(BrokenStore()) as pix:
        ack = feed(pix, Identifier("P1", IPP))
        assert ack.type_code == "AR"
        assert [d.code for d in ack.details] == ["207"]
        assert "connection refused" not in ack.details[0].text  # no internals echoed
        _, answer = pix.call(ACTIONS[V.QUERY], V.build_query(Identifier("P1", IPP), R))
        ack = ack_of(answer)
        assert (ack.type_code, ack.query_response_code, [d.code for d in ack.details]) == ("AR", "AE", ["207"])


def test_answers_come_from_the_configured_device(pix):
    _, answer = pix.call(ACTIONS[V.QUERY], V.build_query(Identifier("P1", IPP), R))
    assert answer.find(f"{HL7}sender/{HL7}device/{HL7}id").get("root") == MANAGER_DEVICE
    assert answer.find(f"{HL7}receiver/{HL7}device/{HL7}id").get("root") == R.device_id
