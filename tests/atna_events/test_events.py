"""Every audit event Carnet emits, on success and failure: the wire message field by field, the DICOM
schema (dicom2017c.xsd) and the matching WUSTL schematron (ITI TF-2a/2b §3.x.5.1)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import attrs
import pytest
from lxml import etree

from atna.events import AuditNode, NoAuditBuilder, audit_events, build_event, build_events
from atna_events.validation import assert_valid, failed_asserts, schematron
from registry.ports import AuditRecord, TransactionContext

NOW = datetime(2026, 11, 23, 10, 15, 30, 250000, tzinfo=timezone.utc)
NODE = AuditNode(
    audit_source_id="carnet@carnet.example.org",
    host="carnet.example.org",
    process_id="4242",
    audit_enterprise_site_id="CARNET-TEST",
    endpoints={"ITI-42": "https://carnet.example.org/xds/registry"},
)
INS = "1840575123456^^^&1.2.250.1.213.1.4.10&ISO^NH"
IPP = "IPP-778^^^HOSP&1.2.250.1.71.4.2.7&ISO^PI"
SS_UID = "1.2.250.1.999.1.1.20261123.1"
DOC_A, DOC_B = "1.2.250.1.999.2.1", "1.2.250.1.999.2.2"
REPO = "1.2.250.1.999.3"
HOME = "urn:oid:1.2.250.1.999.4"
CONSUMER = "192.0.2.10"
REPLY_TO = "http://consumer.example.org/reply"
STORED_QUERY = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"


def soap_context(tx: str, path: str, **kw) -> TransactionContext:
    return TransactionContext(
        transaction=tx,
        message_id="urn:uuid:6b0b5b1c-2f0f-4a8e-9a0e-3c5b0e7f8a11",
        remote_host=CONSUMER,
        endpoint=f"https://carnet.example.org{path}",
        reply_to=REPLY_TO,
        **kw,
    )


def hl7_context(tx: str) -> TransactionContext:
    return TransactionContext(transaction=tx, remote_host="192.0.2.20")


@attrs.frozen
class Case:
    """One (transaction, role): the record, the schematron it must pass, what the message must say."""

    name: str
    record: AuditRecord
    schematron: str | None
    event_id: tuple[str, str]  # csd-code, originalText
    type_code: tuple[str, str]  # csd-code, codeSystemName
    action: str
    source: tuple[str, str | None]  # (UserID, NetworkAccessPointID) of RoleIDCode 110153
    destination: tuple[str, str | None]  # same for 110152
    ours: str  # "source" | "destination": which participant is Carnet (AlternativeUserID = pid)
    requestor: str  # "source" | "destination": which system participant is UserIsRequestor
    objects: tuple[tuple[str, str, str, str | None], ...]  # (TypeCode, Role, IDTypeCode csd-code, ID)
    details: tuple[tuple[int, str, bytes], ...] = ()  # (object index, type, decoded value)
    query: tuple[int, bytes] | None = None  # (object index, decoded ParticipantObjectQuery)


CASES = [
    Case(
        "ITI-18 registry",
        AuditRecord(
            transaction="ITI-18", outcome="success",
            context=soap_context("ITI-18", "/xds/registry", user="dr.martin", user_name="Dr Martin",
                                 user_roles=(("10", "1.2.250.1.213.1.1.4.5", "Médecin"),),
                                 purposes_of_use=(("normal", "1.2.250.1.213.1.1.4.248", "Accès normal"),)),
            patient_ids=(INS,), query_id=STORED_QUERY, query_body=b"<query:AdhocQueryRequest/>",
        ),
        "ITI-18_Registry_Stored_Query/110112/mt02DG.sch",
        ("110112", "Query"), ("ITI-18", "IHE Transactions"), "E",
        (REPLY_TO, CONSUMER), ("https://carnet.example.org/xds/registry", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", INS), ("2", "24", "ITI-18", STORED_QUERY)),
        details=((1, "QueryEncoding", b"UTF-8"),),
        query=(1, b"<query:AdhocQueryRequest/>"),
    ),
    Case(
        "ITI-41 repository",
        AuditRecord(
            transaction="ITI-41", outcome="success", context=soap_context("ITI-41", "/xds/repository"),
            patient_ids=(INS,), submission_set_unique_id=SS_UID, document_unique_ids=(DOC_A,),
        ),
        "ITI-41_Provide_and_Register_Document_Set-b/110107/mt01DG.sch",
        ("110107", "Import"), ("ITI-41", "IHE Transactions"), "C",
        (REPLY_TO, CONSUMER), ("https://carnet.example.org/xds/repository", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", INS), ("2", "20", "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", SS_UID)),
    ),
    Case(
        "ITI-42 registry",
        AuditRecord(
            transaction="ITI-42", outcome="success",
            context=TransactionContext("ITI-42", remote_host="192.0.2.30", reply_to=None, endpoint=None),
            patient_ids=(INS,), submission_set_unique_id=SS_UID,
        ),
        "ITI-42_Register_Document_Set-b/110107/mt01DG.sch",
        ("110107", "Import"), ("ITI-42", "IHE Transactions"), "C",
        ("http://www.w3.org/2005/08/addressing/anonymous", "192.0.2.30"),
        ("https://carnet.example.org/xds/registry", "carnet.example.org"),  # from AuditNode.endpoints
        ours="destination", requestor="source",
        objects=(("1", "1", "2", INS), ("2", "20", "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", SS_UID)),
    ),
    Case(
        "ITI-42 document-source",
        AuditRecord(
            transaction="ITI-42", outcome="success", role="document-source",
            context=TransactionContext("ITI-42"),
            patient_ids=(INS,), submission_set_unique_id=SS_UID,
            peer_user_id="https://registry.example.org/xds/registry",
        ),
        "ITI-42_Register_Document_Set-b/110106/mt01DG.sch",
        ("110106", "Export"), ("ITI-42", "IHE Transactions"), "R",
        ("http://www.w3.org/2005/08/addressing/anonymous", "carnet.example.org"),
        ("https://registry.example.org/xds/registry", "registry.example.org"),
        ours="source", requestor="source",
        objects=(("1", "1", "2", INS), ("2", "20", "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", SS_UID)),
    ),
    Case(
        "ITI-43 repository",
        AuditRecord(
            transaction="ITI-43", outcome="success", context=soap_context("ITI-43", "/xds/repository"),
            patient_ids=(INS,),
            document_refs=((DOC_A, REPO, HOME), (DOC_B, REPO, HOME)),
        ),
        "ITI-43_Retrieve_Document_Set/110106/mt01DG.sch",
        ("110106", "Export"), ("ITI-43", "IHE Transactions"), "R",
        ("https://carnet.example.org/xds/repository", "carnet.example.org"), (REPLY_TO, CONSUMER),
        ours="source", requestor="destination",
        objects=(("1", "1", "2", INS), ("2", "3", "9", DOC_A), ("2", "3", "9", DOC_B)),
        details=(
            (1, "Repository Unique Id", REPO.encode()), (1, "ihe:homeCommunityID", HOME.encode()),
            (2, "Repository Unique Id", REPO.encode()), (2, "ihe:homeCommunityID", HOME.encode()),
        ),
    ),
    Case(
        "ITI-43 repository from document_unique_ids",
        AuditRecord(
            transaction="ITI-43", outcome="success", context=soap_context("ITI-43", "/xds/repository"),
            document_unique_ids=(DOC_A,), repository_unique_id=REPO, home_community_id=HOME,
        ),
        "ITI-43_Retrieve_Document_Set/110106/mt01DG.sch",
        ("110106", "Export"), ("ITI-43", "IHE Transactions"), "R",
        ("https://carnet.example.org/xds/repository", "carnet.example.org"), (REPLY_TO, CONSUMER),
        ours="source", requestor="destination",
        objects=(("2", "3", "9", DOC_A),),
        details=((0, "Repository Unique Id", REPO.encode()), (0, "ihe:homeCommunityID", HOME.encode())),
    ),
    Case(
        "ITI-8 pix-manager A01",
        AuditRecord(
            transaction="ITI-8", outcome="success", context=hl7_context("ITI-8"), patient_ids=(INS,),
            hl7_message_id="MSG-0001", peer_user_id="HOSP|ADT", local_user_id="CARNET|PIX",
        ),
        "ITI-08_Patient_Identity_Feed/110110/mt02DG.sch",
        ("110110", "Patient Record"), ("ITI-8", "IHE Transactions"), "C",
        ("HOSP|ADT", "192.0.2.20"), ("CARNET|PIX", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", INS),),
        details=((0, "MSH-10", b"MSG-0001"),),
    ),
    Case(
        "ITI-8 pix-manager A08",
        AuditRecord(
            transaction="ITI-08", outcome="success", action="U", context=hl7_context("ITI-8"), patient_ids=(IPP,),
            hl7_message_id="MSG-0002", peer_user_id="HOSP|ADT", local_user_id="CARNET|PIX",
        ),
        "ITI-08_Patient_Identity_Feed/110110/mt02DG.sch",
        ("110110", "Patient Record"), ("ITI-8", "IHE Transactions"), "U",
        ("HOSP|ADT", "192.0.2.20"), ("CARNET|PIX", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", IPP),),
        details=((0, "MSH-10", b"MSG-0002"),),
    ),
    Case(
        "ITI-8 registry A04",
        AuditRecord(
            transaction="ITI-8", outcome="success", role="registry", context=hl7_context("ITI-8"),
            patient_ids=(INS,), hl7_message_id="MSG-0003", peer_user_id="HOSP|ADT", local_user_id="CARNET|XDS",
        ),
        "ITI-08_Patient_Identity_Feed/110110/mt02DG.sch",
        ("110110", "Patient Record"), ("ITI-8", "IHE Transactions"), "C",
        ("HOSP|ADT", "192.0.2.20"), ("CARNET|XDS", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", INS),),
        details=((0, "MSH-10", b"MSG-0003"),),
    ),
    Case(
        "ITI-9 pix-manager",
        AuditRecord(
            transaction="ITI-9", outcome="success", context=hl7_context("ITI-9"), patient_ids=(IPP, INS),
            hl7_message_id="Q-0001", query_id="QRY-42", query_body=b"QPD|IHE PIX Query|QRY-42|IPP-778^^^HOSP",
            peer_user_id="HOSP|PIXCONSUMER", local_user_id="CARNET|PIX",
        ),
        "ITI-09_PIX_Query/110112/mt02DG.sch",
        ("110112", "Query"), ("ITI-9", "IHE Transactions"), "E",
        ("HOSP|PIXCONSUMER", "192.0.2.20"), ("CARNET|PIX", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", IPP), ("1", "1", "2", INS), ("2", "24", "ITI-9", "QRY-42")),
        details=((2, "MSH-10", b"Q-0001"),),
        query=(2, b"QPD|IHE PIX Query|QRY-42|IPP-778^^^HOSP"),
    ),
    Case(
        "ITI-10 pix-manager",
        AuditRecord(
            transaction="ITI-10", outcome="success", context=TransactionContext("ITI-10"),
            patient_ids=(INS, IPP), hl7_message_id="N-0001",
            local_user_id="CARNET|PIX", peer_user_id="HOSP|PIXCONSUMER", peer_address="192.0.2.40",
        ),
        "ITI-10_PIX_Update_Notification/110110/mt01DG.sch",
        ("110110", "Patient Record"), ("ITI-10", "IHE Transactions"), "R",
        ("CARNET|PIX", "carnet.example.org"), ("HOSP|PIXCONSUMER", "192.0.2.40"),
        ours="source", requestor="source",
        objects=(("1", "1", "2", INS), ("1", "1", "2", IPP)),
        details=((0, "MSH-10", b"N-0001"), (1, "MSH-10", b"N-0001")),
    ),
    Case(
        "ITI-44 pix-manager add",
        AuditRecord(
            transaction="ITI-44", outcome="success", context=soap_context("ITI-44", "/pix/v3"),
            patient_ids=(INS,), hl7_message_id="1.2.250.1.999.5^M-1",
        ),
        "ITI-44_Patient_Identity_Feed_HL7_V3/110110/mt02DG.sch",
        ("110110", "Patient Record"), ("ITI-44", "IHE Transactions"), "C",
        (REPLY_TO, CONSUMER), ("https://carnet.example.org/pix/v3", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", INS),),
        details=((0, "II", b"1.2.250.1.999.5^M-1"),),
    ),
    Case(
        "ITI-45 pix-manager",
        AuditRecord(
            transaction="ITI-45", outcome="success", context=soap_context("ITI-45", "/pix/v3"),
            patient_ids=(IPP,), hl7_message_id="1.2.250.1.999.5^Q-1", query_body=b"<queryByParameter/>",
        ),
        "ITI-45_PIX_V3_Query/110112/mt02DG.sch",
        ("110112", "Query"), ("ITI-45", "IHE Transactions"), "E",
        (REPLY_TO, CONSUMER), ("https://carnet.example.org/pix/v3", "carnet.example.org"),
        ours="destination", requestor="source",
        objects=(("1", "1", "2", IPP), ("2", "24", "ITI-45", "1.2.250.1.999.5^Q-1")),
        query=(1, b"<queryByParameter/>"),
    ),
    Case(
        "ITI-46 pix-manager",
        AuditRecord(
            transaction="ITI-46", outcome="success", context=TransactionContext("ITI-46"),
            patient_ids=(INS,), hl7_message_id="1.2.250.1.999.5^N-1",
            peer_user_id="https://consumer.example.org/pix/notify",
        ),
        "ITI-46_PIX_V3_Update_Notification/110110/mt01DG.sch",
        ("110110", "Patient Record"), ("ITI-46", "IHE Transactions"), "R",
        ("http://www.w3.org/2005/08/addressing/anonymous", "carnet.example.org"),
        ("https://consumer.example.org/pix/notify", "consumer.example.org"),
        ours="source", requestor="source",
        objects=(("1", "1", "2", INS),),
        details=((0, "II", b"1.2.250.1.999.5^N-1"),),
    ),
]

OUTCOMES = [("success", "0", ()), ("minor-failure", "4", ("XDSRegistryMetadataError",)),
            ("serious-failure", "8", ("XDSRegistryError", "XDSRepositoryError"))]


def _participant(doc: etree._Element, role: str) -> etree._Element:
    found = doc.xpath(f"ActiveParticipant[RoleIDCode/@csd-code='{role}']")
    assert len(found) == 1, etree.tostring(doc)
    return found[0]


def _check(case: Case, message: bytes, indicator: str, errors: tuple[str, ...]) -> None:
    doc = assert_valid(message, case.schematron)
    ei = doc.find("EventIdentification")
    assert ei.get("EventActionCode") == case.action
    assert ei.get("EventOutcomeIndicator") == indicator
    assert ei.get("EventDateTime") == "2026-11-23T10:15:30.250000Z"
    eid = ei.find("EventID")
    assert (eid.get("csd-code"), eid.get("codeSystemName"), eid.get("originalText")) == (*case.event_id[:1], "DCM", case.event_id[1])
    (etc,) = ei.findall("EventTypeCode")
    assert (etc.get("csd-code"), etc.get("codeSystemName")) == case.type_code
    desc = ei.find("EventOutcomeDescription")
    assert (desc.text if desc is not None else None) == (" ".join(errors) or None)

    src, dst = _participant(doc, "110153"), _participant(doc, "110152")
    assert (src.get("UserID"), src.get("NetworkAccessPointID")) == case.source
    assert (dst.get("UserID"), dst.get("NetworkAccessPointID")) == case.destination
    for p, (_, nap) in ((src, case.source), (dst, case.destination)):
        assert p.get("NetworkAccessPointTypeCode") == ("2" if nap and nap[0].isdigit() else "1")
        assert p.find("RoleIDCode").get("codeSystemName") == "DCM"
    ours, theirs = (src, dst) if case.ours == "source" else (dst, src)
    assert ours.get("AlternativeUserID") == "4242"
    assert theirs.get("AlternativeUserID") is None
    requestor, other = (src, dst) if case.requestor == "source" else (dst, src)
    assert (requestor.get("UserIsRequestor"), other.get("UserIsRequestor")) == ("true", "false")

    source_id = doc.find("AuditSourceIdentification")
    assert (source_id.get("AuditSourceID"), source_id.get("AuditEnterpriseSiteID")) == (
        "carnet@carnet.example.org", "CARNET-TEST")
    assert source_id.find("AuditSourceTypeCode").get("csd-code") == "4"

    objects = doc.findall("ParticipantObjectIdentification")
    got = tuple(
        (o.get("ParticipantObjectTypeCode"), o.get("ParticipantObjectTypeCodeRole"),
         o.find("ParticipantObjectIDTypeCode").get("csd-code"), o.get("ParticipantObjectID"))
        for o in objects
    )
    assert got == case.objects
    for o in objects:
        idt = o.find("ParticipantObjectIDTypeCode")
        expected_system = {"2": "RFC-3881", "9": "RFC-3881"}.get(idt.get("csd-code"))
        if expected_system:
            assert idt.get("codeSystemName") == expected_system
    got_details = tuple(
        (i, d.get("type"), base64.b64decode(d.get("value")))
        for i, o in enumerate(objects) for d in o.findall("ParticipantObjectDetail")
    )
    assert got_details == case.details
    if case.query is not None:
        index, body = case.query
        assert base64.b64decode(objects[index].findtext("ParticipantObjectQuery")) == body


@pytest.mark.parametrize("outcome,indicator,errors", OUTCOMES, ids=[o[0] for o in OUTCOMES])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_event(case: Case, outcome: str, indicator: str, errors: tuple[str, ...]) -> None:
    record = attrs.evolve(case.record, outcome=outcome, error_codes=errors)
    (message,) = build_events(record, NODE, NOW)
    assert build_event(record, NODE, NOW) == message
    _check(case, message, indicator, errors)


def test_human_requestor_and_purpose_of_use() -> None:
    """XUA subject (ITI TF-2b §3.40.4.2): a third ActiveParticipant, requestor, with its roles; the DMP
    access mode as PurposeOfUse."""
    doc = etree.fromstring(build_event(CASES[0].record, NODE, NOW))
    (human,) = doc.xpath("ActiveParticipant[@UserID='dr.martin']")
    assert (human.get("UserIsRequestor"), human.get("UserName")) == ("true", "Dr Martin")
    assert [(r.get("csd-code"), r.get("codeSystemName"), r.get("originalText")) for r in human.findall("RoleIDCode")] == [
        ("10", "1.2.250.1.213.1.1.4.5", "Médecin")]
    (pou,) = doc.find("EventIdentification").findall("PurposeOfUse")
    assert (pou.get("csd-code"), pou.get("codeSystemName")) == ("normal", "1.2.250.1.213.1.1.4.248")


@pytest.mark.parametrize("transaction,schematron_path", [
    ("ITI-8", "ITI-08_Patient_Identity_Feed/110110/mt04DG.sch"),
    ("ITI-44", "ITI-44_Patient_Identity_Feed_HL7_V3/110110/mt02DG.sch"),
])
@pytest.mark.parametrize("outcome,indicator", [("success", "0"), ("minor-failure", "4")])
def test_merge_gives_delete_then_update(transaction, schematron_path, outcome, indicator) -> None:
    """A40 / PRPA_IN201304UV02 (ITI TF-2a §3.8.5.2.2): D for the subsumed patient, U for the survivor."""
    record = AuditRecord(
        transaction=transaction, outcome=outcome,
        context=hl7_context(transaction) if transaction == "ITI-8" else soap_context(transaction, "/pix/v3"),
        patient_ids=(INS,), merged_patient_ids=(IPP,), hl7_message_id="MRG-1",
        peer_user_id="HOSP|ADT" if transaction == "ITI-8" else None, local_user_id="CARNET|PIX",
    )
    messages = build_events(record, NODE, NOW)
    assert len(messages) == 2
    docs = [assert_valid(m, schematron_path) for m in messages]
    assert [d.find("EventIdentification").get("EventActionCode") for d in docs] == ["D", "U"]
    assert [d.find("EventIdentification").get("EventOutcomeIndicator") for d in docs] == [indicator, indicator]
    assert [d.find("ParticipantObjectIdentification").get("ParticipantObjectID") for d in docs] == [IPP, INS]
    with pytest.raises(ValueError, match="build_events"):
        build_event(record, NODE, NOW)


def test_schematron_catches_a_missing_destination() -> None:
    """The checks above can fail: drop the Destination from a valid ITI-18 event."""
    doc = etree.fromstring(build_event(CASES[0].record, NODE, NOW))
    doc.remove(_participant(doc, "110152"))
    failures = failed_asserts(schematron("ITI-18_Registry_Stored_Query/110112/mt02DG.sch"), doc)
    assert any("Destination" in f for f in failures)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_schematron_is_live(case: Case) -> None:
    """Each schematron used above rejects a wrong EventActionCode and a missing process id on our side
    (so none of them passes everything, e.g. through a context that never matches)."""
    doc = etree.fromstring(build_events(case.record, NODE, NOW)[0])
    ei = doc.find("EventIdentification")
    ei.set("EventActionCode", "C" if case.action == "E" else "E")
    for p in doc.findall("ActiveParticipant"):
        p.attrib.pop("AlternativeUserID", None)
    failures = failed_asserts(schematron(case.schematron), doc)
    assert any("EventActionCode" in f for f in failures), failures
    assert any("AlternativeUserID" in f for f in failures), failures


def test_unparseable_request_still_audited() -> None:
    """A request that never parsed (no submission set known) still gives a schema-valid failure event;
    the schematron then rightly misses the SubmissionSet id (ITI TF-2b §3.42.7.1.2 makes it mandatory)."""
    record = AuditRecord(transaction="ITI-42", outcome="minor-failure", context=soap_context("ITI-42", "/xds/registry"),
                         error_codes=("XDSRegistryMetadataError",))
    doc = assert_valid(build_event(record, NODE, NOW), None)
    assert doc.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    (ss,) = doc.findall("ParticipantObjectIdentification")
    assert ss.get("ParticipantObjectTypeCodeRole") == "20" and ss.get("ParticipantObjectID") is None


@pytest.mark.parametrize("transaction,type_code,type_text", [
    ("application-start", "110120", "Application Start"),
    ("application-stop", "110121", "Application Stop"),
])
@pytest.mark.parametrize("outcome,indicator", [("success", "0"), ("serious-failure", "8")])
def test_application_activity(transaction, type_code, type_text, outcome, indicator) -> None:
    """DICOM PS3.15 A.5.3.1: EventID 110100, the application (110150) and its launcher (110151)."""
    record = AuditRecord(transaction=transaction, outcome=outcome, context=TransactionContext(transaction, user="carnet-svc"))
    doc = assert_valid(build_event(record, NODE, NOW), None)
    ei = doc.find("EventIdentification")
    assert (ei.get("EventActionCode"), ei.get("EventOutcomeIndicator")) == ("E", indicator)
    assert (ei.find("EventID").get("csd-code"), ei.find("EventID").get("codeSystemName")) == ("110100", "DCM")
    assert (ei.find("EventTypeCode").get("csd-code"), ei.find("EventTypeCode").get("originalText")) == (type_code, type_text)
    app = _participant(doc, "110150")
    assert (app.get("UserID"), app.get("AlternativeUserID"), app.get("UserIsRequestor"),
            app.get("NetworkAccessPointID")) == ("carnet", "4242", "false", "carnet.example.org")
    launcher = _participant(doc, "110151")
    assert (launcher.get("UserID"), launcher.get("UserIsRequestor")) == ("carnet-svc", "true")
    assert doc.findall("ParticipantObjectIdentification") == []


@pytest.mark.parametrize("outcome,indicator", [("minor-failure", "4"), ("serious-failure", "8")])
def test_node_authentication_failure(outcome, indicator) -> None:
    """ITI TF-2a §3.19.6: a refused TLS peer is a Security Alert (110113) of type Node Authentication (110126)."""
    record = AuditRecord(
        transaction="node-authentication-failure", outcome=outcome,
        context=TransactionContext("node-authentication-failure", remote_host="203.0.113.9",
                                   endpoint="https://carnet.example.org:8443/"),
        peer_user_id="CN=intruder,O=Nowhere", error_codes=("certificate verify failed: unable to get local issuer",),
    )
    doc = assert_valid(build_event(record, NODE, NOW), None)
    ei = doc.find("EventIdentification")
    assert (ei.find("EventID").get("csd-code"), ei.find("EventTypeCode").get("csd-code")) == ("110113", "110126")
    assert (ei.get("EventActionCode"), ei.get("EventOutcomeIndicator")) == ("E", indicator)
    reporter, performer = doc.findall("ActiveParticipant")
    assert (reporter.get("UserID"), reporter.get("UserIsRequestor"), reporter.get("AlternativeUserID")) == (
        "https://carnet.example.org:8443/", "true", "4242")
    assert (performer.get("UserID"), performer.get("NetworkAccessPointID"), performer.get("UserIsRequestor")) == (
        "CN=intruder,O=Nowhere", "203.0.113.9", "false")
    (subject,) = doc.findall("ParticipantObjectIdentification")
    assert (subject.get("ParticipantObjectID"), subject.get("ParticipantObjectTypeCode"),
            subject.get("ParticipantObjectTypeCodeRole")) == ("CN=intruder,O=Nowhere", "2", "13")
    detail = subject.find("ParticipantObjectDetail")
    assert detail.get("type") == "Alert Description"
    assert base64.b64decode(detail.get("value")) == b"certificate verify failed: unable to get local issuer"


def test_generic_security_alert_type() -> None:
    """E.g. the DMP's bris de glace: Emergency Override Started (110127)."""
    record = AuditRecord(transaction="security-alert", outcome="success", alert_type="110127",
                         context=TransactionContext("security-alert", user="dr.martin", remote_host="192.0.2.10"))
    doc = assert_valid(build_event(record, NODE, NOW), None)
    etc = doc.find("EventIdentification/EventTypeCode")
    assert (etc.get("csd-code"), etc.get("originalText")) == ("110127", "Emergency Override Started")
    with pytest.raises(ValueError, match="CID 403"):
        build_event(attrs.evolve(record, alert_type="999999"), NODE, NOW)


def test_offset_kept_and_naive_time_refused() -> None:
    paris = timezone(timedelta(hours=1))
    doc = etree.fromstring(build_event(CASES[1].record, NODE, datetime(2026, 11, 23, 11, 0, tzinfo=paris)))
    assert doc.find("EventIdentification").get("EventDateTime") == "2026-11-23T11:00:00+01:00"
    with pytest.raises(ValueError, match="aware"):
        build_event(CASES[1].record, NODE, datetime(2026, 11, 23, 11, 0))


def test_unknown_transaction_or_role_is_a_typed_error() -> None:
    with pytest.raises(NoAuditBuilder):
        audit_events(attrs.evolve(CASES[1].record, transaction="ITI-99"), NODE, NOW)
    with pytest.raises(NoAuditBuilder):
        audit_events(attrs.evolve(CASES[1].record, role="pix-manager"), NODE, NOW)
    with pytest.raises(ValueError, match="outcome"):
        audit_events(attrs.evolve(CASES[1].record, outcome="so-so"), NODE, NOW)
