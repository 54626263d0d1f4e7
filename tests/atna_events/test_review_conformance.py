"""Review of the XDS audit events against ITI TF-2a/2b "Audit Record Considerations": what the
endpoints put in the `AuditRecord` reaches the message the TF asks for.

ITI TF-2a §3.18.5.1.2 (Document Registry, Query Parameters ParticipantObject): ParticipantObjectQuery
(M) is "the AdhocQueryRequest, base64 encoded"; a ParticipantObjectDetail of type
"urn:ihe:iti:xca:2010:homeCommunityId" carries "the value of the homeCommunityID ..., if known".
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from lxml import etree

from atna.events import AuditNode, build_event
from atna_events.validation import assert_valid
from iti18.sq import Q, R, q, request_xml
from registry import constants as C
from registry.db import create_schema, make_engine
from registry.endpoint import DocumentRegistry
from registry.ports import MemoryAuditSink, TransactionContext
from registry.store import RegistryStore
from soap.envelope import SoapRequest

NOW = datetime(2026, 11, 23, 10, 15, 30, tzinfo=timezone.utc)
NODE = AuditNode(audit_source_id="carnet@carnet.example.org", host="carnet.example.org", process_id="4242")
SCHEMATRON = "ITI-18_Registry_Stored_Query/110112/mt02DG.sch"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
PATIENT = "1840575123456^^^&1.2.250.1.213.1.4.10&ISO"
HOME = "urn:oid:1.2.250.1.999.4"
DETAIL_HOME = "urn:ihe:iti:xca:2010:homeCommunityId"


def _registry(tmp_path) -> tuple[DocumentRegistry, MemoryAuditSink]:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    create_schema(engine)
    sink = MemoryAuditSink()
    return DocumentRegistry(store=RegistryStore(engine), audit=sink), sink


def _request(body: bytes) -> SoapRequest:
    el = etree.fromstring(body)
    return SoapRequest(
        action=C.ACTION_ITI18, message_id="urn:uuid:6b0b5b1c-2f0f-4a8e-9a0e-3c5b0e7f8a11", to=None,
        reply_to="http://consumer.example.org/reply", relates_to=None, header_elements=(), body=el, envelope=el,
    )


def _context() -> TransactionContext:
    return TransactionContext(
        transaction="ITI-18", remote_host="192.0.2.10", endpoint="https://carnet.example.org/xds/registry",
        reply_to="http://consumer.example.org/reply",
    )


def _query_object(record) -> etree._Element:
    doc = assert_valid(build_event(record, NODE, NOW), SCHEMATRON)
    (query,) = doc.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
    return query


def test_iti18_audit_names_the_home_community_of_the_query(tmp_path) -> None:
    """rim:AdhocQuery/@home is the homeCommunityID the TF asks for "if known" (ITI TF-2a §3.18.5.1.2)."""
    registry, sink = _registry(tmp_path)
    body = request_xml(FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", q(PATIENT)),
                                         ("$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')")],
                       home=HOME)
    registry.registry_stored_query(_request(body), _context())
    (record,) = sink.events
    query = _query_object(record)
    details = {d.get("type"): d.get("value") for d in query.findall("ParticipantObjectDetail")}
    assert base64.b64decode(details[DETAIL_HOME]) == HOME.encode()
    assert base64.b64decode(details["QueryEncoding"]) == b"UTF-8"


def test_iti18_unparseable_request_still_carries_the_adhoc_query_request(tmp_path) -> None:
    """A query:AdhocQueryRequest the registry refuses (here: no query:ResponseOption) is still audited
    with the mandatory ParticipantObjectQuery (the AdhocQueryRequest, base64) and the stored query id
    it names (ITI TF-2a §3.18.5.1.2)."""
    registry, sink = _registry(tmp_path)
    root = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    etree.SubElement(root, R + "AdhocQuery", id=FIND_DOCUMENTS, home=HOME)
    body = etree.tostring(root)
    registry.registry_stored_query(_request(body), _context())
    (record,) = sink.events
    assert record.outcome != "success"
    query = _query_object(record)
    assert query.get("ParticipantObjectID") == FIND_DOCUMENTS
    sent = etree.fromstring(base64.b64decode(query.findtext("ParticipantObjectQuery")))
    assert sent.tag == Q + "AdhocQueryRequest"
    details = {d.get("type"): d.get("value") for d in query.findall("ParticipantObjectDetail")}
    assert base64.b64decode(details[DETAIL_HOME]) == HOME.encode()
