"""ITI-46 over the wire: a small Twisted SOAP 1.2 client sending PIXV3 Update Notifications.

`UpdateSender(reactor, consumers, responder)` is the `pix.iti46_update.UpdateNotifier` the
endpoint calls after an accepted ITI-44 feed. `notify` builds the PRPA_IN201302UV02 messages on
the calling thread (pure) and hands them to the reactor, where they wait in a bounded queue and
are POSTed (SOAP 1.2 + WS-Addressing, ITI TF-2x Appendix V, action urn:hl7-org:v3:PRPA_IN201302UV02)
by at most `concurrency` requests at a time. A consumer that cannot be reached, times out or
answers an HTTP error is retried with exponential backoff, up to `max_attempts`; a consumer that
answers an MCCI_IN000002UV01 with AE/AR refused the content: logged, not retried (resending the
same message would be refused again). Every dropped message is logged (queue full, attempts
exhausted). Notifications live in memory only: a restart loses those not yet delivered.
"""

from __future__ import annotations

import collections
import logging
from io import BytesIO
from typing import Any, Iterable

import attrs
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from pix import hl7v3 as V
from pix.iti46_update import ACTION, Consumer, Notification, notifications
from pix.xref import XrefChange
from repository.registry_client import soap_request_envelope
from soap.envelope import NS_SOAP12
from soap.xmlparse import XmlInputError, parse_xml

log = logging.getLogger("carnet.pix")

ACCEPTED = frozenset({"AA", "CA"})


@attrs.define
class _Job:
    notification: Notification
    attempt: int = 0


class UpdateSender:
    """Sends ITI-46 notifications to the configured consumers (reactor passed in)."""

    def __init__(
        self,
        reactor: Any,
        consumers: Iterable[Consumer],
        responder: V.Responder,
        *,
        agent: Any = None,
        max_queue: int = 10_000,
        concurrency: int = 4,
        max_attempts: int = 6,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.consumers = tuple(consumers)
        self.responder = responder
        self.agent = agent or Agent(reactor, connectTimeout=timeout)
        self.max_queue = max_queue
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.queue: collections.deque[_Job] = collections.deque()
        self.in_flight = 0
        self.waiting: dict[int, Any] = {}  # retries scheduled: id(job) → IDelayedCall
        self.delivered = 0
        self.refused = 0
        self.dropped = 0
        self._idle: list[defer.Deferred] = []
        self._stopped = False

    # --- any thread ------------------------------------------------------------------------------
    def notify(self, change: XrefChange) -> None:
        items = notifications(change, self.consumers, self.responder)
        if items:
            self.reactor.callFromThread(self._enqueue, items)

    # --- reactor thread --------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self.queue) + self.in_flight + len(self.waiting)

    def when_idle(self) -> defer.Deferred:
        """Fires when nothing is queued, in flight or waiting for a retry."""
        d: defer.Deferred = defer.Deferred()
        if self.pending() == 0:
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    def stop(self) -> None:
        """Cancel the retries scheduled and forget the queue (logged)."""
        self._stopped = True
        for call in self.waiting.values():
            if call.active():
                call.cancel()
        lost = len(self.queue) + len(self.waiting)
        if lost:
            log.warning("ITI-46: %d notification(s) not delivered at shutdown", lost)
        self.dropped += lost
        self.waiting.clear()
        self.queue.clear()
        self._check_idle()

    def _enqueue(self, items: Iterable[Notification]) -> None:
        for item in items:
            if self._stopped:
                self.dropped += 1
                continue
            if self.pending() >= self.max_queue:
                self.dropped += 1
                log.error(
                    "ITI-46: queue full (%d): notification %s for %s dropped",
                    self.max_queue, item.message_id, item.consumer.url,
                )
                continue
            self.queue.append(_Job(item))
        self._pump()

    def _pump(self) -> None:
        while self.queue and self.in_flight < self.concurrency:
            job = self.queue.popleft()
            self.in_flight += 1
            d = self._send(job.notification)
            d.addCallbacks(self._sent, self._failed, callbackArgs=(job,), errbackArgs=(job,))
            d.addBoth(self._done)
        self._check_idle()

    def _send(self, item: Notification) -> defer.Deferred:
        envelope = soap_request_envelope(ACTION, item.body, to=item.consumer.url, message_id=f"urn:uuid:{item.message_id}")
        headers = Headers({b"content-type": [f'application/soap+xml; charset=UTF-8; action="{ACTION}"'.encode()]})
        d = self.agent.request(b"POST", item.consumer.url.encode("ascii"), headers, FileBodyProducer(BytesIO(envelope)))
        d.addTimeout(self.timeout, self.reactor)

        def read(response):
            done: defer.Deferred = defer.Deferred()
            response.deliverBody(_Collect(done))
            return done.addCallback(lambda body: (response.code, body))

        return d.addCallback(read)

    def _sent(self, result: tuple[int, bytes], job: _Job) -> None:
        status, body = result
        item = job.notification
        ack = _read_ack(body)
        if ack is not None:
            self._report(item, ack.type_code)
        if ack is not None and ack.type_code in ACCEPTED:
            self.delivered += 1
            return
        if ack is not None and ack.type_code in ("AE", "CE", "AR", "CR") and 200 <= status < 300:
            self.refused += 1
            log.error(
                "ITI-46: %s refused notification %s (%s): %s",
                item.consumer.url, item.message_id, ack.type_code,
                "; ".join(f"{d.code} {d.text}" for d in ack.details) or "no detail",
            )
            return
        self._retry(job, f"HTTP {status}" + ("" if ack else ", no MCCI_IN000002UV01 in the answer"))

    def _report(self, item: Any, type_code: str) -> None:
        """The ATNA hook (`on_outcome(notification, ack typeCode)`, pix.audit.iti46_recorder), on a
        reactor thread-pool thread (it may block)."""
        hook = getattr(self, "on_outcome", None)
        if hook is None:
            return

        def run() -> None:
            try:
                hook(item, type_code)
            except Exception:  # noqa: BLE001 - the audit never changes delivery
                log.exception("ITI-46 outcome hook failed")

        self.reactor.callInThread(run)

    def _failed(self, failure: Any, job: _Job) -> None:
        self._retry(job, failure.getErrorMessage() or failure.type.__name__)

    def _retry(self, job: _Job, why: str) -> None:
        item = job.notification
        job.attempt += 1
        if self._stopped or job.attempt >= self.max_attempts:
            self.dropped += 1
            log.error(
                "ITI-46: notification %s to %s not delivered after %d attempt(s): %s",
                item.message_id, item.consumer.url, job.attempt, why,
            )
            return
        delay = min(self.max_delay, self.base_delay * 2 ** (job.attempt - 1))
        log.warning("ITI-46: %s failed (%s); retry %d in %.1f s", item.consumer.url, why, job.attempt, delay)
        key = id(job)

        def again() -> None:
            self.waiting.pop(key, None)
            self.queue.append(job)
            self._pump()

        self.waiting[key] = self.reactor.callLater(delay, again)

    def _done(self, result: Any) -> None:
        self.in_flight -= 1
        if hasattr(result, "getTraceback"):  # a bug in _sent/_failed: logged, never silent
            log.error("ITI-46: sender failure:\n%s", result.getTraceback())
        self._pump()

    def _check_idle(self) -> None:
        if self.pending() == 0 and self._idle:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)


class _Collect(Protocol):
    """Collects a response body (at most MAX_ANSWER_BYTES; an ack is small)."""

    MAX_ANSWER_BYTES = 1024 * 1024

    def __init__(self, done: defer.Deferred) -> None:
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.size += len(data)
        if self.size <= self.MAX_ANSWER_BYTES:
            self.parts.append(data)

    def connectionLost(self, reason) -> None:  # noqa: N802
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def _read_ack(data: bytes) -> V.AckSummary | None:
    """The MCCI_IN000002UV01 in a SOAP 1.2 answer, or None."""
    try:
        root = parse_xml(data)
    except XmlInputError:
        return None
    body = root.find(f"{{{NS_SOAP12}}}Body")
    element = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if element is None or element.tag != V.h(V.ACK):
        return None
    return V.read_ack(element)
