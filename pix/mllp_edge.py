"""Twisted edge of the HL7 v2 PIX Manager: the MLLP listener (`MllpFactory`) and the ITI-10
update sender (`MllpUpdateSender`). Framing is `pix.mllp` (sans-I/O); message handling is a plain
blocking callable (`pix.hl7v2_service.Hl7v2Service`) run on a thread pool.

Listener behaviour (per connection):
- messages are handled one after the other, in arrival order, and answered in that order: a
  client may pipeline several messages before reading the acknowledgments (the effects of a feed
  are visible to a query sent after it on the same connection). Messages already waiting are
  handed to the pool as one batch (one thread hop for many messages; a handler with
  `handle_batch` gets them together, and its answers are written only once it returns, i.e.
  after the work they acknowledge is committed);
- a message over `max_message_bytes` is never buffered; when its MSH-10 can be read from its first
  bytes it is answered in order with an AR NAK (ERR-3 102, "message too large"), otherwise only
  logged;
- bytes outside a frame are dropped and logged; a frame cut by a new start block, or left
  unfinished when the peer closes, is dropped and logged — nothing is stored for it;
- back-pressure: with more than `max_pending` messages waiting, reading pauses until the queue
  drains (the peer's TCP window fills; nothing is dropped);
- the listener closes a connection on its own only for protocol abuse: more than
  `max_message_bytes` bytes received outside any frame since the last good frame (a peer that is
  not speaking MLLP, e.g. an HTTP client or a binary stream); and it never raises out of
  `dataReceived`.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Iterable

from twisted.internet import protocol
from twisted.internet.threads import deferToThreadPool

from pix import er7
from pix.iti10_update import Consumer, notifications
from pix.mllp import BytesDiscarded, FrameIncomplete, FrameInterrupted, MessageTooLarge, MllpDecoder, frame
from pix.xref import XrefChange

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
BATCH = 64


class _Reply(bytes):
    """An answer already built (a NAK for an oversize message), queued in order with messages."""


def _run_batch(handler: Callable[[bytes], bytes], batch: list[bytes], peer: str | None = None) -> list[bytes]:
    """Answers for `batch`, in order. A handler with `handle_batch(messages) -> answers` (the
    PIX service) gets the messages together (one database transaction for a run of feeds);
    otherwise each message is handed over alone."""
    handle_batch = getattr(handler, "handle_batch", None)
    messages = [item for item in batch if not isinstance(item, _Reply)]
    answers: list[bytes] | None = None
    if handle_batch is not None and messages:
        try:
            if getattr(handler, "wants_peer", False):
                answers = list(handle_batch(messages, peer=peer))
            else:
                answers = list(handle_batch(messages))
            if len(answers) != len(messages):
                raise RuntimeError(f"{len(answers)} answers for {len(messages)} messages")
        except Exception:  # the handler must always answer; if it raised, the edge does (207)
            log.exception("MLLP batch handler raised")
            answers = [_internal_error(item) for item in messages]
    out = []
    it = iter(answers) if answers is not None else None
    for item in batch:
        if isinstance(item, _Reply):
            out.append(bytes(item))
        elif it is not None:
            out.append(next(it))
        else:
            try:
                out.append(handler(item))
            except Exception:  # the handler must always answer; if it raised, the edge does (207)
                log.exception("MLLP handler raised")
                out.append(_internal_error(item))
    return out


def _internal_error(message: bytes) -> bytes:
    return er7.ack(er7.read_header(message), "AE", hl7_code="207", text="internal error")


class MllpProtocol(protocol.Protocol):
    def __init__(self, factory: "MllpFactory") -> None:
        self.factory = factory
        self.decoder = MllpDecoder(factory.max_message_bytes)
        self._queue: collections.deque[bytes] = collections.deque()
        self._busy = False
        self._paused = False
        self._closed = False
        self._garbage = 0

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.decoder.feed(data)
        except Exception:  # never expected (the decoder is total); never crash the reactor
            log.exception("MLLP decoder failure; closing the connection")
            self.transport.loseConnection()
            return
        for event in events:
            if isinstance(event, bytes):
                self._garbage = 0
                self._queue.append(event)
            elif isinstance(event, MessageTooLarge):
                self._garbage = 0
                nak = er7.nak_for_head(
                    event.head, hl7_code="102",
                    text=f"message larger than the {event.limit} bytes this PIX Manager accepts",
                )
                log.warning("MLLP %s: message over %d bytes skipped%s", self._peer(), event.limit,
                            "" if nak else " (no MSH-10 readable: not answered)")
                if nak is not None:
                    self._queue.append(_Reply(nak))
            elif isinstance(event, BytesDiscarded):
                self._garbage += event.count
                log.warning("MLLP %s: %d bytes outside a frame discarded", self._peer(), event.count)
                if self._garbage > self.factory.max_message_bytes:
                    log.warning("MLLP %s: not an MLLP peer (%d bytes of garbage); closing",
                                self._peer(), self._garbage)
                    self.transport.loseConnection()
                    self._closed = True
                    return
            elif isinstance(event, FrameInterrupted):
                log.warning("MLLP %s: frame interrupted by a new start block; dropped", self._peer())
        if len(self._queue) > self.factory.max_pending and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._pump()

    def connectionLost(self, reason=None) -> None:
        self._closed = True
        self.factory.connections -= 1
        for event in self.decoder.close():
            if isinstance(event, FrameIncomplete):
                log.warning("MLLP %s: connection closed inside a frame (%d bytes); dropped",
                            self._peer(), len(event.head))

    # -- in-order processing ------------------------------------------------------------------

    def _pump(self) -> None:
        if self._busy or self._closed or not self._queue:
            return
        batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        self._busy = True
        d = deferToThreadPool(self.factory.reactor, self.factory.threadpool, _run_batch, self.factory.handler, batch,
                              self._peer_host())
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, replies: list[bytes]) -> None:
        self._busy = False
        if self._closed:
            return
        self.transport.writeSequence([frame(r) for r in replies])
        self.factory.answered += len(replies)
        if self._paused and len(self._queue) <= self.factory.max_pending // 2:
            self._paused = False
            self.transport.resumeProducing()
        self._pump()

    def _failed(self, failure) -> None:  # _run_batch does not raise; a pool failure would
        self._busy = False
        log.error("MLLP %s: batch failed: %s", self._peer(), failure.getErrorMessage())
        self.transport.loseConnection()

    def _peer_host(self) -> str | None:
        try:
            return self.transport.getPeer().host
        except Exception:  # noqa: BLE001 - the audit then names no address
            return None

    def _peer(self) -> str:
        try:
            p = self.transport.getPeer()
            return f"{p.host}:{p.port}"
        except Exception:  # noqa: BLE001 - logging only
            return "?"


class MllpFactory(protocol.ServerFactory):
    """An MLLP listener answering every framed message with `handler(message) -> answer` run on
    `threadpool` (blocking database work). See the module doc for the behaviour."""

    def __init__(
        self,
        handler: Callable[[bytes], bytes],
        *,
        reactor,
        threadpool,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_pending: int = 1000,
    ) -> None:
        self.handler = handler
        self.reactor = reactor
        self.threadpool = threadpool
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.connections = 0
        self.answered = 0

    def buildProtocol(self, addr) -> MllpProtocol:
        p = MllpProtocol(self)
        p.factory = self
        return p


# --- ITI-10 update notifications: the MLLP client -------------------------------------------


class _ConsumerProtocol(protocol.Protocol):
    def __init__(self, channel: "_Channel") -> None:
        self.channel = channel
        self.decoder = MllpDecoder(DEFAULT_MAX_MESSAGE_BYTES)

    def connectionMade(self) -> None:
        self.channel._connected(self)

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, bytes):
                self.channel._acknowledged(event)

    def connectionLost(self, reason=None) -> None:
        self.channel._lost(self, reason)


class _Channel:
    """One consumer: a bounded queue, one connection, one message in flight, in order; retry
    with exponential backoff on connection failure or missing ACK."""

    def __init__(self, sender: "MllpUpdateSender", consumer: Consumer) -> None:
        self.sender = sender
        self.consumer = consumer
        self.queue: collections.deque[bytes] = collections.deque()
        self.proto: _ConsumerProtocol | None = None
        self.connecting = False
        self.in_flight = False
        self.delay = sender.initial_delay
        self.retry_call = None
        self.timeout_call = None
        self.delivered = 0
        self.dropped = 0

    def push(self, message: bytes) -> None:
        if len(self.queue) >= self.sender.queue_size:
            self.queue.popleft()
            self.dropped += 1
            log.error("ITI-10 %s: queue full (%d); oldest notification dropped",
                      self.consumer.name, self.sender.queue_size)
        self.queue.append(message)
        self._kick()

    def _kick(self) -> None:
        if self.sender.stopped or not self.queue or self.retry_call is not None:
            return
        if self.proto is None:
            if not self.connecting:
                self._connect()
            return
        if not self.in_flight:
            self.in_flight = True
            self.proto.transport.write(frame(self.queue[0]))
            self.timeout_call = self.sender.reactor.callLater(self.sender.ack_timeout, self._ack_timeout)

    def _connect(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        self.connecting = True
        endpoint = TCP4ClientEndpoint(self.sender.reactor, self.consumer.host, self.consumer.port,
                                      timeout=self.sender.connect_timeout)
        if self.consumer.tls:
            from twisted.internet.endpoints import wrapClientTLS

            if self.sender.tls_creator is None:
                raise ValueError(f"ITI-10 consumer {self.consumer.name}: tls needs the node's [tls] settings")
            endpoint = wrapClientTLS(self.sender.tls_creator(self.consumer.host), endpoint)
        d = connectProtocol(endpoint, _ConsumerProtocol(self))
        d.addErrback(self._connect_failed)

    def _connected(self, proto: _ConsumerProtocol) -> None:
        self.connecting = False
        self.proto = proto
        self._kick()

    def _connect_failed(self, failure) -> None:
        self.connecting = False
        log.warning("ITI-10 %s: cannot connect (%s); retry in %.1fs", self.consumer.name,
                    failure.getErrorMessage(), self.delay)
        self._retry_later()

    def _retry_later(self) -> None:
        if self.sender.stopped:
            return
        delay = self.delay
        self.delay = min(self.delay * 2, self.sender.max_delay)

        def fire() -> None:
            self.retry_call = None
            self._kick()

        self.retry_call = self.sender.reactor.callLater(delay, fire)

    def _cancel_timeout(self) -> None:
        if self.timeout_call is not None and self.timeout_call.active():
            self.timeout_call.cancel()
        self.timeout_call = None

    def _acknowledged(self, answer: bytes) -> None:
        self._cancel_timeout()
        if not self.in_flight or not self.queue:
            return
        self.in_flight = False
        message = self.queue.popleft()
        self.delay = self.sender.initial_delay
        try:
            parsed = er7.parse(answer)
            code = parsed.value(parsed.first("MSA"), 1)
        except er7.Er7Error:
            code = "?"
        self.sender._report(self.consumer, message, code)
        if code in ("AA", "CA"):
            self.delivered += 1
        else:  # the consumer refused it: resending the same content would not help
            self.dropped += 1
            header = er7.read_header(message)
            log.error("ITI-10 %s: notification %s answered %s; not resent", self.consumer.name,
                      header.control_id if header else "?", code)
        self._kick()

    def _ack_timeout(self) -> None:
        self.timeout_call = None
        log.warning("ITI-10 %s: no ACK within %.0fs; reconnecting", self.consumer.name, self.sender.ack_timeout)
        if self.proto is not None:
            self.proto.transport.abortConnection()

    def _lost(self, proto: _ConsumerProtocol, reason) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        self._cancel_timeout()
        if self.in_flight:  # not acknowledged: sent again on the next connection
            self.in_flight = False
            log.warning("ITI-10 %s: connection lost before the ACK; retry in %.1fs", self.consumer.name, self.delay)
            self._retry_later()
        elif self.queue:
            self._retry_later()

    def stop(self) -> None:
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        self._cancel_timeout()
        if self.proto is not None:
            self.proto.transport.loseConnection()


class MllpUpdateSender:
    """ITI-10 notifier: `notify(change)` (thread-safe, called by the service on a worker thread)
    builds the ADT^A31 for each consumer (pix.iti10_update) and queues them; one connection per
    consumer delivers them in order, one at a time, waiting for each ACK. A connection failure or
    a missing ACK is retried with exponential backoff (initial_delay doubling up to max_delay);
    a consumer's queue is bounded (queue_size: the oldest is dropped, logged); an AE/AR answer is
    logged and the message not resent."""

    def __init__(
        self,
        reactor,
        consumers: Iterable[Consumer],
        authorities: er7.AuthorityTable | None = None,
        *,
        sender: er7.ResponderIdentity = er7.ResponderIdentity(),
        queue_size: int = 10_000,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        ack_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        tls_creator: Callable[[str], Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.consumers = tuple(consumers)
        self.authorities = authorities or er7.AuthorityTable()
        self.sender = sender
        self.queue_size = queue_size
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        # host -> IOpenSSLClientConnectionCreator (config.tls.client_context_factory) for `tls` consumers
        self.tls_creator = tls_creator
        # (consumer, the A31 sent, the consumer's MSA-1) once a notification is answered: the ATNA
        # hook (pix.audit.iti10_recorder); called on a reactor thread-pool thread (it may block)
        self.on_outcome: Callable[[Consumer, bytes, str], None] | None = None
        self.stopped = False
        self.channels = {c: _Channel(self, c) for c in self.consumers}

    def _report(self, consumer: Consumer, message: bytes, code: str) -> None:
        if self.on_outcome is None:
            return
        hook = self.on_outcome

        def run() -> None:
            try:
                hook(consumer, message, code)
            except Exception:  # noqa: BLE001 - the audit never changes delivery
                log.exception("ITI-10 outcome hook failed")

        self.reactor.callInThread(run)

    def notify(self, change: XrefChange) -> None:
        if not self.consumers:
            return
        pending = notifications(change, self.consumers, self.authorities, sender=self.sender)
        if pending:
            self.reactor.callFromThread(self._enqueue, pending)

    def _enqueue(self, pending: list[tuple[Consumer, bytes]]) -> None:
        for consumer, message in pending:
            self.channels[consumer].push(message)

    def stop(self) -> None:
        """Stop retrying and close the connections (call on the reactor thread, at shutdown)."""
        self.stopped = True
        for channel in self.channels.values():
            channel.stop()
