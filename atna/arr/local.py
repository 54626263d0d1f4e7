"""Carnet auditing to its own ARR, through the same spool (issue 5: "on the embedded defaults
Carnet audits to its own ARR").

The design: the sender (atna/sender.py) keeps its durable spool and its delivery loop for every
destination; a destination of kind `local` delivers a batch by calling `LocalArrDestination.deliver`
instead of writing to a socket. The batch is the same RFC 5424 messages the sender would frame
for TLS (with `[carnet@32473 eventId="…"]`); `deliver` returns a Deferred fired with the
`IngestResult` once the batch is committed in the ARR's tables, and the sender removes the events
from its spool only then. A crash between the commit and the spool removal resends the batch:
the ARR's dedupe on eventId stores each event once (at-least-once delivery, exactly-once storage).
A failure (database down) errbacks: the sender keeps the events and retries like for a remote ARR.

Why not a local TLS listener: same result, but it needs certificates on the embedded defaults and
a port, and an acknowledgement syslog does not have (RFC 5425 has none), so the spool could only
drop events on "written to the socket", not on "stored".
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.threads import deferToThreadPool

from atna.arr.store import ArrStore, IngestResult

LOCAL_PEER = "local"


class LocalArrDestination:
    def __init__(self, store: ArrStore, *, reactor: Any, threadpool: Any) -> None:
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool

    def deliver(self, messages: Sequence[bytes]) -> Any:
        """Store RFC 5424 audit messages (bytes, unframed); a Deferred[IngestResult] fired after
        the commit. Call on the reactor thread. Malformed messages are counted, not retried."""
        return deferToThreadPool(
            self.reactor, self.threadpool, self.store.ingest, list(messages), peer_address=LOCAL_PEER
        )

    def deliver_blocking(self, messages: Sequence[bytes]) -> IngestResult:
        """The same, from a thread that may block (a sender running on its own thread)."""
        return self.store.ingest(list(messages), peer_address=LOCAL_PEER)
