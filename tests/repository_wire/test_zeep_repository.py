"""A SOAP client nobody here wrote (zeep) provides a document through the repository's WSDL
(inline base64: zeep cannot send MTOM) and retrieves it: zeep decodes the MTOM/XOP response."""

from __future__ import annotations

import base64
import hashlib

import pytest
import zeep
from lxml import etree
from zeep.plugins import HistoryPlugin

from registry import constants as C
from repository_wire.xds_wire import (
    ACTION_ITI41,
    ACTION_ITI43,
    NS,
    NS_XOP,
    REPO_UID,
    SELF5,
    Doc,
    assert_schema_valid,
    entry_of,
    error_codes,
    new_oid,
    pnr,
    retrieve_request,
    sha1,
)

pytestmark = pytest.mark.integration

PROVIDE = "DocumentRepository_ProvideAndRegisterDocumentSet-b"
RETRIEVE = "DocumentRepository_RetrieveDocumentSet"


def _call(client, operation: str, request: etree._Element):
    """Our WSDL declares permissive content (xsd:any): the request's children go as `_value_1`."""
    return client.service[operation](_value_1=list(request), _attr_1=dict(request.attrib))


def _body(envelope: etree._Element) -> etree._Element:
    return next(c for c in envelope.find("env:Body", NS) if isinstance(c.tag, str))


def test_zeep_provides_inline_and_retrieves_through_the_wsdl(carnet):
    carnet.store.add_patient(SELF5)
    history = HistoryPlugin()
    client = zeep.Client(carnet.repository_url + "?wsdl", plugins=[history])
    content = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(6000))  # 192 kB, binary
    uid = new_oid()

    result = _call(client, PROVIDE, pnr(SELF5, [Doc(content, uid, "application/pdf")]))
    sent = history.last_sent["envelope"]
    assert sent.findtext(".//wsa:Action", namespaces=NS) == ACTION_ITI41  # from the WSDL's wsam:Action
    assert base64.b64decode(sent.findtext(".//xdsb:Document", namespaces=NS)) == content  # inline base64
    assert result["_attr_1"]["status"] == C.RESPONSE_SUCCESS
    assert_schema_valid(_body(history.last_received["envelope"]))
    entry = entry_of(carnet.registry_url, SELF5, uid)
    assert (entry.hash, entry.size, entry.repository_unique_id) == (sha1(content), len(content), REPO_UID)

    result = _call(client, RETRIEVE, retrieve_request([(REPO_UID, uid)]))
    assert history.last_sent["envelope"].findtext(".//wsa:Action", namespaces=NS) == ACTION_ITI43
    # Carnet answered MTOM; zeep decoded the XOP package (the Include became base64 text)
    assert history.last_received["http_headers"]["Content-Type"].startswith("multipart/related")
    received = _body(history.last_received["envelope"])
    assert received.find(f".//{{{NS_XOP}}}Include") is None
    assert_schema_valid(received)
    registry_response, document_response = result["_value_1"]
    assert registry_response["_attr_1"]["status"] == C.RESPONSE_SUCCESS
    assert document_response.findtext("xdsb:DocumentUniqueId", namespaces=NS) == uid
    assert document_response.findtext("xdsb:mimeType", namespaces=NS) == "application/pdf"
    retrieved = base64.b64decode(document_response.findtext("xdsb:Document", namespaces=NS))
    assert retrieved == content and sha1(retrieved) == entry.hash


def test_zeep_sees_an_unknown_document_as_a_normal_failure_response(carnet):
    """Not a SOAP fault (zeep would raise): a RetrieveDocumentSetResponse with Failure."""
    history = HistoryPlugin()
    client = zeep.Client(carnet.repository_url + "?wsdl", plugins=[history])
    result = _call(client, RETRIEVE, retrieve_request([(REPO_UID, "1.2.3.404")]))
    (registry_response,) = result["_value_1"]
    assert registry_response["_attr_1"]["status"] == C.RESPONSE_FAILURE
    received = _body(history.last_received["envelope"])
    assert error_codes(received) == ["XDSDocumentUniqueIdError"]
    assert_schema_valid(received)
