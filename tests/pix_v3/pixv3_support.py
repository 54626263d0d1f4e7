"""Fixtures of the HL7 v3 PIX tests: the PIX Manager's operations served by `SoapEndpoint` over
real HTTP, on the in-memory cross-reference fake and on the SQL store (SQLite, PostgreSQL)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import attrs
import pytest
from lxml import etree
from twisted.web.resource import Resource

from pix import hl7v3 as V

from pix.identities import MemoryCrossReferences, SqlCrossReferences
from pix.ins import INS_NIR_TEST, InsPolicy
from pix.v3_endpoint import PixV3Manager
from pix.v3_wsdl import pix_manager_wsdl
from reactor_support import reactor, serve, thread_pool
from soap.edge import SoapEndpoint, SoapSite
from soap.envelope import build_response, parse_soap
from support import fresh_engine, need_shared, post_soap, soap_body, soap_envelope

MANAGER_DEVICE = "1.2.250.1.999.1.1"  # our PIX Manager's device id in these tests
IPP = "1.2.250.1.999.2.1"  # a hospital's IPP domain used by the tests' own messages
IPP2 = "1.2.250.1.999.2.2"

# Every assigning authority the shared samples feed or query with (they must be known domains
# for their expected outcome), plus the tests' own.
DOMAINS = frozenset(
    {
        "1.2.840.114350.1.13.99998.8734",
        "1.2.840.114350.1.13.99997.2.3412",
        "2.16.840.1.113883.4.1",
        "2.16.840.1.113883.3.37.4.1.1.2.1.1",
        "2.16.840.1.113883.3.37.4.1.1.2.611.1",
        "2.16.840.1.113883.3.37.4.1.1.2.411.1",
        "2.16.840.1.113883.3.37.4.1.1.2.511.1",
        "1.3.6.1.4.1.21367.2005.1.1",
        "1.3.6.1.4.1.21367.2005.1.2",
        "1.2.3.4.5.1000",
        "1.2.3.4.666",
        "1.2.3",
        "2.16.756.5.30.1.1176.19.1",
        "2.16.756.5.30.1.127.3.10.3",
        IPP,
        IPP2,
    }
)
POLICY = InsPolicy(accepted_oids=frozenset({INS_NIR_TEST}))

_SCHEMAS: dict[str, etree.XMLSchema] = {}


def v3_schema(message: str) -> etree.XMLSchema:
    """The official HL7 v3 NE2008 schema of `message`, loaded once; skips without ../shared."""
    if message not in _SCHEMAS:
        path = need_shared("xsd", "HL7V3", "NE2008", "multicacheschemas", f"{message}.xsd")
        _SCHEMAS[message] = etree.XMLSchema(etree.parse(str(path)))
    return _SCHEMAS[message]


def assert_schema_valid(element: etree._Element) -> None:
    name = etree.QName(element).localname
    schema = v3_schema(name)
    doc = etree.fromstring(etree.tostring(element))
    assert schema.validate(doc), f"{name} is not schema-valid: {schema.error_log}"


@attrs.define
class PixService:
    url: str
    xref: Any
    manager: PixV3Manager

    def call(self, action: str, body: etree._Element | bytes) -> tuple[int, etree._Element]:
        """POST a SOAP 1.2 + WS-Addressing request; (HTTP status, the response's Body element);
        every HL7 v3 answer is checked against its official schema."""
        data = body if isinstance(body, bytes) else etree.tostring(body)
        if data.startswith(b"<?xml"):
            data = data[data.index(b"?>") + 2 :].lstrip()
        status, _, envelope = post_soap(self.url, soap_envelope(data, action, to=self.url))
        answer = soap_body(envelope)
        if etree.QName(answer).namespace == "urn:hl7-org:v3":
            assert_schema_valid(answer)
        return status, answer


@contextmanager
def served(xref: Any, **manager_args: Any) -> Iterator[PixService]:
    manager = PixV3Manager(xref, device_id=manager_args.pop("device_id", MANAGER_DEVICE), **manager_args)
    with thread_pool() as pool:
        endpoint = SoapEndpoint(
            manager.operations(), reactor=reactor(), threadpool=pool, wsdl=pix_manager_wsdl
        )
        with serve(SoapSite(endpoint)) as base:
            yield PixService(base + "/", xref, manager)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def xref(request, tmp_path):
    """The cross-reference store: the fake, and the SQL store on SQLite and PostgreSQL (a fresh
    schema per test, as tests/conftest.py's `engine`)."""
    if request.param == "memory":
        yield MemoryCrossReferences(DOMAINS, POLICY)
        return
    with fresh_engine(request.param, tmp_path, "pix.db") as engine:
        yield SqlCrossReferences(engine, DOMAINS, POLICY)


@pytest.fixture
def pix(xref) -> Iterator[PixService]:
    with served(xref) as service:
        yield service


def sample_bytes(*parts: str) -> bytes:
    return need_shared("samples", *parts).read_bytes()


def action_of(data: bytes) -> str:
    """The wsa:Action of an HL7v3 interaction: its root element's name (PIXManager.wsdl)."""
    return "urn:hl7-org:v3:" + etree.QName(etree.fromstring(data)).localname


def ack_of(answer) -> V.AckSummary:
    return V.read_ack(answer)


class ConsumerEndpoint(Resource):
    """A test PIX Consumer: records each notification; answers AA (after `fail_first` 503s)."""

    isLeaf = True

    def __init__(self, fail_first: int = 0, type_code: str = V.AA) -> None:
        super().__init__()
        self.received: list[tuple[str, etree._Element]] = []
        self.fail_first = fail_first
        self.type_code = type_code
        self.posts = 0

    def render_POST(self, request):
        self.posts += 1
        if self.posts <= self.fail_first:
            request.setResponseCode(503)
            return b"busy"
        soap = parse_soap(request.content.read())
        self.received.append((soap.action, soap.body))
        header = V.parse_header(soap.body)
        ack = V.build_ack(header, self.type_code, [], V.Responder("1.2.250.1.999.7.7"))
        request.setHeader(b"content-type", b"application/soap+xml; charset=UTF-8")
        return build_response("urn:hl7-org:v3:MCCI_IN000002UV01", ack, relates_to=soap.message_id)
