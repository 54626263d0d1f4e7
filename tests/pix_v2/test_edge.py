"""The MLLP edge (pix/mllp_edge.py) over real sockets: garbage never crashes the listener nor
changes stored identities; oversize messages are NAKed with their MSH-10; ITI-10 notifications
reach a consumer; a feed with an INS makes it known to the registry."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pix import er7
from pix.hl7v2_service import Hl7v2Service
from pix.identities import MemoryCrossReferences, SqlCrossReferences
from pix.ins import INS_NIR_TEST, with_key
from pix.iti10_update import Consumer
from pix.mllp_edge import MllpFactory, MllpUpdateSender
from pix.xref import Identifier
from pix_v2.v2_support import (
    CHU_X,
    DOMAINS,
    HZLN,
    PKLN,
    Recorder,
    authority_table,
    ins_policy,
    mllp_client,
)
from reactor_support import call_in_reactor, listen, reactor, thread_pool

CAP = 4096


def a01(control_id: str, value: str, authority: str = HZLN, ns: str = "HZLN", extra: str = "") -> bytes:
    return (
        f"MSH|^~\\&|SRC|FAC|PIX|XREF|20240101||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
        "EVN||20240101\r"
        f"PID|1||{value}^^^{ns}&{authority}&ISO^PI{extra}||DOE^JOHN||19800101|M\r"
    ).encode()


@pytest.fixture
def server():
    xref = MemoryCrossReferences(DOMAINS, ins_policy())
    service = Hl7v2Service(xref, authorities=authority_table())
    with thread_pool() as pool:
        factory = MllpFactory(service, reactor=reactor(), threadpool=pool, max_message_bytes=CAP)
        with listen(factory) as port:
            yield xref, port.getHost().port


def assert_alive_and_unchanged(xref, port: int) -> None:
    """The listener still answers; nothing but the reference patient is stored."""
    with mllp_client(port) as c:
        m = er7.parse(c.request(a01("ALIVE", "REF-1")))
    assert m.value(m.first("MSA"), 1) == "AA"
    assert xref.status(Identifier("REF-1", HZLN)) == "active"
    assert xref.status(Identifier("EVIL-1", HZLN)) is None


def test_pipelined_messages_are_answered_in_order(server):
    xref, port = server
    msgs = [a01(f"C{i}", f"P{i}") for i in range(50)]
    with mllp_client(port) as c:
        c.send_raw(b"".join(b"\x0b" + m + b"\x1c\r" for m in msgs))
        answers = c.receive(len(msgs))
    assert [er7.parse(a).value(er7.parse(a).first("MSA"), 2) for a in answers] == [f"C{i}" for i in range(50)]


def test_garbage_without_framing(server):
    xref, port = server
    with mllp_client(port) as c:
        c.send_raw(a01("EVIL", "EVIL-1"))  # a message without MLLP framing: discarded
        c.send_raw(b"\x00\x01\xff" * 100)
        answer = c.request(a01("OK-1", "REF-1"))  # the connection is still usable
    assert er7.parse(answer).value(er7.parse(answer).first("MSA"), 2) == "OK-1"
    assert_alive_and_unchanged(xref, port)


def test_not_an_mllp_peer_is_disconnected(server):
    xref, port = server
    with mllp_client(port) as c:
        c.send_raw(os.urandom(CAP * 3).replace(b"\x0b", b"\x00"))
        c.sock.settimeout(30)
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(100):
                c.receive(1)
    assert_alive_and_unchanged(xref, port)


def test_binary_inside_frames_is_answered_or_ignored(server):
    xref, port = server
    with mllp_client(port) as c:
        answer = c.request(os.urandom(500).replace(b"\x0b", b"").replace(b"\x1c", b""))
        # no MSH: answered AR with an empty MSA-2 (HL7 v2.5 §2.9.2: always acknowledge)
        m = er7.parse(answer)
        assert m.value(m.first("MSA"), 1) == "AR" and m.value(m.first("ERR"), 3) == "100"
    assert_alive_and_unchanged(xref, port)


def test_oversize_message_is_naked_with_its_msh10_and_not_stored(server):
    xref, port = server
    big = a01("BIG-1", "EVIL-1") + b"NTE|1||" + b"x" * (CAP * 4) + b"\r"
    with mllp_client(port) as c:
        c.send(big)
        m = er7.parse(c.receive(1)[0])
        assert (m.value(m.first("MSA"), 1), m.value(m.first("MSA"), 2)) == ("AR", "BIG-1")
        assert m.value(m.first("ERR"), 3) == "102"
        # the connection goes on
        m = er7.parse(c.request(a01("AFTER", "REF-1")))
        assert m.value(m.first("MSA"), 2) == "AFTER"
    assert_alive_and_unchanged(xref, port)


def test_half_message_then_close(server):
    xref, port = server
    with mllp_client(port) as c:
        c.send_raw(b"\x0b" + a01("HALF", "EVIL-1"))  # no <EB><CR>
    assert_alive_and_unchanged(xref, port)


@settings(max_examples=25)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_listener(data):
    xref = MemoryCrossReferences(DOMAINS, ins_policy())
    service = Hl7v2Service(xref, authorities=authority_table())
    with thread_pool() as pool:
        factory = MllpFactory(service, reactor=reactor(), threadpool=pool, max_message_bytes=256)
        with listen(factory) as port:
            s = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=30)
            s.sendall(data)
            s.close()
            assert_alive_and_unchanged(xref, port.getHost().port)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_service_always_answers_an_hl7_message(data):
    service = Hl7v2Service(MemoryCrossReferences(DOMAINS, ins_policy()), authorities=authority_table())
    answer = service.handle(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X-1|P|2.5\r" + data)
    m = er7.parse(answer)
    assert m.value(m.first("MSA"), 2) == "X-1"
    assert m.value(m.first("MSA"), 1) in ("AA", "AE", "AR")


def test_iti10_notification_reaches_the_consumer():
    recorder = Recorder()
    with thread_pool() as pool:
        consumer_factory = MllpFactory(recorder, reactor=reactor(), threadpool=pool)
        with listen(consumer_factory) as consumer_port:
            consumer = Consumer("127.0.0.1", consumer_port.getHost().port, (HZLN, PKLN), "CONSUMER", "FAC")
            sender = MllpUpdateSender(reactor(), [consumer], authority_table(), initial_delay=0.05)
            xref = MemoryCrossReferences(DOMAINS, ins_policy())
            service = Hl7v2Service(xref, sender, authorities=authority_table())
            try:
                with listen(MllpFactory(service, reactor=reactor(), threadpool=pool)) as port:
                    with mllp_client(port.getHost().port) as c:
                        ack = c.request(a01("N-1", "111", extra=f"~222^^^PKLN&{PKLN}&ISO^PI~333^^^CHU-X&{CHU_X}&ISO^PI"))
                    assert er7.parse(ack).value(er7.parse(ack).first("MSA"), 1) == "AA"
                    assert recorder.arrived.wait(30)
            finally:
                call_in_reactor(sender.stop)
    m = er7.parse(recorder.messages[0])
    assert m.raw_field(m.first("MSH"), 9) == "ADT^A31^ADT_A05"
    assert m.raw_field(m.first("MSH"), 5) == "CONSUMER"
    pid3 = m.repetitions(m.first("PID"), 3)
    # restricted to the consumer's domains: CHU-X's 333 is not sent
    assert sorted((er7.component_of(r, 1), er7.component_of(r, 4, 2)) for r in pid3) == [("111", HZLN), ("222", PKLN)]
    assert m.value(m.first("PV1"), 2) == "N"


def test_end_to_end_ins_fed_by_iti8_is_known_to_the_registry_memory():
    end_to_end_ins(MemoryCrossReferences(DOMAINS, ins_policy()))


def test_end_to_end_ins_fed_by_iti8_is_known_to_the_registry_sql(engine):
    end_to_end_ins(SqlCrossReferences(engine, DOMAINS, ins_policy()))


def end_to_end_ins(xref):
    nir = with_key("1840575123456")
    ins = Identifier(nir, INS_NIR_TEST)
    feed = (
        "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306||ADT^A28^ADT_A05|E2E-1|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8\r"
        "EVN||20240306\r"
        f"PID|1||4242^^^CHU-X&{CHU_X}&ISO^PI~{nir}^^^ASIP-SANTE-INS-NIR&{INS_NIR_TEST}&ISO^INS||"
        "ÉLODIE^MARTIN^^^^^L||19840515|M" + "|" * 24 + "VALI\r"
    ).encode()
    assert not xref.is_known(ins.xds_cx())
    service = Hl7v2Service(xref, authorities=authority_table())
    with thread_pool() as pool, listen(MllpFactory(service, reactor=reactor(), threadpool=pool)) as port:
        with mllp_client(port.getHost().port) as c:
            ack = er7.parse(c.request(feed))
    assert ack.value(ack.first("MSA"), 1) == "AA", ack.message
    assert xref.is_known(ins.xds_cx())
    assert xref.query(ins, (CHU_X,)) == (Identifier("4242", CHU_X, "CHU-X", "PI"),)


def test_ins_without_qualified_identity_is_refused():
    xref = MemoryCrossReferences(DOMAINS, ins_policy())
    nir = with_key("1840575123456")
    feed = (
        "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306||ADT^A31^ADT_A05|E2E-2|P|2.5\r"
        f"PID|1||{nir}^^^ASIP-SANTE-INS-NIR&{INS_NIR_TEST}&ISO^INS||X^Y||19840515|M" + "|" * 24 + "PROV\r"
    ).encode()
    m = er7.parse(Hl7v2Service(xref, authorities=authority_table()).handle(feed))
    assert (m.value(m.first("MSA"), 1), m.value(m.first("ERR"), 3)) == ("AE", "102")
    assert not xref.is_known(Identifier(nir, INS_NIR_TEST).xds_cx())


class BrokenStore(MemoryCrossReferences):
    def feed(self, record):
        from registry.errors import InfrastructureError

        raise InfrastructureError("database down")


def test_infrastructure_error_is_ae_207_never_a_domain_code():
    service = Hl7v2Service(BrokenStore(DOMAINS, ins_policy()), authorities=authority_table())
    m = er7.parse(service.handle(a01("DOWN-1", "P1")))
    assert (m.value(m.first("MSA"), 1), m.value(m.first("MSA"), 2), m.value(m.first("ERR"), 3)) == ("AE", "DOWN-1", "207")
