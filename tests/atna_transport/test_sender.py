"""atna.sender against in-process receivers (no rsyslog needed): the local destination, and an RFC 5425
stream receiver that drops the first connection, so unsettled events are sent again (at-least-once)."""

from __future__ import annotations

import threading

from twisted.internet import protocol

from atna.sender import AuditSender, Backoff, Destination, SpoolingAuditSink
from atna.spool import Spool
from atna.syslog import OctetCountingDecoder, parse_message
from reactor_support import call_in_reactor, listen, reactor
from registry.ports import AuditRecord, TransactionContext
from support import wait_until

from atna_transport.transport_support import XML


def _builder(record, node, now):
    return XML.replace(b"Query", record.transaction.encode())


def _record(i: int) -> AuditRecord:
    return AuditRecord(f"ITI-{i}", "success", TransactionContext(f"ITI-{i}"))


def _sender(spool, destinations) -> AuditSender:
    return AuditSender(reactor(), spool, destinations, backoff=Backoff(0.05, 2.0, 0.5), poll_interval=0.05,
                       settle_seconds=0.3)


def _spool_and_drain(spool, sender, n: int) -> None:
    """`n` events spooled, then the sender started until the spool is empty, and stopped."""
    sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test")
    for i in range(n):
        sink.record(_record(i))
    call_in_reactor(sender.start)
    try:
        wait_until(lambda: spool.metrics()["depth"] == 0, what="the spool to drain")
    finally:
        call_in_reactor(sender.stop)


def test_local_destination_receives_every_message_in_order(tmp_path):
    received: list[bytes] = []
    lock = threading.Lock()

    def deliver(batch: list[bytes]) -> None:
        with lock:
            received.extend(batch)

    with Spool(tmp_path / "spool.db") as spool:
        sender = _sender(spool, [Destination("arr", "local", deliver=deliver)])
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test", on_spooled=sender.wake_threadsafe)
        for i in range(10):
            sink.record(_record(i))
        call_in_reactor(sender.start)
        try:
            for i in range(10, 20):
                sink.record(_record(i))
            wait_until(lambda: spool.metrics()["depth"] == 0, what="the spool to drain")
        finally:
            call_in_reactor(sender.stop)
        assert spool.metrics()["delivered"] == {"arr": 20}
    assert [parse_message(m).payload for m in received] == [
        XML.replace(b"Query", f"ITI-{i}".encode()) for i in range(20)
    ]


def test_local_destination_failure_is_retried(tmp_path):
    calls = []

    def deliver(batch: list[bytes]) -> None:
        calls.append(len(batch))
        if len(calls) < 3:
            raise OSError("the ARR database is down")

    with Spool(tmp_path / "spool.db") as spool:
        sender = _sender(spool, [Destination("arr", "local", deliver=deliver)])
        _spool_and_drain(spool, sender, 4)
        assert calls[:3] == [4, 4, 4]
        assert spool.metrics()["failed_attempts"] == {"arr": 2}


class _Receiver(protocol.Protocol):
    """RFC 5425 receiver; the factory's first connection is dropped after its first octets."""

    def connectionMade(self) -> None:
        self.decoder = OctetCountingDecoder(64 * 1024, non_transparent=False)
        self.factory.connections += 1
        self.drop = self.factory.connections == 1

    def dataReceived(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            assert isinstance(item, bytes)
            self.factory.messages.append(item)
        if self.drop:
            self.drop = False
            self.transport.loseConnection()


def test_events_written_on_a_lost_connection_are_sent_again(tmp_path):
    factory = protocol.Factory.forProtocol(_Receiver)
    factory.connections = 0
    factory.messages = []
    with listen(factory) as port, Spool(tmp_path / "spool.db") as spool:
        sender = _sender(spool, [Destination("arr", "tcp", "127.0.0.1", port.getHost().port)])
        _spool_and_drain(spool, sender, 50)
    ids = [parse_message(m).sd_param("carnet@32473", "eventId") for m in factory.messages]
    assert factory.connections >= 2
    assert len(set(ids)) == 50  # all of them, some twice: the receiver dedupes by eventId
    # per connection, spool order: the second connection starts again from the first unsettled event
    second = [parse_message(m).payload for m in factory.messages][-50:]
    assert second == [XML.replace(b"Query", f"ITI-{i}".encode()) for i in range(50)]


class _DatagramReceiver(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr) -> None:
        self.messages.append(datagram)


def _big_builder(record, node, now):
    # an ITI-18 query body can make an audit message larger than any UDP datagram (RFC 5426 §3.2)
    if record.transaction == "ITI-big":
        return XML.replace(b"Query", b"Query" + b"x" * 70_000)
    return _builder(record, node, now)


def test_a_message_too_big_for_udp_is_skipped_for_udp_only_and_counted(tmp_path, caplog):
    local: list[bytes] = []
    udp = _DatagramReceiver()
    port = call_in_reactor(lambda: reactor().listenUDP(0, udp, interface="127.0.0.1"))
    try:
        with Spool(tmp_path / "spool.db") as spool:
            sender = _sender(spool, [
                Destination("udp", "udp", "127.0.0.1", port.getHost().port),
                Destination("arr", "local", deliver=local.extend),
            ])
            sink = SpoolingAuditSink(spool, _big_builder, hostname="carnet.test", on_spooled=sender.wake_threadsafe)
            records = [_record(1), AuditRecord("ITI-big", "success", TransactionContext("ITI-18")), _record(2)]
            for r in records:
                sink.record(r)
            call_in_reactor(sender.start)
            try:
                wait_until(lambda: spool.metrics()["depth"] == 0, what="the spool to drain")
                wait_until(lambda: len(udp.messages) == 2, what="the UDP datagrams")
                # the destination is not stopped: a later event still goes out over UDP
                sink.record(_record(3))
                wait_until(lambda: len(udp.messages) == 3 and spool.metrics()["depth"] == 0,
                           what="the next event over UDP")
            finally:
                call_in_reactor(sender.stop)
            metrics = spool.metrics()
    finally:
        call_in_reactor(port.stopListening)
    assert [parse_message(m).payload for m in udp.messages] == [
        XML.replace(b"Query", f"ITI-{i}".encode()) for i in (1, 2, 3)
    ]
    # every event, the big one included, reached the other destination, in order
    payloads = [parse_message(m).payload for m in local]
    assert len(payloads) == 4 and len(payloads[1]) > 70_000
    assert metrics["failed_events"] == {"udp": 1}
    assert metrics["delivered"] == {"udp": 3, "arr": 4}
    assert any("cannot be sent to udp over UDP" in r.getMessage() for r in caplog.records)


def test_local_destination_batches_a_trickle_and_drains_a_backlog_at_once(tmp_path):
    """A full batch is followed at once by the next (a backlog drains without waiting for the poll);
    after a partial batch the spool was drained, and what arrives meanwhile waits for the next poll or
    wake-up, to go in one batch (not one small batch per event under a steady load)."""
    batches: list[int] = []
    lock = threading.Lock()
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test")

        def deliver(batch: list[bytes]) -> None:
            with lock:
                batches.append(len(batch))
                first_partial = batches == [200, 200, 50]
            if first_partial:  # events arriving while a partial batch is being delivered
                for i in range(3):
                    sink.record(_record(1000 + i))

        sender = AuditSender(reactor(), spool, [Destination("arr", "local", deliver=deliver)],
                             batch_size=200, poll_interval=30.0)
        for i in range(450):
            sink.record(_record(i))
        call_in_reactor(sender.start)
        try:
            wait_until(lambda: len(batches) >= 3, what="the backlog to drain", timeout=10)
            threading.Event().wait(1.0)
            with lock:
                assert batches == [200, 200, 50]
            call_in_reactor(sender.wake)
            wait_until(lambda: len(batches) == 4, what="the next wake-up's batch", timeout=10)
            assert batches == [200, 200, 50, 3]
        finally:
            call_in_reactor(sender.stop)
