"""The ARR's syslog receivers (Twisted edge): TLS (RFC 5425), plain TCP, UDP (RFC 5426).

Every received message goes to one `BatchedIngest`, which groups messages into batches and runs
`ArrStore.ingest` (parse + one database transaction per batch) on the thread pool:

- batches of up to `max_batch` messages, flushed when full or `max_delay` seconds after the
  first message (a lone event is stored within that delay); at most `max_in_flight` batches run
  at once (SQLite has one writer anyway);
- the queue is bounded: when more than `high_water` messages wait (queued + in flight), stream
  connections are paused (`transport.pauseProducing()`: TCP flow control slows the sender, nothing
  is dropped) and resumed below `low_water`; UDP cannot be paused, so datagrams over the bound are
  dropped and counted (RFC 5426 §3.1: UDP delivery is best effort anyway);
- a batch whose transaction fails (database down) is put back and retried after a growing delay,
  while the listeners stay paused by the bound: events wait rather than vanish;
- a malformed message (bad syslog, bad XML, not an audit message) is counted and logged, never
  raised; a framing error (RFC 5425 §4.3 MSG-LEN) that loses the stream closes that connection,
  an oversize frame is skipped. Nothing a peer sends can stop a listener.

Server TLS context factories (client-certificate checking, ITI-19) are made elsewhere and passed in.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import attrs
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.threads import deferToThreadPool

from atna.arr.store import ArrStore, IngestResult
from atna.syslog import DEFAULT_MAX_MESSAGE_BYTES, UDP_MAX_PAYLOAD, FramingProblem, OctetCountingDecoder

log = logging.getLogger("carnet.atna.arr")


@attrs.define
class ReceiverCounters:
    """What the receivers did since they started (for metrics and tests)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    dropped: int = 0  # UDP datagrams refused while the queue was full
    framing_errors: int = 0
    connections: int = 0
    batches: int = 0
    failed_batches: int = 0
    paused: int = 0  # times a connection was paused for backpressure


class BatchedIngest:
    """Bounded, batched, retried ingestion on the thread pool (see the module docstring)."""

    def __init__(
        self,
        store: ArrStore,
        *,
        reactor: Any,
        threadpool: Any,
        max_batch: int = 500,
        max_delay: float = 0.05,
        max_in_flight: int = 2,
        high_water: int = 20_000,
        low_water: int | None = None,
        retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_in_flight = max_in_flight
        self.high_water = high_water
        self.low_water = high_water // 2 if low_water is None else low_water
        self.retry_delays = retry_delays
        self.counters = ReceiverCounters()
        self._queue: deque[tuple[bytes, str | None]] = deque()
        self._in_flight = 0
        self._in_flight_messages = 0
        self._timer: Any = None
        self._retry_at: Any = None
        self._failures = 0
        self._paused: set[Any] = set()
        self._idle_waiters: list[Any] = []

    # --- intake (reactor thread) --------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages received and not yet stored (queued + in flight)."""
        return len(self._queue) + self._in_flight_messages

    def full(self) -> bool:
        return self.backlog >= self.high_water

    def submit(self, raw: bytes, peer: str | None = None) -> None:
        self.counters.received += 1
        self._queue.append((raw, peer))
        if len(self._queue) >= self.max_batch:
            self._flush()
        elif self._timer is None and self._retry_at is None:
            self._timer = self.reactor.callLater(self.max_delay, self._on_timer)

    def pause(self, transport: Any) -> None:
        """Pause a stream transport until the backlog drains (called by the protocol when full)."""
        if transport not in self._paused:
            self._paused.add(transport)
            self.counters.paused += 1
            transport.pauseProducing()

    def forget(self, transport: Any) -> None:
        self._paused.discard(transport)

    def when_idle(self) -> Any:
        """A Deferred fired once everything received so far is stored (tests, shutdown)."""
        from twisted.internet.defer import Deferred, succeed

        if not self._queue and not self._in_flight:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        if self._queue and self._timer is None and self._retry_at is None:
            self._flush()
        return d

    # --- batches ---------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight and self._retry_at is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._in_flight += 1
            self._in_flight_messages += len(batch)
            raws = [raw for raw, _ in batch]
            peers = [peer for _, peer in batch]
            d = deferToThreadPool(self.reactor, self.threadpool, self.store.ingest, raws, peers=peers)
            d.addCallbacks(self._stored, self._failed, errbackArgs=(batch,))
            d.addBoth(self._settled, len(batch))
        if self._queue and self._timer is None and self._retry_at is None and self._in_flight < self.max_in_flight:
            self._timer = self.reactor.callLater(self.max_delay, self._on_timer)

    def _stored(self, result: IngestResult) -> None:
        self._failures = 0
        c = self.counters
        c.batches += 1
        c.stored += result.stored
        c.duplicates += result.duplicates
        c.malformed += result.malformed
        for problem in result.problems[:10]:
            log.warning("malformed audit message refused: %s", problem)
        if len(result.problems) > 10:
            log.warning("… and %d more malformed audit messages in the batch", len(result.problems) - 10)

    def _failed(self, failure: Any, batch: list[tuple[bytes, str | None]]) -> None:
        self.counters.failed_batches += 1
        delay = self.retry_delays[min(self._failures, len(self.retry_delays) - 1)]
        self._failures += 1
        log.error("storing %d audit messages failed (%s); retrying in %.1f s", len(batch), failure.getErrorMessage(), delay)
        self._queue.extendleft(reversed(batch))
        if self._retry_at is None:
            self._retry_at = self.reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_at = None
        self._flush()

    def _settled(self, _result: Any, size: int) -> None:
        self._in_flight -= 1
        self._in_flight_messages -= size
        self._flush()
        if self._paused and self.backlog <= self.low_water:
            paused, self._paused = self._paused, set()
            for transport in paused:
                try:
                    transport.resumeProducing()
                except Exception:  # noqa: BLE001 - a connection closed meanwhile
                    pass
        if not self._queue and not self._in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def stop(self) -> Any:
        """Store what is queued; a Deferred fired when done (call before stopping the pool)."""
        if self._retry_at is not None and self._retry_at.active():
            self._retry_at.cancel()
            self._retry_at = None
        return self.when_idle()


# --- stream: TLS (RFC 5425) and plain TCP ------------------------------------------------------


class SyslogStreamProtocol(Protocol):
    """One syslog connection: RFC 5425 §4.3 octet-counted frames (and RFC 6587 LF-terminated ones)."""

    def __init__(self, ingest: BatchedIngest, max_message_bytes: int) -> None:
        self.ingest = ingest
        self.decoder = OctetCountingDecoder(max_message_bytes)
        self.peer: str | None = None

    def connectionMade(self) -> None:
        self.ingest.counters.connections += 1
        peer = self.transport.getPeer()
        self.peer = getattr(peer, "host", None)

    def dataReceived(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, FramingProblem):
                self.ingest.counters.framing_errors += 1
                log.warning("syslog framing problem from %s: %s", self.peer, item.detail)
                if item.fatal:
                    self.transport.loseConnection()
                    return
                continue
            self.ingest.submit(item, self.peer)
        if self.ingest.full():
            self.ingest.pause(self.transport)

    def connectionLost(self, reason: Any = None) -> None:
        self.ingest.forget(self.transport)


class SyslogStreamFactory(Factory):
    def __init__(self, ingest: BatchedIngest, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.ingest = ingest
        self.max_message_bytes = max_message_bytes

    def buildProtocol(self, addr: Any) -> Protocol:
        proto = SyslogStreamProtocol(self.ingest, self.max_message_bytes)
        proto.factory = self
        return proto


# --- UDP (RFC 5426) ----------------------------------------------------------------------------


class SyslogDatagramProtocol(DatagramProtocol):
    """RFC 5426 §3.1: one syslog message per datagram, no framing."""

    def __init__(self, ingest: BatchedIngest) -> None:
        self.ingest = ingest

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.ingest.full():
            self.ingest.counters.dropped += 1
            return
        # Some senders end a datagram with LF or NUL (not part of the message).
        message = datagram.rstrip(b"\n\x00") if datagram[-1:] in (b"\n", b"\x00") else datagram
        if not message:
            self.ingest.counters.malformed += 1
            return
        self.ingest.submit(message, addr[0] if addr else None)


# --- listening ---------------------------------------------------------------------------------


def listen_tls(
    reactor: Any, ingest: BatchedIngest, context_factory: Any, *, port: int = 6514, interface: str = "",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Any:
    """Syslog over TLS (RFC 5425; IANA port 6514). `context_factory`: a server TLS context factory
    (e.g. `twisted.internet.ssl.CertificateOptions` with `requireCertificate=True` for ITI-19)."""
    factory = SyslogStreamFactory(ingest, max_message_bytes=max_message_bytes)
    return reactor.listenSSL(port, factory, context_factory, interface=interface)


def listen_tcp(
    reactor: Any, ingest: BatchedIngest, *, port: int = 0, interface: str = "127.0.0.1",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Any:
    """Syslog over plain TCP, octet-counted (tests and a local Carnet; not for the network)."""
    factory = SyslogStreamFactory(ingest, max_message_bytes=max_message_bytes)
    return reactor.listenTCP(port, factory, interface=interface)


def listen_udp(reactor: Any, ingest: BatchedIngest, *, port: int = 514, interface: str = "") -> Any:
    """Syslog over UDP (RFC 5426; port 514). Datagrams up to 65 507 octets (§3.2)."""
    return reactor.listenUDP(port, SyslogDatagramProtocol(ingest), interface=interface, maxPacketSize=UDP_MAX_PAYLOAD + 1)
