"""The ARR over real sockets: the WUSTL/IPF samples sent over syslog TLS (mutual auth), TCP and
UDP are stored and found by ITI-81; resent events are stored once; garbage never stops a port."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from atna.arr.schema import audit_record
from atna_arr.arr_support import (
    client_context,
    sample_files,
    sample_xml,
    send_tcp,
    send_tls,
    send_udp,
    syslog_message,
)
from support import wait_until

pytestmark = pytest.mark.pg


def _stored(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(audit_record)).scalar_one()


def _ids(bundle) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def _subtypes(bundle) -> set[str]:
    return {s["code"] for e in bundle.get("entry", []) for s in e["resource"].get("subtype", [])}


def test_every_sample_over_tls_tcp_and_udp_is_stored_and_found(arr, engine, pki, tmp_path):
    files = sample_files()
    by_transport = {
        t: [syslog_message(sample_xml(f, when), f"{t}-{f.name}") for f in files]
        for t, when in (("tls", "2024-05-01T10:00:00Z"), ("tcp", "2024-05-02T10:00:00Z"), ("udp", "2024-05-03T10:00:00Z"))
    }
    send_tls(arr.tls_port, client_context(pki, tmp_path, pki.client), by_transport["tls"])
    send_tcp(arr.tcp_port, by_transport["tcp"])
    send_udp(arr.udp_port, by_transport["udp"])
    arr.settle(3 * len(files))

    c = arr.ingest.counters
    assert (c.stored, c.malformed, c.duplicates) == (3 * len(files), 0, 0)
    assert _stored(engine) == 3 * len(files)

    # every message is in the search answer, as a FHIR R4 searchset
    status, ctype, bundle = arr.get("/AuditEvent?_count=1000")
    assert status == 200 and ctype.startswith("application/fhir+json")
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert len(bundle["entry"]) == 3 * len(files)
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"AuditEvent"}

    # date: the WUSTL samples sent over TCP have 2024-05-02 (the IPF ones keep their own date)
    wustl = [f for f in files if f.name.startswith("wustl")]
    _, _, day = arr.get("/AuditEvent?date=ge2024-05-02&date=lt2024-05-03&_count=1000")
    assert len(day["entry"]) == len(wustl)
    _, _, ipf_2019 = arr.get("/AuditEvent?date=lt2020-01-01")
    assert len(ipf_2019["entry"]) == 3  # ipf__pixfeedmerge.xml (2019-03-19) over each transport

    # type (EventID) and subtype (EventTypeCode)
    _, _, queries = arr.get("/AuditEvent?type=110112&_count=1000")
    assert {e["resource"]["type"]["code"] for e in queries["entry"]} == {"110112"}
    assert _subtypes(queries) == {"ITI-9", "ITI-18", "ITI-45"}
    _, _, iti18 = arr.get("/AuditEvent?subtype=urn:ihe:event-type-code|ITI-18")
    assert len(iti18["entry"]) == 3

    # outcome: WUSTL ITI-41 Export is 4 (minor failure); ITI-18 and both ITI-42 are 8 (serious)
    _, _, minor = arr.get("/AuditEvent?outcome=4")
    assert _subtypes(minor) == {"ITI-41"} and len(minor["entry"]) == 3
    _, _, serious = arr.get("/AuditEvent?outcome=8&date=ge2024-05-03")
    assert _subtypes(serious) == {"ITI-18", "ITI-42"} and len(serious["entry"]) == 3
    _, _, failures = arr.get("/AuditEvent?outcome=4,8")
    assert len(failures["entry"]) == 4 * 3

    # patient, as a CX and as a token system|value
    cx = "5541138b47a445a^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
    _, _, by_cx = arr.get("/AuditEvent?patient=" + quote(cx, safe=""))
    assert _subtypes(by_cx) == {"ITI-43"} and len(by_cx["entry"]) == 3
    _, _, by_token = arr.get("/AuditEvent?entity-id=" + quote("urn:oid:1.3.6.1.4.1.21367.2005.3.7|5541138b47a445a"))
    assert _ids(by_token) == _ids(by_cx)
    _, _, other_system = arr.get("/AuditEvent?patient=" + quote("urn:oid:1.2.3|5541138b47a445a"))
    assert other_system["entry"] == []
    # a PIX feed naming several identifiers (CX repeated with ~) is found by each of them
    _, _, repeated = arr.get("/AuditEvent?patient=" + quote("IHEGREEN-2340^^^IHEGREEN&1.3.6.1.4.1.21367.13.20.2000&ISO"))
    assert len(repeated["entry"]) == 3

    # agent (UserID), address (NetworkAccessPointID), source (AuditSourceID), AND across parameters
    _, _, agent = arr.get("/AuditEvent?agent=" + quote("Pishtosh Kibosh"))
    assert _subtypes(agent) == {"ITI-18"} and len(agent["entry"]) == 3
    _, _, address = arr.get("/AuditEvent?address=10.242.8.71&date=ge2024-05-02")
    assert _subtypes(address) == {"ITI-18"} and len(address["entry"]) == 2
    _, _, source = arr.get("/AuditEvent?source=app-connect&subtype=110121")
    assert len(source["entry"]) == 3

    # the peer's address and syslog HOSTNAME were kept
    with engine.connect() as conn:
        hosts = set(conn.execute(select(audit_record.c.sender_host, audit_record.c.peer_address)).all())
    assert hosts == {("node-a.example", "127.0.0.1")}


def test_paging_links_walk_the_whole_answer(arr, pki, tmp_path):
    files = sample_files()
    send_tcp(arr.tcp_port, [syslog_message(sample_xml(f), f"page-{f.name}") for f in files])
    arr.settle(len(files))
    seen: list[str] = []
    status, _, bundle = arr.get("/AuditEvent?_count=7")
    assert status == 200
    while True:
        seen += _ids(bundle)
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert len(bundle["entry"]) == 7
        path = nxt[0].split("/atna", 1)[1]
        _, _, bundle = arr.get(path)
    assert len(seen) == len(set(seen)) == len(files)
    recorded = []
    for i in seen:
        _, _, resource = arr.get(f"/AuditEvent/{i}")
        recorded.append(resource["recorded"])
    assert recorded == sorted(recorded, reverse=True)  # newest first


def test_a_resent_event_is_stored_once(arr, engine):
    files = sample_files()[:5]
    with_id = [syslog_message(sample_xml(f), f"resend-{f.name}") for f in files]
    without_id = [syslog_message(sample_xml(f, "2030-01-01T00:00:00Z")) for f in files]
    send_tcp(arr.tcp_port, with_id + without_id)
    arr.settle(10)
    # the sender resends: same event ids (a fresh syslog header), and the same audit messages
    resent_with_id = [syslog_message(sample_xml(f), f"resend-{f.name}", hostname="other-host") for f in files]
    resent_without_id = [syslog_message(sample_xml(f, "2030-01-01T00:00:00Z"), hostname="other-host") for f in files]
    send_tcp(arr.tcp_port, resent_with_id + resent_without_id + with_id)
    arr.settle(25)
    assert (arr.ingest.counters.stored, arr.ingest.counters.duplicates) == (10, 15)
    assert _stored(engine) == 10


def test_garbage_on_every_port_is_counted_and_the_ports_keep_working(arr, engine, pki, tmp_path):
    good = [syslog_message(sample_xml(f), f"after-garbage-{f.name}") for f in sample_files()[:3]]
    # TCP: a well-framed non-syslog message, a syslog message whose MSG is not XML, then a
    # broken MSG-LEN (the stream is lost: that connection is closed)
    send_tcp(arr.tcp_port, [b"hello", b"<13>1 - h app - - - not an audit message"], raw=b"")
    with socket.create_connection(("127.0.0.1", arr.tcp_port), timeout=10) as s:
        s.sendall(b"12x <13>1 - - - - - -")
        assert s.recv(10) == b""  # closed by the ARR
    # UDP: random bytes and an empty datagram
    send_udp(arr.udp_port, [b"\x00\xff garbage", b"<999>1 - - - - - -"])
    # TLS: plain text on the TLS port (no handshake)
    with socket.create_connection(("127.0.0.1", arr.tls_port), timeout=10) as s:
        s.sendall(b"20 <13>1 - - - - - - x\n" * 3)
        try:
            s.recv(100)
        except OSError:
            pass
    wait_until(lambda: arr.ingest.counters.malformed >= 4, what="the malformed messages to be counted")
    # then good messages on each port still get through
    send_tcp(arr.tcp_port, good[:1])
    send_udp(arr.udp_port, good[1:2])
    send_tls(arr.tls_port, client_context(pki, tmp_path, pki.client), good[2:])
    wait_until(lambda: arr.ingest.counters.stored >= 3, what="the good messages to be stored")
    call_in_reactor_idle(arr)
    c = arr.ingest.counters
    assert (c.stored, c.malformed, c.framing_errors) == (3, 4, 1)
    assert _stored(engine) == 3


def call_in_reactor_idle(arr) -> None:
    from reactor_support import call_in_reactor

    call_in_reactor(arr.ingest.when_idle)


@pytest.mark.parametrize("who", ["none", "foreign"])
def test_tls_refuses_a_client_without_a_certificate_of_the_ca(arr, engine, pki, tmp_path, who):
    client = None if who == "none" else pki.foreign_client
    message = syslog_message(sample_xml(sample_files()[0]), f"refused-{who}")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", arr.tls_port), timeout=10) as raw_sock:
            ctx = client_context(pki, tmp_path, client)
            with ctx.wrap_socket(raw_sock, server_hostname="localhost") as s:
                # TLS 1.3: the client may finish its handshake before the server refuses it;
                # the refusal then shows on the next read.
                s.sendall(b"10 " + message[:10])
                if not s.recv(10):
                    raise ConnectionError("closed by the ARR")
    # a good client is still served, and only its message is stored
    send_tls(arr.tls_port, client_context(pki, tmp_path, pki.client), [syslog_message(sample_xml(sample_files()[1]), "ok")])
    arr.settle(1)
    assert arr.ingest.counters.received == 1
    assert _stored(engine) == 1


def test_patient_history_over_http(arr):
    files = {f.name: f for f in sample_files()}
    # the same patient in an ITI-43 retrieve (consumer side) and a repository export, a day apart
    send_tcp(arr.tcp_port, [
        syslog_message(sample_xml(files["wustl__ITI-43_110106.dcm.xml"], "2024-06-01T08:00:00Z"), "h1"),
        syslog_message(sample_xml(files["wustl__ITI-43_110106.dcm.xml"], "2024-06-02T08:00:00+02:00"), "h2"),
        syslog_message(sample_xml(files["wustl__ITI-18_110112.dcm.xml"], "2024-06-03T08:00:00Z"), "h3"),
    ])
    arr.settle(3)
    patient = quote("5541138b47a445a^^^&1.3.6.1.4.1.21367.2005.3.7&ISO", safe="")
    status, ctype, doc = arr.get(f"/history/{patient}?_count=1")
    assert status == 200 and ctype.startswith("application/json")
    assert [e["time"] for e in doc["entries"]] == ["2024-06-02T08:00:00+02:00"]
    entry = doc["entries"][0]
    assert entry["transaction"] == [{"code": "ITI-43", "text": "Retrieve Document Set"}]
    assert entry["event"]["code"] == "110106" and entry["action"] == "read" and entry["outcome"] == "success"
    assert entry["access_mode"] is None
    assert entry["documents"] and entry["structure"]["audit_source"]
    nxt = doc["links"]["next"].split("/atna", 1)[1]
    _, _, page2 = arr.get(nxt)
    assert [e["time"] for e in page2["entries"]] == ["2024-06-01T08:00:00Z"]
    assert "next" not in page2["links"]
    status, _, unknown = arr.get("/history/" + quote("nobody^^^&1.2.3&ISO", safe=""))
    assert status == 200 and unknown["entries"] == []


def test_refused_searches_answer_400_with_an_operation_outcome(arr):
    for query in ("foo=bar", "date=sa2024", "date=2024-13", "outcome=3", "_count=abc", "patient=", "subtype:text=x"):
        status, ctype, body = arr.get("/AuditEvent?" + query)
        assert status == 400, query
        assert ctype.startswith("application/fhir+json")
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error", query
    status, _, body = arr.get("/AuditEvent/does-not-exist")
    assert status == 404 and body["issue"][0]["code"] == "not-found"
    status, _, body = arr.get("/history/?_count=1")
    assert status == 400
