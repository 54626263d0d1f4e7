"""What an endpoint dispatches to, by wsa:Action — Twisted-free so handlers can implement it.

Two optional extensions of an `Operation`, both used by the Document Repository:

- request streaming: an operation with `intake_factory()` receives the MTOM attachments of a
  request part by part as the edge reads them (`StreamingIntake`), instead of finding them
  collected in memory; `max_body_bytes` raises the edge's request size cap for that operation;
- response streaming: a `SoapReply` may carry `StreamingAttachment`s, whose chunks the edge
  pulls on a worker thread and writes as an MTOM response without building it in memory.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import attrs
from lxml import etree

from soap.envelope import SoapRequest
from soap.mtom import Attachment


@attrs.frozen(eq=False)
class StreamingAttachment:
    """An MTOM attachment of a reply whose bytes are produced while the response is written.

    `chunks` is iterated on a worker thread (it may block: blob store, decryption). If it
    raises, the response has already started: the edge aborts the connection so the peer sees
    a broken transfer, never a short document that looks complete. If it has a `close()`
    method, the edge calls it (possibly more than once: make it idempotent) whether or not the
    chunks were consumed, e.g. when the client leaves: release blob readers there.

    `size`, when known, is how many bytes `chunks` yields: the edge then writes a reply whose
    size is small (`soap.edge.ONE_PASS_BYTES`) in one pass, with a Content-Length, instead of
    streaming it; a failure while producing it is then answered with a Receiver fault. A wrong
    `size` only changes how the reply is written, never its bytes."""

    content_id: str  # without the angle brackets
    content_type: str
    chunks: Iterable[bytes]
    size: int | None = None


@attrs.frozen(eq=False)
class SoapReply:
    """A handler's answer: the element (or pre-serialized UTF-8 bytes of one element) to put in
    env:Body, MTOM attachments (the body then holds the xop:Include elements, see
    `soap.mtom.xop_include`), and the HTTP status (200 unless a handler says otherwise).
    Attachments are `Attachment`s with bytes, or `StreamingAttachment`s."""

    body: etree._Element | bytes  # or a `soap.envelope.BodyPieces`
    attachments: Sequence[Attachment | StreamingAttachment] = ()
    http_status: int = 200


class PartSink(Protocol):
    """Where one MTOM attachment part of a request is written, in order, as it is read."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> object:
        """The part is complete; the result is what the handler finds in
        `request.attachments[content_id]` (and in `request.xop`)."""
        ...


class StreamingIntake(Protocol):
    """One per request, made by `Operation.intake_factory()` once the edge has dispatched the
    request on the wsa:Action of its root part. Called on one worker thread, in this order:
    `on_root` once, `open_part` per attachment (each sink written and closed before the next
    part is opened), then the operation's `handle`. If anything fails before `handle` returns
    (a malformed part, a sink error, `handle` raising), `abort()` is called once: discard
    everything staged. Once `handle` has returned a reply the intake is not called again: a
    handler that answers a failure (e.g. a RegistryResponse with errors) discards what it
    staged itself."""

    def on_root(self, request: SoapRequest) -> None:
        """The parsed SOAP envelope (the MTOM root part), before any attachment. Its body still
        holds the xop:Include elements (which tell which Content-ID is which document)."""
        ...

    def open_part(self, content_id: str, headers: Mapping[str, str]) -> PartSink:
        """A sink for the attachment `content_id` (no angle brackets); `headers`: its MIME
        headers, lower-cased names (e.g. "content-type")."""
        ...

    def abort(self) -> None: ...


class Operation(Protocol):
    """One SOAP operation. `handle` runs on a worker thread; it may raise `SoapFaultError`
    (answered as that fault); any other exception becomes an env:Receiver fault.

    Optional attributes: `intake_factory: Callable[[], StreamingIntake]` (stream MTOM request
    attachments, see `StreamingIntake`; the request's `attachments` then map Content-ID → the
    sink's close() result) and `max_body_bytes: int` (this operation's cap on an MTOM request
    body, instead of the endpoint's; the root part keeps the endpoint's cap)."""

    action: str
    response_action: str

    def handle(self, request: SoapRequest, context: Any) -> SoapReply: ...


@attrs.frozen
class FunctionOperation:
    """An `Operation` from a plain function `fn(request, context) -> SoapReply | element | bytes`.
    `transaction` (e.g. "ITI-42") names the IHE transaction for the default context."""

    action: str
    response_action: str
    fn: Callable[[SoapRequest, Any], Any]
    transaction: str | None = None

    def handle(self, request: SoapRequest, context: Any) -> SoapReply:
        result = self.fn(request, context)
        return result if isinstance(result, SoapReply) else SoapReply(result)


@attrs.frozen
class StreamingOperation:
    """A `FunctionOperation` whose MTOM attachments stream into `intake_factory()`'s intake,
    and whose MTOM request body may reach `max_body_bytes` (None: the endpoint's cap)."""

    action: str
    response_action: str
    fn: Callable[[SoapRequest, Any], Any]
    intake_factory: Callable[[], StreamingIntake]
    transaction: str | None = None
    max_body_bytes: int | None = None

    def handle(self, request: SoapRequest, context: Any) -> SoapReply:
        result = self.fn(request, context)
        return result if isinstance(result, SoapReply) else SoapReply(result)
