"""ITI-46: after an accepted ITI-44 feed, each configured consumer receives a PRPA_IN201302UV02
with the patient's identifiers in its domains of interest, over real HTTP (SOAP 1.2)."""

from __future__ import annotations


from pix import hl7v3 as V
from pix.iti46_update import ACTION, Consumer
from pix.v3_edge import UpdateSender
from pix.v3_endpoint import ACTIONS
from pix.xref import Demographics, Identifier, PatientRecord
from pix_v3.pixv3_support import IPP, IPP2, MANAGER_DEVICE, ConsumerEndpoint, assert_schema_valid, served
from reactor_support import call_in_reactor, reactor, serve

R = V.Responder("1.2.250.1.999.9.9")


def _feed(pix, *identifiers):
    record = PatientRecord(tuple(identifiers), Demographics("NOTIF", ("ITI",)))
    _, answer = pix.call(ACTIONS[V.ADD], V.build_feed(V.ADD, record, R))
    assert V.read_ack(answer).type_code == "AA"


def test_a_feed_is_notified_to_each_consumer_in_its_domains(xref):
    wants_ipp = ConsumerEndpoint()
    wants_both = ConsumerEndpoint()
    wants_other = ConsumerEndpoint()
    with serve(wants_ipp) as url1, serve(wants_both) as url2, serve(wants_other) as url3:
        consumers = [
            Consumer(url1 + "/", {IPP}, device_id="1.2.250.1.999.5.1"),
            Consumer(url2 + "/", {IPP, IPP2}),
            Consumer(url3 + "/", {"1.2.3.4.666"}),  # nothing of this patient: not notified
        ]
        sender = UpdateSender(reactor(), consumers, V.Responder(MANAGER_DEVICE), base_delay=0.01)
        with served(xref, notifier=sender) as pix:
            _feed(pix, Identifier("N1", IPP), Identifier("M1", IPP2))
            call_in_reactor(sender.when_idle)
    assert sender.delivered == 2 and sender.dropped == 0
    assert wants_other.received == []
    (action, body), = wants_ipp.received
    assert action == ACTION and body.tag == V.h(V.REVISE)
    assert_schema_valid(body)
    ids = [(i.get("root"), i.get("extension")) for i in body.iterfind(".//" + V.h("patient") + "/" + V.h("id"))]
    assert ids == [(IPP, "N1")]
    assert body.find(f"{V.h('receiver')}/{V.h('device')}/{V.h('id')}").get("root") == "1.2.250.1.999.5.1"
    assert body.find(f"{V.h('sender')}/{V.h('device')}/{V.h('id')}").get("root") == MANAGER_DEVICE
    (_, body2), = wants_both.received
    ids2 = {(i.get("root"), i.get("extension")) for i in body2.iterfind(".//" + V.h("patient") + "/" + V.h("id"))}
    assert ids2 == {(IPP, "N1"), (IPP2, "M1")}
    # no demographics in a notification (ITI TF-2b §3.46.4.1.2)
    assert body2.find(".//" + V.h("patientPerson") + "/" + V.h("name")).get("nullFlavor") == "NA"


def test_an_unreachable_consumer_is_retried_until_it_answers():
    from pix.identities import MemoryCrossReferences
    from pix_v3.pixv3_support import DOMAINS, POLICY

    flaky = ConsumerEndpoint(fail_first=2)
    with serve(flaky) as url:
        sender = UpdateSender(reactor(), [Consumer(url + "/", {IPP})], V.Responder(MANAGER_DEVICE), base_delay=0.01)
        with served(MemoryCrossReferences(DOMAINS, POLICY), notifier=sender) as pix:
            _feed(pix, Identifier("R1", IPP))
            call_in_reactor(sender.when_idle)
    assert flaky.posts == 3 and len(flaky.received) == 1
    assert (sender.delivered, sender.dropped) == (1, 0)


def test_a_consumer_refusal_is_not_retried_and_attempts_are_bounded():
    from pix.identities import MemoryCrossReferences
    from pix_v3.pixv3_support import DOMAINS, POLICY

    refusing = ConsumerEndpoint(type_code=V.AE)
    down = ConsumerEndpoint(fail_first=100)
    with serve(refusing) as url1, serve(down) as url2:
        consumers = [Consumer(url1 + "/", {IPP}), Consumer(url2 + "/", {IPP})]
        sender = UpdateSender(reactor(), consumers, V.Responder(MANAGER_DEVICE), base_delay=0.01, max_attempts=3)
        with served(MemoryCrossReferences(DOMAINS, POLICY), notifier=sender) as pix:
            _feed(pix, Identifier("F1", IPP))
            call_in_reactor(sender.when_idle)
    assert refusing.posts == 1 and sender.refused == 1
    assert down.posts == 3 and sender.dropped == 1


def test_the_queue_is_bounded():
    sender = UpdateSender(reactor(), [Consumer("http://127.0.0.1:9/", {IPP})], V.Responder(MANAGER_DEVICE),
                          max_queue=2, concurrency=0)
    from pix.xref import XrefChange

    change = XrefChange(groups=tuple((Identifier(f"Q{n}", IPP),) for n in range(5)))
    sender.notify(change)
    call_in_reactor(lambda: None)  # the enqueue ran (callFromThread is FIFO)
    assert (len(sender.queue), sender.dropped) == (2, 3)
    call_in_reactor(sender.stop)
