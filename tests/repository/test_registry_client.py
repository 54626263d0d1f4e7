"""The RegistryClient port (repository → registry, ITI-42): in process and over SOAP.

The SOAP client talks to a real Carnet registry listening on 127.0.0.1 (SQLite and PostgreSQL);
nothing is mocked. A whole ITI-41 (handler level) then registers through it.
"""

from __future__ import annotations

import base64
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from lxml import etree

from carnet_support import running_carnet
from iti42.builders import PATIENT, document, fresh_oid, one_document, sha1, submission_set
from registry import constants as C
from registry.endpoint import DocumentRegistry
from registry.errors import XdsErrorCode as E
from registry.store import RegistryStore
from repository import pending as P
from repository import schema as RS
from repository.blobs import object_key
from repository.blobs.memory import MemoryBlobStore
from repository.endpoint import ACTION_ITI41, DocumentRepository
from repository.keys import KeyVault, MasterKey
from repository.registry_client import (
    InProcessRegistryClient,
    RegistryUnavailable,
    SoapRegistryClient,
    parse_registry_response,
)
from soap.envelope import SoapRequest
from soap.xmlparse import parse_xml
from support import need_shared


@pytest.fixture
def carnet(engine, tmp_path):
    with running_carnet(engine, tmp_path) as c:
        c.store.add_patient(PATIENT)
        yield c


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_soap_client_registers_and_reports_registry_errors(carnet):
    client = SoapRegistryClient(carnet.registry_url, timeout=10)
    uid = fresh_oid()
    outcome = client.register(one_document(document(unique_id=uid)))
    assert outcome.status == C.RESPONSE_SUCCESS and not outcome.failed and outcome.errors == ()
    assert client.known_document_unique_ids([uid, "1.2.3.unknown"]) == {uid}
    [event] = [e for e in carnet.audit.events if e.transaction == "ITI-42"]
    assert event.outcome == "success" and event.document_unique_ids == (uid,)

    refused = client.register(one_document(document(unique_id=fresh_oid(), patient="X^^^&1.2.3&ISO"),
                                           ss=submission_set(patient="X^^^&1.2.3&ISO")))
    assert refused.failed and refused.status == C.RESPONSE_FAILURE
    assert E.XDSUnknownPatientId in {e.code for e in refused.errors if e.is_error}

    other = client.register(one_document(document(unique_id=uid, content=b"other content")))
    assert other.failed and E.XDSNonIdenticalHash in {e.code for e in other.errors}


def test_soap_client_to_a_closed_port_is_unavailable_and_not_delivered():
    client = SoapRegistryClient(f"http://127.0.0.1:{_closed_port()}/xds/registry", timeout=5)
    with pytest.raises(RegistryUnavailable) as info:
        client.register(one_document())
    assert info.value.delivered is False
    with pytest.raises(RegistryUnavailable):
        client.known_document_unique_ids(["1.2.3"])


class _Answer(BaseHTTPRequestHandler):
    status = 200
    body = b""
    content_type = "application/soap+xml"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(self.status)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_registry():
    """An HTTP server on 127.0.0.1 answering whatever the test sets (a registry misbehaving)."""
    handler = type("Handler", (_Answer,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/xds/registry"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_soap_client_maps_misbehaving_answers(fake_registry):
    handler, url = fake_registry
    client = SoapRegistryClient(url, timeout=5)
    handler.status, handler.body = 503, b"busy"
    with pytest.raises(RegistryUnavailable) as info:
        client.register(one_document())
    assert info.value.delivered is False
    handler.status, handler.body = 200, b"<html>not soap</html>"
    with pytest.raises(RegistryUnavailable) as info:
        client.register(one_document())
    assert info.value.delivered is True  # the registry may have registered: never delete its blobs
    handler.status = 500
    handler.body = (b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault>'
                    b"<env:Code><env:Value>env:Receiver</env:Value></env:Code><env:Reason>"
                    b'<env:Text xml:lang="en">database down</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>')
    outcome = client.register(one_document())
    assert outcome.failed and [e.code for e in outcome.errors] == [E.XDSRegistryError]
    assert "database down" in outcome.errors[0].message


def test_parse_registry_response_keeps_every_error_and_unknown_codes():
    sample = need_shared("samples", "iti41", "ihe__ProvideAndRegisterDocumentSet-bResponse.xml")
    assert parse_registry_response(parse_xml(sample.read_bytes())).failed is False
    response = etree.fromstring(f"""<rs:RegistryResponse xmlns:rs="{C.NS_RS}" status="{C.RESPONSE_FAILURE}">
      <rs:RegistryErrorList>
        <rs:RegistryError errorCode="XDSUnknownPatientId" codeContext="who?" location="ss" severity="{C.SEVERITY_ERROR}"/>
        <rs:RegistryError errorCode="XDSSomethingNew" codeContext="new" severity="{C.SEVERITY_WARNING}"/>
      </rs:RegistryErrorList></rs:RegistryResponse>""".encode())
    outcome = parse_registry_response(response)
    assert outcome.failed
    first, second = outcome.errors
    assert (first.code, first.message, first.location, first.is_error) == (E.XDSUnknownPatientId, "who?", "ss", True)
    # relayed as sent (ITI TF-2b §3.41.4.1.3), not folded into XDSRegistryError
    assert (second.code, second.code.value, second.message, second.is_error) == (
        "XDSSomethingNew", "XDSSomethingNew", "new", False)
    assert not isinstance(second.code, E)
    blank = etree.fromstring(f"""<rs:RegistryResponse xmlns:rs="{C.NS_RS}" status="{C.RESPONSE_FAILURE}">
      <rs:RegistryErrorList><rs:RegistryError errorCode=" " codeContext="?"/></rs:RegistryErrorList>
      </rs:RegistryResponse>""".encode())
    assert [e.code for e in parse_registry_response(blank).errors] == [E.XDSRegistryError]
    bare_failure = etree.fromstring(f'<rs:RegistryResponse xmlns:rs="{C.NS_RS}" status="{C.RESPONSE_FAILURE}"/>'.encode())
    assert parse_registry_response(bare_failure).errors[0].code == E.XDSRegistryError


def test_in_process_client_records_the_registrys_audit_event(engine):
    store = RegistryStore(engine)
    store.add_patient(PATIENT)
    registry = DocumentRegistry(store=store)
    client = InProcessRegistryClient(registry)
    uid = fresh_oid()
    assert not client.register(one_document(document(unique_id=uid))).failed
    assert client.known_document_unique_ids([uid, "9.9"]) == {uid}
    refused = client.register(one_document(document(unique_id=uid, content=b"changed")))
    assert refused.failed
    assert [(e.transaction, e.outcome) for e in registry.audit.events] == [
        ("ITI-42", "success"), ("ITI-42", "minor-failure")]


def _provide(repo: DocumentRepository, unique_id: str, content: bytes):
    """ITI-41 (handler level, inline base64) of one document with `content`."""
    from registry.ebrim import submit_objects_request_to_element

    body = etree.Element("{%s}ProvideAndRegisterDocumentSetRequest" % C.NS_XDSB, nsmap={"xdsb": C.NS_XDSB})
    body.append(submit_objects_request_to_element(one_document(document(unique_id=unique_id, content=content))))
    etree.SubElement(body, "{%s}Document" % C.NS_XDSB, id="Document01").text = base64.b64encode(content).decode()
    request = SoapRequest(action=ACTION_ITI41, message_id=f"urn:uuid:{uuid.uuid4()}", to=None, reply_to=None,
                          relates_to=None, header_elements=(), body=body, envelope=body)
    return repo.provide_and_register_document_set(request, None)

def test_provide_and_register_through_a_remote_registry(carnet, engine):
    """ITI-41 at the repository, ITI-42 over SOAP to the registry of another Carnet."""
    RS.create_schema(engine)
    P.create_schema(engine)
    repo_uid = "1.2.250.1.999.1"
    repo = DocumentRepository(repo_uid, MemoryBlobStore(), KeyVault(engine, MasterKey.generate()),
                              SoapRegistryClient(carnet.registry_url, timeout=10), pending=P.PendingJournal(engine))
    uid = fresh_oid()
    content = b"a document registered elsewhere"
    reply = _provide(repo, uid, content)
    assert reply.body.get("status") == C.RESPONSE_SUCCESS, etree.tostring(reply.body)
    assert repo.blobs.keys() == [object_key(repo_uid, uid)]
    with carnet.store.registration() as s:
        [stored] = s.documents_by_unique_id([uid])[uid]
    assert (stored.hash, stored.size) == (sha1(content), len(content))
    assert repo.pending.all() == []


def test_provide_and_register_relays_a_remote_registrys_unknown_error_code(fake_registry, engine):
    """ITI TF-2b §3.41.4.1.3: the repository returns the registry's errors to the Document Source.
    A code Carnet does not know (a national one here) reaches the source as the registry sent it,
    with its codeContext and location, and the refused document's blob is gone."""
    handler, url = fake_registry
    handler.status = 200
    handler.body = (
        f'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>'
        f'<rs:RegistryResponse xmlns:rs="{C.NS_RS}" status="{C.RESPONSE_FAILURE}">'
        f'<rs:RegistryErrorList highestSeverity="{C.SEVERITY_ERROR}">'
        f'<rs:RegistryError errorCode="DMP_ACCES_REFUSE" codeContext="dossier ferme" location="ss01" '
        f'severity="{C.SEVERITY_ERROR}"/></rs:RegistryErrorList></rs:RegistryResponse>'
        f"</env:Body></env:Envelope>"
    ).encode()
    RS.create_schema(engine)
    P.create_schema(engine)
    repo_uid = "1.2.250.1.999.1"  # the one `iti42.builders.document` fills in
    repo = DocumentRepository(repo_uid, MemoryBlobStore(), KeyVault(engine, MasterKey.generate()),
                              SoapRegistryClient(url, timeout=10), pending=P.PendingJournal(engine))
    reply = _provide(repo, fresh_oid(), b"refused by a remote registry")
    assert reply.body.get("status") == C.RESPONSE_FAILURE
    errors = [(e.get("errorCode"), e.get("codeContext"), e.get("location"), e.get("severity"))
              for e in reply.body.iter("{%s}RegistryError" % C.NS_RS)]
    assert errors == [("DMP_ACCES_REFUSE", "dossier ferme", "ss01", C.SEVERITY_ERROR)]
    assert repo.blobs.keys() == [] and repo.pending.all() == []
