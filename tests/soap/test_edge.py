"""SoapEndpoint over real HTTP: a Twisted server on 127.0.0.1, an echo operation, faults."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from lxml import etree

from reactor_support import serve, thread_pool
from registry.ports import TransactionContext
from soap.edge import SoapEndpoint
from soap.envelope import NS_SOAP12, NS_WSA, BodyPieces, SenderFault
from soap.mtom import Attachment, build_mtom, parse_mtom, xop_include
from soap.operation import FunctionOperation, SoapReply
from soap.wsdl import registry_wsdl

NS = {"env": NS_SOAP12, "wsa": NS_WSA}
ECHO = "urn:test:Echo"
SEEN: list = []


def echo(request, context):
    SEEN.append(context)
    out = etree.Element("{urn:test}EchoResponse")
    out.append(etree.fromstring(etree.tostring(request.body)))
    for element, attachment in request.xop.items():
        etree.SubElement(out, "{urn:test}Got", size=str(attachment.size)).text = attachment.data.decode()
    return out


def mtom_reply(request, context):
    body = etree.Element("{urn:test}Doc")
    xop_include(body, "doc@test")
    return SoapReply(body, attachments=[Attachment("doc@test", "application/pdf", b"%PDF\r\n\x00binary")])


# A reply given as pieces (as ITI-18 gives its stored fragments), larger than the edge's send limit.
PIECES = BodyPieces((b'<t:Big xmlns:t="urn:test">', *(b"<t:P n='%d'>" % i + b"x" * 1000 + b"</t:P>" for i in range(3000)), b"</t:Big>"))


def pieces(request, context):
    return SoapReply(PIECES)


def broken(request, context):
    raise RuntimeError("database password is hunter2")


def refuse(request, context):
    raise SenderFault("bad request content")


OPS = {
    ECHO: FunctionOperation(ECHO, ECHO + "Response", echo, transaction="ITI-TEST"),
    "urn:test:Mtom": FunctionOperation("urn:test:Mtom", "urn:test:MtomResponse", mtom_reply),
    "urn:test:Pieces": FunctionOperation("urn:test:Pieces", "urn:test:PiecesResponse", pieces),
    "urn:test:Broken": FunctionOperation("urn:test:Broken", "urn:test:BrokenResponse", broken),
    "urn:test:Refuse": FunctionOperation("urn:test:Refuse", "urn:test:RefuseResponse", refuse),
}


@pytest.fixture(scope="module")
def base_url():
    from reactor_support import reactor

    with thread_pool(name="soap-edge-test") as pool:
        endpoint = SoapEndpoint(OPS, reactor=reactor(), threadpool=pool, wsdl=registry_wsdl, max_body_bytes=200_000)
        with serve(endpoint) as url:
            yield url


def request_bytes(action: str, body: str = '<t:Ping xmlns:t="urn:test">hi</t:Ping>', mid: str = "urn:uuid:req-1") -> bytes:
    return (
        f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header>'
        f'<wsa:Action env:mustUnderstand="1">{action}</wsa:Action><wsa:MessageID>{mid}</wsa:MessageID>'
        f"</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def post(url: str, data: bytes, content_type: str = "application/soap+xml; charset=UTF-8"):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def fault_of(body: bytes):
    env = etree.fromstring(body)
    fault = env.find("env:Body/env:Fault", NS)
    assert fault is not None
    # WS-Addr SOAP Binding §6: …/addressing/fault for WS-Addressing faults, …/soap/fault for the others
    wsa_fault = (fault.findtext("env:Code/env:Subcode/env:Value", namespaces=NS) or "").startswith("wsa:")
    action = "http://www.w3.org/2005/08/addressing/" + ("fault" if wsa_fault else "soap/fault")
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == action
    return env, fault


def test_echo_round_trip(base_url):
    SEEN.clear()
    status, ctype, body = post(base_url + "/registry", request_bytes(ECHO))
    assert status == 200 and ctype.startswith("application/soap+xml")
    env = etree.fromstring(body)
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == ECHO + "Response"
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:req-1"
    assert env.findtext("env:Body/{urn:test}EchoResponse/{urn:test}Ping", namespaces=NS) == "hi"
    (context,) = SEEN
    assert isinstance(context, TransactionContext)
    assert (context.transaction, context.message_id, context.remote_host) == ("ITI-TEST", "urn:uuid:req-1", "127.0.0.1")
    assert context.endpoint.endswith("/registry")


def test_wsdl_is_served_with_the_endpoint_address(base_url):
    with urllib.request.urlopen(base_url + "/registry?wsdl", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/xml")
        wsdl = etree.fromstring(resp.read())
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap12/}address")
    assert address.get("location") == base_url + "/registry"


def test_unknown_action(base_url):
    status, _, body = post(base_url, request_bytes("urn:test:Nope"))
    assert status == 400
    env, fault = fault_of(body)
    assert fault.findtext("env:Code/env:Value", namespaces=NS) == "env:Sender"
    assert fault.findtext("env:Code/env:Subcode/env:Value", namespaces=NS) == "wsa:ActionNotSupported"
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:req-1"


def test_bug_in_handler_is_a_receiver_fault_without_details(base_url):
    status, _, body = post(base_url, request_bytes("urn:test:Broken"))
    assert status == 500
    _, fault = fault_of(body)
    assert fault.findtext("env:Code/env:Value", namespaces=NS) == "env:Receiver"
    assert b"hunter2" not in body and b"Traceback" not in body and b"RuntimeError" not in body


def test_handler_sender_fault(base_url):
    status, _, body = post(base_url, request_bytes("urn:test:Refuse"))
    _, fault = fault_of(body)
    assert status == 400 and fault.findtext(".//env:Text", namespaces=NS) == "bad request content"


@pytest.mark.parametrize(
    "data, content_type, status, code",
    [
        (b"<env:Envelope", "application/soap+xml", 400, "env:Sender"),
        (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "application/soap+xml", 400, "env:Sender"),
        # (a SOAP 1.1 envelope: a SOAP 1.1 VersionMismatch fault, tests/soap/test_review_conformance.py)
        (b"x" * 200_001, "application/soap+xml", 413, "env:Sender"),
        (b"{}", "application/json", 415, "env:Sender"),
    ],
)
def test_peer_errors_are_faults(base_url, data, content_type, status, code):
    got_status, ctype, body = post(base_url, data, content_type)
    assert (got_status, ctype.split(";")[0]) == (status, "application/soap+xml")
    _, fault = fault_of(body)
    assert fault.findtext("env:Code/env:Value", namespaces=NS) == code
    assert b"root:" not in body


def test_must_understand_over_http(base_url):
    data = request_bytes(ECHO).replace(b"</env:Header>", b'<x:Sec xmlns:x="urn:sec" env:mustUnderstand="true"/></env:Header>')
    status, _, body = post(base_url, data)
    _, fault = fault_of(body)
    assert status == 500 and fault.findtext("env:Code/env:Value", namespaces=NS) == "env:MustUnderstand"


def test_mtom_request_gets_an_mtom_reply_with_resolved_xop(base_url):
    body = '<t:Put xmlns:t="urn:test"><t:Doc><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:part1@test"/></t:Doc></t:Put>'
    content_type, data = build_mtom(request_bytes(ECHO, body), [Attachment("part1@test", "text/plain", b"hello world")])
    status, ctype, reply = post(base_url, data, content_type)
    assert status == 200 and ctype.startswith("multipart/related")
    msg = parse_mtom(ctype, [reply])
    env = etree.fromstring(msg.root)
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:req-1"
    assert env.findtext(".//{urn:test}Got") == "hello world"
    assert env.find(".//{urn:test}Got").get("size") == "11"


def test_reply_with_attachments_is_mtom(base_url):
    status, ctype, reply = post(base_url, request_bytes("urn:test:Mtom"))
    assert status == 200 and ctype.startswith("multipart/related")
    msg = parse_mtom(ctype, [reply])
    assert msg.attachments["doc@test"].data == b"%PDF\r\n\x00binary"
    env = etree.fromstring(msg.root)
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == "urn:test:MtomResponse"
    include = env.find(".//{http://www.w3.org/2004/08/xop/include}Include")
    assert include.get("href") == "cid:doc@test"


def _check_pieces_envelope(data: bytes, mid: str) -> None:
    env = etree.fromstring(data)
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == mid
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == "urn:test:PiecesResponse"
    (big,) = env.find("env:Body", NS)
    assert big.tag == "{urn:test}Big" and [p.get("n") for p in big] == [str(i) for i in range(3000)]
    assert etree.tostring(big).endswith(b"x" * 1000 + b"</t:P></t:Big>")


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_reply_in_pieces_is_sent_whole_with_its_length(base_url, version):
    """A body of 3 002 pieces (3 MB) arrives as one envelope of the announced Content-Length,
    twice on one keep-alive connection (HTTP/1.1: the framing of the first leaves the second
    intact), or on a connection the server closes (HTTP/1.0)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    if version == "HTTP/1.0":
        conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    try:
        for k in range(2 if version == "HTTP/1.1" else 1):
            mid = f"urn:uuid:pieces-{k}"
            conn.request("POST", parts.path, request_bytes("urn:test:Pieces", mid=mid),
                         {"Content-Type": "application/soap+xml; charset=UTF-8"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200 and resp.getheader("Content-Type").startswith("application/soap+xml")
            assert int(resp.getheader("Content-Length")) == len(data) > 3_000_000
            _check_pieces_envelope(data, mid)
    finally:
        conn.close()


def test_a_reply_in_pieces_to_an_mtom_request_is_mtom(base_url):
    envelope = request_bytes("urn:test:Pieces", mid="urn:uuid:pieces-mtom")
    content_type, body = build_mtom(envelope, [], action="urn:test:Pieces")
    status, ctype, data = post(base_url, body, content_type)
    assert status == 200 and ctype.startswith("multipart/related")
    _check_pieces_envelope(parse_mtom(ctype, [data]).root, "urn:uuid:pieces-mtom")
