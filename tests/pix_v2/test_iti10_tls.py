"""ITI-10 to a consumer over MLLP with TLS (ITI-19): the PIX Manager presents the node's
certificate and checks the consumer's; a consumer that requires client certificates receives the
ADT^A31."""

from __future__ import annotations

from config.tls import TlsSettings, client_context_factory, server_context_factory, listen_tls
from pix import er7
from pix.hl7v2_service import Hl7v2Service
from pix.identities import MemoryCrossReferences
from pix.iti10_update import Consumer
from pix.mllp_edge import MllpFactory, MllpUpdateSender
from pki_support import write_pki
from reactor_support import call_in_reactor, listen, reactor, thread_pool
from pix_v2.v2_support import DOMAINS, HZLN, Recorder, a01, authority_table, ins_policy, mllp_client


def test_iti10_over_tls_with_client_certificates(tmp_path):
    pki = write_pki(tmp_path / "pki")
    consumer_tls = TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle)
    node_tls = TlsSettings(pki.client.certificate, pki.client.private_key, pki.ca_bundle)
    refused = []
    recorder = Recorder()
    with thread_pool() as pool:
        consumer_factory = MllpFactory(recorder, reactor=reactor(), threadpool=pool)
        creator = server_context_factory(consumer_tls, on_failure=refused.append)
        port = call_in_reactor(lambda: listen_tls(reactor(), 0, consumer_factory, creator, interface="127.0.0.1"))
        try:
            consumer = Consumer("127.0.0.1", port.getHost().port, (HZLN,), "CONSUMER", "FAC", tls=True)
            sender = MllpUpdateSender(reactor(), [consumer], authority_table(), initial_delay=0.05,
                                      tls_creator=lambda host: client_context_factory(node_tls, host))
            service = Hl7v2Service(MemoryCrossReferences(DOMAINS, ins_policy()), sender, authorities=authority_table())
            try:
                with listen(MllpFactory(service, reactor=reactor(), threadpool=pool)) as pix_port:
                    with mllp_client(pix_port.getHost().port) as c:
                        ack = c.request(a01("T-1", "444"))
                    assert er7.parse(ack).value(er7.parse(ack).first("MSA"), 1) == "AA"
                    assert recorder.arrived.wait(30)
            finally:
                call_in_reactor(sender.stop)
        finally:
            call_in_reactor(port.stopListening)
    m = er7.parse(recorder.messages[0])
    assert m.raw_field(m.first("MSH"), 9) == "ADT^A31^ADT_A05"
    assert [er7.component_of(r, 1) for r in m.repetitions(m.first("PID"), 3)] == ["444"]
    assert refused == []
