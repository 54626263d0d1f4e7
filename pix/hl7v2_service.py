"""The PIX Manager's HL7 v2 dispatcher: one encoded message in, one encoded answer out
(`Hl7v2Service.handle`, the `handler` of `pix.mllp_edge.MllpFactory`). Twisted-free and blocking
(it runs on the edge's thread pool).

Routing on MSH-9 (message code, trigger event):
- ADT^A01/A04/A05/A08/A28/A31/A40 → ITI-8 (pix.iti8_feed), then the XrefChange goes to the
  ITI-10 notifier (if any);
- QBP^Q23 → ITI-9 (pix.iti9_query);
- any other ADT event (e.g. A03 discharge, A10 patient arriving: ADT events that carry no identity
  change for a PIX Manager) → AR, ERR 201 "unsupported event code" (HL7 v2.5 §2.9.2: AR when the
  event is not supported). We do not answer AA-and-ignore: a source must learn that the message
  had no effect on the cross-references;
- any other message type → AR, ERR 200; a QBP other than Q23 → AR, ERR 201.

Batches (`handle_batch`, what pix.mllp_edge hands over for messages a client pipelined): a run
of consecutive ITI-8 create/update messages is stored with one `feed_many` (one database
transaction; each message all or nothing on its own, with its own ACK); a merge or a query
first lets the feeds before it commit, so it sees them. Answers are returned after the commit.

Always an answer (DESIGN.md §3 rule 3): no MSH → AR with ERR 100 and an empty MSA-2; a body that
cannot be parsed → AR with ERR (100/102), MSA-2 = MSH-10 read from the raw bytes; an
InfrastructureError (database down) or a bug → AE with ERR 207, never a domain code.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from pix import er7, iti8_feed, iti9_query
from pix.iti10_update import UpdateNotifier
from pix.xref import CrossReferences
from registry.errors import InfrastructureError

log = logging.getLogger(__name__)


class Hl7v2Service:
    """Dispatch HL7 v2 messages to ITI-8 / ITI-9 over a `CrossReferences` store."""

    def __init__(
        self,
        xref: CrossReferences,
        notifier: UpdateNotifier | None = None,
        *,
        authorities: er7.AuthorityTable | None = None,
        responder: er7.ResponderIdentity = er7.ResponderIdentity(),
    ) -> None:
        self.xref = xref
        self.notifier = notifier
        self.authorities = authorities or er7.AuthorityTable()
        self.responder = responder
        # Called once per ITI-8 / ITI-9 message after its answer is final (and committed):
        # (the parsed request, the answer's bytes, the peer's host or None), or, when it has a
        # `batch(items, peer)` method, once per batch with the (request, answer) pairs. The ATNA
        # hook (pix.audit.v2_recorder); it must not raise into the answer.
        self.on_outcome: Callable[[er7.Er7Message, bytes, str | None], None] | None = None

    wants_peer = True  # pix.mllp_edge passes the connection's peer host to handle_batch

    def __call__(self, data: bytes) -> bytes:
        return self.handle(data)

    def handle(self, data: bytes) -> bytes:
        return self.handle_batch([data])[0]

    def handle_batch(self, messages: Sequence[bytes], peer: str | None = None) -> list[bytes]:
        """Answer several messages of one connection, in order (the MLLP edge hands over the
        messages a client pipelined). Consecutive ITI-8 create/update messages are stored with
        ONE `feed_many` (one database transaction, each message all or nothing on its own:
        pix.identities); anything else (a merge, a query) first lets the feeds before it commit,
        so a query sees every feed sent before it on the connection. Every answer is returned
        after the commit that holds its message: none is sent for uncommitted work."""
        out: list[bytes | None] = [None] * len(messages)
        feeds: list[tuple[int, er7.Er7Message]] = []
        handled: list[tuple[int, er7.Er7Message]] = []
        for n, data in enumerate(messages):
            routed = self._route(data)
            if isinstance(routed, bytes):
                out[n] = routed
                continue
            handled.append((n, routed))
            if routed.header.message_code == "ADT" and routed.header.trigger_event in iti8_feed.FEED_EVENTS:
                feeds.append((n, routed))
            else:
                self._flush(feeds, out)
                feeds = []
                out[n] = self._handle_one(routed)
        self._flush(feeds, out)
        if self.on_outcome is not None and handled:
            try:
                batch = getattr(self.on_outcome, "batch", None)
                if batch is not None:  # one call for the whole batch (one audit spool commit)
                    batch([(msg, out[n]) for n, msg in handled], peer)
                else:
                    for n, msg in handled:
                        self.on_outcome(msg, out[n], peer)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - an audit failure never changes the answer
                log.exception("PIX outcome hook failed for a batch of %d message(s)", len(handled))
        return out  # type: ignore[return-value]

    def _route(self, data: bytes) -> bytes | er7.Er7Message:
        """The answer when the message needs no store (unreadable, unsupported), else the parsed
        message (an ITI-8 or ITI-9 message)."""
        header = er7.read_header(data)
        if header is None:
            return er7.ack(None, "AR", hl7_code="100", locations=["MSH"],
                           text="no MSH segment: not an HL7 v2 message", responder=self.responder)
        try:
            msg = er7.parse(data, header)
        except er7.Er7Error as exc:
            return er7.ack(header, "AR", hl7_code=exc.hl7_code, locations=[exc.location] if exc.location else [],
                           text=str(exc), responder=self.responder)
        code, event = msg.header.message_code, msg.header.trigger_event
        if code == "ADT":
            if event not in iti8_feed.EVENTS:
                return self._reject(msg, "201", f"ADT event {event} is not a PIX identity feed event (ITI-8)")
            return msg
        if code == "QBP":
            if event != "Q23":
                return self._reject(msg, "201", f"QBP event {event} is not supported (the PIX Query is Q23)")
            return msg
        return self._reject(msg, "200", f"message type {code!r} is not supported by the PIX Manager")

    def _handle_one(self, msg: er7.Er7Message) -> bytes:
        header = msg.header
        code, event = header.message_code, header.trigger_event
        try:
            if code == "ADT":
                outcome = iti8_feed.handle(msg, self.xref, self.authorities, responder=self.responder)
                self._changed(outcome)
                return outcome.response
            return iti9_query.handle(msg, self.xref, self.authorities, responder=self.responder)
        except Exception as exc:
            return self._failed(msg, exc)

    def _flush(self, feeds: list[tuple[int, er7.Er7Message]], out: list) -> None:
        if not feeds:
            return
        try:
            results = iti8_feed.handle_many([m for _, m in feeds], self.xref, self.authorities,
                                            responder=self.responder)
        except Exception as exc:  # a bug: every message of the run is answered 207
            results = [exc] * len(feeds)
        for (n, msg), result in zip(feeds, results):
            if isinstance(result, iti8_feed.FeedOutcome):
                self._changed(result)
                out[n] = result.response
            else:
                out[n] = self._failed(msg, result)

    def _changed(self, outcome: iti8_feed.FeedOutcome) -> None:
        if outcome.change is not None and self.notifier is not None and outcome.change.groups:
            self._notify(outcome.change)

    def _failed(self, msg: er7.Er7Message, exc: BaseException) -> bytes:
        header = msg.header
        code, event = header.message_code, header.trigger_event
        if isinstance(exc, InfrastructureError):
            log.error("PIX %s^%s %s: infrastructure failure: %s", code, event, header.control_id, exc)
            return self._internal_error(msg, "the PIX Manager could not process the message now")
        # a bug: answered (207), logged with its traceback
        log.error("PIX %s^%s %s: unexpected failure", code, event, header.control_id,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return self._internal_error(msg, "internal error")

    def _reject(self, msg: er7.Er7Message, hl7_code: str, text: str) -> bytes:
        return er7.ack(msg.header, "AR", hl7_code=hl7_code, locations=["MSH^1^9"], text=text,
                       codec=msg.codec, responder=self.responder)

    def _internal_error(self, msg: er7.Er7Message, text: str) -> bytes:
        return er7.ack(msg.header, "AE", hl7_code="207", text=text, codec=msg.codec, responder=self.responder)

    def _notify(self, change) -> None:
        try:
            self.notifier.notify(change)
        except Exception:  # a notification failure never changes the answer to the source
            log.exception("PIX update notification (ITI-10) could not be queued")
