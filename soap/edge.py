"""The Twisted edge of the SOAP layer (the only Twisted module in `soap/`, DESIGN.md §1).

`SoapEndpoint` is a leaf `Resource`: GET `?wsdl` serves the WSDL; POST decodes the request (plain
SOAP 1.2 or MTOM/XOP), dispatches on wsa:Action to an `Operation` run on a thread pool, and writes
the reply. MTOM requests are dispatched as soon as their root part is read; an operation with an
`intake_factory` then receives each attachment part as it is read (`soap.operation.StreamingIntake`),
and may accept larger bodies (`max_body_bytes`). Replies with `StreamingAttachment`s are written
as chunked MTOM with flow control (`_StreamWriter`), unless their announced sizes add up to at
most `ONE_PASS_BYTES`: such a reply is produced whole on the worker and written with a
Content-Length (a failure while producing it is then a fault, never a short document). Every exception becomes a well-formed SOAP 1.2
fault (DESIGN.md §3 rule 3): peer errors → env:Sender (HTTP 400), unknown action → env:Sender +
wsa:ActionNotSupported, anything else → env:Receiver (HTTP 500) with no internals in the body; a
streamed reply failing after its headers were sent aborts the connection. The reactor and the
thread pool are passed in, never imported here.
"""

from __future__ import annotations

import io
import threading
import traceback
from typing import Any, Callable, Iterator, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from soap.bodypipe import BodyPipe
from soap.envelope import (
    SOAP_CONTENT_TYPE,
    ActionNotSupported,
    BodyPieces,
    MalformedMessage,
    ReceiverFault,
    RequestTooLarge,
    SoapFaultError,
    SoapRequest,
    build_fault,
    build_response,
    build_response_pieces,
    classify_content_type,
    parse_envelope,
    parse_soap,
)
from soap.mtom import (
    MemorySink,
    MtomReader,
    SinkFactory,
    close_chunks,
    build_mtom,
    build_mtom_stream,
    resolve_xop,
)
from soap.operation import Operation, SoapReply, StreamingAttachment
from soap.spill import MEMORY_BYTES as SPILL_MEMORY_BYTES
from soap.spill import EphemeralSpool
from soap.xmlparse import DEFAULT_MAX_BYTES, XmlInputError, parse_xml

READ_CHUNK = 64 * 1024
# MTOM requests at least this large (Content-Length) are processed as their body arrives
# (`SoapEndpoint.stream`); smaller ones are received whole first, which costs less per request.
STREAM_MIN_BYTES = 1024 * 1024
MAX_STREAMING_REQUESTS = 8  # per endpoint and process; more wait for their whole body first
# A reply with streamed attachments whose sizes are all known (`StreamingAttachment.size`) and
# add up to at most this many bytes is produced whole on the worker and written with a
# Content-Length: one thread hop, no chunked coding (most documents: a 1 MB retrieve).
ONE_PASS_BYTES = 2 * 1024 * 1024
# A larger streamed reply: its first batch (about this many bytes) is pulled on the worker before
# anything is sent (a failure that early is still a fault), then batches of NEXT_BATCH_BYTES, one
# worker hop each (one hop per 64 kB chunk would cost more than decrypting it). Memory: a few
# batches per reply whatever its size.
STREAM_BATCH_BYTES = 512 * 1024
NEXT_BATCH_BYTES = 1024 * 1024
# How much a connection writing a large reply passes to one send() (Twisted's default: 128 KiB).
SEND_LIMIT_BYTES = 2 * 1024 * 1024


class SoapHttpRequest(Request):
    """A twisted.web Request that does not treat a POST body as an HTML form: Twisted otherwise
    parses every POST's Content-Type with the `email` package (about a tenth of an ITI-42
    registration's CPU) only to find it is not a form. SOAP endpoints never read form fields;
    the query string (`?wsdl`) is still parsed.

    A large MTOM POST to an endpoint that streams it (`SoapSite.start_streaming`) is handed to a
    worker as soon as its headers are in, its body through a `BodyPipe` as it arrives."""

    _streaming: Any = None  # the Deferred[_Answer] of a body streamed as it arrives

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        super().gotLength(length)
        start = getattr(getattr(self.channel, "site", None), "start_streaming", None)
        if start is not None:
            self._streaming = start(self, length)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if isinstance(self.content, BodyPipe):
            self.content.finish()
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if isinstance(self.content, BodyPipe):
            self.content.fail(reason)
        super().connectionLost(reason)


class SoapSite(Site):
    """The HTTP site of the SOAP endpoints: `SoapHttpRequest`s, and no access log by default
    (Twisted's default writes one formatted line per request to its legacy log, which Carnet
    never starts; audit records go to the AuditSink). Pass `access_log=True` to keep Twisted's."""

    def __init__(self, resource: Resource, *, access_log: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("requestFactory", SoapHttpRequest)
        super().__init__(resource, **kwargs)
        self.access_log = access_log
        self._streamers: dict[bytes, SoapEndpoint] | None = None

    def log(self, request) -> None:
        if self.access_log:
            super().log(request)

    def start_streaming(self, request: Any, length: int | None) -> Any:
        """Called when a request's headers are complete (`SoapHttpRequest.gotLength`): for an MTOM
        POST of at least `STREAM_MIN_BYTES` (its Content-Length) to an endpoint with a streaming
        operation, start its processing now (`SoapEndpoint.stream`) and return its Deferred; None
        leaves the request to the usual path (the body received whole, then processed)."""
        channel = request.channel
        command, raw = getattr(channel, "_command", None), getattr(channel, "_path", None)
        if command != b"POST" or raw is None or length is None or length < STREAM_MIN_BYTES:
            return None
        ctype = request.requestHeaders.getRawHeaders(b"content-type") or [b""]
        if not ctype[0].lstrip().lower().startswith(b"multipart/related"):
            return None
        endpoint = self._streaming_endpoints().get(raw.partition(b"?")[0])
        if endpoint is None:
            return None
        return endpoint.stream(request, raw, length)

    def _streaming_endpoints(self) -> dict[bytes, "SoapEndpoint"]:
        """Path → SoapEndpoint, for the endpoints of the resource tree that stream MTOM intakes."""
        if self._streamers is None:
            found: dict[bytes, SoapEndpoint] = {}
            todo = [(b"", self.resource)]
            while todo:
                prefix, node = todo.pop()
                if isinstance(node, SoapEndpoint):
                    if node.streams_mtom:
                        found[prefix or b"/"] = node
                    continue
                for name, child in getattr(node, "children", {}).items():
                    todo.append((prefix + b"/" + name, child))
            self._streamers = found
        return self._streamers

    def getContentFile(self, length: int | None):  # noqa: N802 - twisted.web.server.Request asks its site
        """Where a request body is kept while it arrives: in memory when its announced length is
        small, else in an `EphemeralSpool` (encrypted under a key of its own once on disk; never
        a temporary file in clear, as Twisted's default would be)."""
        if length is not None and length < SPILL_MEMORY_BYTES:
            return io.BytesIO()
        return EphemeralSpool(SPILL_MEMORY_BYTES)


@attrs.frozen
class HttpRequestInfo:
    """What the edge read from the HTTP request on the reactor thread (handlers run elsewhere)."""

    method: str
    uri: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    client_host: str | None
    client_port: int | None
    host: str | None
    is_secure: bool

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.is_secure else "http"
        return f"{scheme}://{self.host}{self.path}" if self.host else self.path


ContextFactory = Callable[[SoapRequest, HttpRequestInfo], Any]


@attrs.frozen
class _Answer:
    status: int
    content_type: str
    body: bytes  # or, for a plain SOAP reply of `BodyPieces`, the list of the envelope's pieces
    error: str | None = None  # a traceback to log on the reactor thread
    # A streamed reply: `body` is its first batch, `rest` the iterator of the following pieces.
    rest: Iterator[bytes] | None = None


@attrs.define
class _MtomExchange:
    """What the worker learned so far about one MTOM request (for faults and clean-up)."""

    request: SoapRequest | None = None
    operation: Operation | None = None
    intake: Any = None


class SoapEndpoint(Resource):
    isLeaf = True
    log = Logger()

    def __init__(
        self,
        operations: Mapping[str, Operation],
        *,
        reactor: Any,
        threadpool: Any,
        wsdl: bytes | Callable[[str], bytes] | None = None,
        understood_headers: tuple[str, ...] | frozenset[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BYTES,
        context_factory: ContextFactory | None = None,
        sink_factory: SinkFactory | None = None,
        check_action_mismatch: bool = True,
    ):
        """`operations`: wsa:Action → Operation. `wsdl`: bytes, or a function of the endpoint URL.
        `understood_headers`: extra header QNames ("{ns}local") honoured for mustUnderstand.
        `sink_factory`: where MTOM attachments are written (default: memory).
        `check_action_mismatch`: fault when the media type's action differs from wsa:Action."""
        super().__init__()
        self.operations = dict(operations)
        self.reactor = reactor
        self.threadpool = threadpool
        self.wsdl = wsdl
        self.understood = frozenset(understood_headers)
        self.max_body_bytes = max_body_bytes
        self.context_factory = context_factory or self.default_context
        self.sink_factory = sink_factory
        self.check_action_mismatch = check_action_mismatch
        self._streaming_lock = threading.Lock()
        self._streaming_now = 0
        # An MTOM request is refused at once above the largest cap of any operation; the
        # operation's own cap is checked once its root part is dispatched.
        self.max_mtom_body_bytes = max(
            [max_body_bytes] + [getattr(op, "max_body_bytes", None) or 0 for op in self.operations.values()]
        )

    # --- HTTP ----------------------------------------------------------------------------------

    def render_GET(self, request):
        query = request.uri.partition(b"?")[2]
        args = {item.partition(b"=")[0].lower() for item in query.split(b"&")} | {k.lower() for k in request.args}
        if b"wsdl" in args and self.wsdl is not None:
            info = _request_info(request)
            wsdl = self.wsdl(info.endpoint) if callable(self.wsdl) else self.wsdl
            request.setHeader(b"content-type", b"text/xml; charset=UTF-8")
            return wsdl
        request.setResponseCode(404 if b"wsdl" in args else 405)
        request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
        return b"POST a SOAP 1.2 message here, or GET ?wsdl\n"

    def render_POST(self, request):
        streamed = getattr(request, "_streaming", None)
        if streamed is not None:  # already being processed as it arrived (`stream`)
            request._streaming = None
            streamed.addCallback(self._write, request)
            streamed.addErrback(self._write_failure, request)
            return NOT_DONE_YET
        info = _request_info(request)
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        content.seek(0)
        d = deferToThreadPool(self.reactor, self.threadpool, self.process, info, content, size)
        d.addCallback(self._write, request)
        d.addErrback(self._write_failure, request)
        return NOT_DONE_YET

    def _write(self, answer: _Answer, request) -> None:
        if answer.error:
            self.log.error("SOAP request {uri} failed:\n{error}", uri=request.uri, error=answer.error)
        if answer.rest is not None:
            _StreamWriter(self, request, answer).start()
            return
        if getattr(request, "_disconnected", False):
            return
        request.setResponseCode(answer.status)
        request.setHeader(b"content-type", answer.content_type.encode("latin-1"))
        pieces = answer.body if isinstance(answer.body, list) else [answer.body]
        size = sum(map(len, pieces))
        request.setHeader(b"content-length", str(size).encode())
        if size > SEND_LIMIT_BYTES:
            _widen_send_limit(request)
        _write_pieces(request, pieces)
        request.finish()

    def _write_failure(self, failure, request) -> None:
        # Only reached if `process` itself broke (it catches everything): still answer a fault.
        self.log.failure("SOAP endpoint failure", failure)
        answer = _Answer(500, SOAP_CONTENT_TYPE, build_fault("Receiver", "internal error"))
        try:
            self._write(answer, request)
        except Exception:  # noqa: BLE001 - the connection may be gone
            self.log.failure("could not write the fault")

    # --- MTOM streamed as it arrives (issue 3) -----------------------------------------------------

    @property
    def streams_mtom(self) -> bool:
        """Whether an operation of this endpoint takes its MTOM parts through a streaming intake."""
        return any(getattr(op, "intake_factory", None) is not None for op in self.operations.values())

    def stream(self, request: Any, raw_path: bytes, length: int) -> Any:
        """Start processing an MTOM request whose headers just arrived, on a thread of its own, its
        body read from a `BodyPipe` the request writes as it arrives (backpressure: the connection
        is paused while more than `bodypipe.HIGH_WATER` bytes wait). At most
        `MAX_STREAMING_REQUESTS` at once per endpoint, so that slow uploads never hold the worker
        pool the other transactions need; beyond that (None) a body is received whole first, as
        any other. Returns a Deferred[_Answer] fired on the reactor."""
        with self._streaming_lock:
            if self._streaming_now >= MAX_STREAMING_REQUESTS:
                return None
            self._streaming_now += 1
        transport = request.channel.transport
        pipe = BodyPipe(pause=transport.pauseProducing, resume=transport.resumeProducing,
                        call_in_reactor=self.reactor.callFromThread)
        previous, request.content = request.content, pipe
        try:
            previous.close()
        except Exception:  # noqa: BLE001 - an empty content file
            pass
        info = _request_info(request, raw_path)
        done = Deferred()

        def run() -> None:
            try:
                answer = self.process(info, pipe, length)
            except BaseException as exc:  # noqa: BLE001 - `process` never raises; answered as a fault
                answer = _fault_answer(exc, None)
            finally:
                pipe.discard()  # the rest of the body, if any, is dropped as it arrives
                with self._streaming_lock:
                    self._streaming_now -= 1
            self.reactor.callFromThread(done.callback, answer)

        threading.Thread(target=run, name="carnet-mtom-intake", daemon=True).start()
        return done

    # --- worker thread -------------------------------------------------------------------------

    def process(self, info: HttpRequestInfo, content: Any, size: int) -> _Answer:
        """Decode, dispatch, encode; never raises. Runs on the thread pool (pure but for `content`)."""
        relates_to = None
        try:
            media = classify_content_type(info.headers.get("content-type"))
            if media.is_mtom:
                return self.process_mtom(info, content, size, media)
            if size > self.max_body_bytes:
                raise RequestTooLarge(f"request body of {size} bytes exceeds {self.max_body_bytes} bytes")
            soap_request = parse_soap(
                content.read(),
                understood=self.understood,
                content_type_action=media.action if self.check_action_mismatch else None,
                max_bytes=self.max_body_bytes,
            )
            relates_to = soap_request.message_id
            operation = self.operations.get(soap_request.action)
            if operation is None:
                raise ActionNotSupported(soap_request.action)
            context = self.context_factory(soap_request, info)
            reply = operation.handle(soap_request, context)
            if not isinstance(reply, SoapReply):
                reply = SoapReply(reply)
            return self.encode(operation, reply, relates_to, False)
        except Exception as exc:  # noqa: BLE001 - every failure is answered (DESIGN.md §3 rule 3)
            return _fault_answer(exc, relates_to)

    def process_mtom(self, info: HttpRequestInfo, content: Any, size: int, media: Any) -> _Answer:
        """An MTOM request: the root part is parsed and dispatched as soon as it is read; the
        attachments then stream into the operation's `StreamingIntake` (when it has an
        `intake_factory`) or into `sink_factory` sinks. Never raises."""
        exchange = _MtomExchange()
        reader = None
        try:
            if size > self.max_mtom_body_bytes:
                raise RequestTooLarge(f"request body of {size} bytes exceeds {self.max_mtom_body_bytes} bytes")
            ct_action = media.action if self.check_action_mismatch else None

            def on_root(root_bytes: bytes, root_headers: Mapping[str, str]):
                return self._dispatch_root(exchange, root_bytes, info, size, ct_action)

            reader = MtomReader(info.headers["content-type"], on_root, max_root_bytes=self.max_body_bytes)
            for chunk in _chunks(content):
                reader.feed(chunk)
            parts = reader.finish()
            soap_request, operation = exchange.request, exchange.operation
            if exchange.intake is not None:
                attachments: Mapping[str, Any] = {cid: a.data for cid, a in parts.items()}
            else:
                attachments = parts
            xop = resolve_xop(soap_request.body, attachments)
            soap_request = attrs.evolve(soap_request, attachments=attachments, xop=xop)
            context = self.context_factory(soap_request, info)
            reply = operation.handle(soap_request, context)
            exchange.intake = None  # handled: nothing to abort any more
            if not isinstance(reply, SoapReply):
                reply = SoapReply(reply)
            return self.encode(operation, reply, soap_request.message_id, True)
        except Exception as exc:  # noqa: BLE001 - every failure is answered (DESIGN.md §3 rule 3)
            if exchange.intake is not None:
                _abort_intake(exchange.intake, self.log)
            relates_to = exchange.request.message_id if exchange.request is not None else None
            return _fault_answer(exc, relates_to)
        finally:
            if reader is not None:
                reader.close()

    def _dispatch_root(
        self, exchange: _MtomExchange, root_bytes: bytes, info: HttpRequestInfo, size: int, ct_action: str | None
    ) -> Callable[[str, Mapping[str, str]], Any]:
        """The root part is complete: parse it, find the operation, open its intake; returns
        how to open a sink for each attachment."""
        try:
            root = parse_xml(root_bytes, max_bytes=self.max_body_bytes)
        except XmlInputError as exc:
            raise MalformedMessage(str(exc)) from None
        soap_request = parse_envelope(root, understood=self.understood, content_type_action=ct_action)
        exchange.request = soap_request
        operation = self.operations.get(soap_request.action)
        if operation is None:
            raise ActionNotSupported(soap_request.action)
        exchange.operation = operation
        limit = getattr(operation, "max_body_bytes", None) or self.max_body_bytes
        if size > limit:
            raise RequestTooLarge(f"request body of {size} bytes exceeds {limit} bytes for {soap_request.action}")
        intake_factory = getattr(operation, "intake_factory", None)
        if intake_factory is None:
            factory = self.sink_factory
            if factory is None:
                return lambda cid, headers: MemorySink()
            return lambda cid, headers: factory(headers)
        intake = intake_factory()
        exchange.intake = intake
        intake.on_root(soap_request)
        return intake.open_part

    def encode(self, operation: Operation, reply: SoapReply, relates_to: str | None, mtom: bool) -> _Answer:
        if any(isinstance(a, StreamingAttachment) for a in reply.attachments):
            try:
                envelope = build_response(operation.response_action, reply.body, relates_to=relates_to)
            except BaseException:
                close_chunks(reply.attachments)
                raise
            return self._encode_stream(operation, reply, envelope)
        # ITI TF-2x V.3.6: answer an MTOM request with MTOM; attachments always need it.
        if mtom or reply.attachments:
            envelope = build_response(operation.response_action, reply.body, relates_to=relates_to)
            content_type, body = build_mtom(envelope, reply.attachments, action=operation.response_action)
            return _Answer(reply.http_status, content_type, body)
        if isinstance(reply.body, BodyPieces):  # written piece by piece (`_write_pieces`)
            pieces = build_response_pieces(operation.response_action, reply.body, relates_to=relates_to)
            return _Answer(reply.http_status, SOAP_CONTENT_TYPE, pieces)
        envelope = build_response(operation.response_action, reply.body, relates_to=relates_to)
        return _Answer(reply.http_status, SOAP_CONTENT_TYPE, envelope)

    def _encode_stream(self, operation: Operation, reply: SoapReply, envelope: bytes) -> _Answer:
        """A reply with streamed attachments. The first batch is pulled here, on the worker,
        before anything is sent: a failure that early is still answered with a fault."""
        content_type, pieces = build_mtom_stream(envelope, reply.attachments, action=operation.response_action)
        limit = STREAM_BATCH_BYTES
        known = _known_size(envelope, reply.attachments)
        if known is not None and known <= ONE_PASS_BYTES:
            limit = 2 * ONE_PASS_BYTES  # all of it; a size hint that lies falls back to streaming
        try:
            first, done = _next_batch(pieces, limit)
        except BaseException:
            pieces.close()
            raise
        if done:
            return _Answer(reply.http_status, content_type, first)
        return _Answer(reply.http_status, content_type, first, rest=pieces)

    def default_context(self, request: SoapRequest, info: HttpRequestInfo) -> Any:
        """A `registry.ports.TransactionContext` (transaction from the operation's `transaction`)."""
        from registry.ports import TransactionContext

        operation = self.operations.get(request.action)
        return TransactionContext(
            transaction=getattr(operation, "transaction", None) or request.action,
            message_id=request.message_id,
            remote_host=info.client_host,
            endpoint=info.endpoint,
            reply_to=request.reply_to,
        )


def _fault_answer(exc: Exception, relates_to: str | None) -> _Answer:
    if isinstance(exc, SoapFaultError):
        # exc.content_type: a SOAP 1.1 VersionMismatch fault is text/xml (SOAP 1.2 Part 1 Appendix A)
        return _Answer(exc.http_status, exc.content_type, exc.to_fault(relates_to=relates_to))
    # "we have a bug" answers env:Receiver, logged not echoed
    fault = ReceiverFault("The receiver could not process the message")
    body = fault.to_fault(relates_to=relates_to)
    return _Answer(500, SOAP_CONTENT_TYPE, body, error="".join(traceback.format_exception(exc)))


def _abort_intake(intake: Any, log: Logger) -> None:
    try:
        intake.abort()
    except Exception:  # noqa: BLE001 - the fault is still answered
        log.failure("StreamingIntake.abort failed")


def _write_pieces(request: Any, pieces: list[bytes]) -> None:
    """Write a reply of known Content-Length given as consecutive pieces. The first goes through
    `request.write` (which sends the status line and headers); the rest are handed to the
    connection in one `writeSequence`, which queues them as they are: the transport joins what it
    has queued once, when it sends, so a reply of 200 stored fragments is copied once here rather
    than joined into a body, then into an envelope, then again behind the headers."""
    first, rest = pieces[0], pieces[1:]
    request.write(first)
    if not rest or getattr(request, "_disconnected", False):
        return
    write_sequence = getattr(getattr(request, "channel", None), "writeSequence", None)
    if write_sequence is None or getattr(request, "chunked", False) or request.method == b"HEAD":
        for piece in rest:  # what Request.write would do with each (chunked coding, HEAD, …)
            request.write(piece)
        return
    request.sentLength += sum(map(len, rest))
    write_sequence(rest)


def _widen_send_limit(request: Any) -> None:
    """Let the connection hand a large reply to the kernel in fewer send() calls (Twisted's
    FileDescriptor.SEND_LIMIT, 128 KiB: one reactor iteration each): 8 fewer loop turns for a
    1 MB document. The kernel still takes what its socket buffer holds."""
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is not None and getattr(transport, "SEND_LIMIT", SEND_LIMIT_BYTES) < SEND_LIMIT_BYTES:
        transport.SEND_LIMIT = SEND_LIMIT_BYTES


def _known_size(envelope: bytes, attachments: Any) -> int | None:
    """The bytes of the envelope and of every attachment, if every size is known (MIME headers
    not counted: a few hundred bytes)."""
    total = len(envelope)
    for a in attachments:
        if isinstance(a, StreamingAttachment):
            if a.size is None:
                return None
            total += a.size
        else:
            total += len(a.data)
    return total


def _next_batch(pieces: Iterator[bytes], limit: int = STREAM_BATCH_BYTES) -> tuple[bytes, bool]:
    """Pull pieces until about `limit` bytes: (their bytes, whether the iterator is exhausted)."""
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= limit:
            return b"".join(batch), False
    return b"".join(batch), True


@implementer(IPushProducer)
class _StreamWriter:
    """Writes a streamed reply with flow control (an `IPushProducer` on the request).

    One batch is pulled on the thread pool at a time, and at most one more is held while the
    transport is paused: memory stays at a few batches whatever the document size. No
    Content-Length: HTTP/1.1 chunked transfer coding, so that an aborted stream is visibly
    incomplete. If the iterator fails after the headers were sent, the connection is aborted
    (the peer must not take a truncated document for a complete one)."""

    def __init__(self, endpoint: SoapEndpoint, request: Any, answer: _Answer) -> None:
        self.endpoint = endpoint
        self.request = request
        self.pieces = answer.rest
        self.answer = answer
        self.paused = False
        self.fetching = False
        self.pending: bytes | None = None
        self.exhausted = False
        self.stopped = False

    def start(self) -> None:
        request = self.request
        if getattr(request, "_disconnected", False):
            self.stopped = True
            self._close_iterator()
            return
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        request.setResponseCode(self.answer.status)
        request.setHeader(b"content-type", self.answer.content_type.encode("latin-1"))
        request.registerProducer(self, True)
        _widen_send_limit(request)
        request.write(self.answer.body)
        self._fetch()

    # IPushProducer
    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        if self.pending is not None and not self.stopped:
            batch, self.pending = self.pending, None
            self._emit(batch)
        self._fetch()

    def stopProducing(self) -> None:  # noqa: N802
        if self.stopped:
            return
        self.stopped = True
        self.pending = None
        if not self.fetching:
            self._close_iterator()

    # internals (reactor thread)
    def _fetch(self) -> None:
        if self.stopped or self.fetching or self.exhausted or self.pending is not None:
            return
        self.fetching = True
        d = deferToThreadPool(
            self.endpoint.reactor, self.endpoint.threadpool, _next_batch, self.pieces, NEXT_BATCH_BYTES
        )
        d.addCallbacks(self._got, self._failed)

    def _got(self, result: tuple[bytes, bool]) -> None:
        self.fetching = False
        batch, self.exhausted = result
        if self.stopped:
            self._close_iterator()
            return
        if self.paused:
            self.pending = batch
        else:
            self._emit(batch)
        self._fetch()

    def _emit(self, batch: bytes) -> None:
        if batch:
            self.request.write(batch)
        if self.exhausted and self.pending is None and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()

    def _failed(self, failure: Any) -> None:
        self.fetching = False
        self.endpoint.log.failure(
            "streamed SOAP response {uri} failed: aborting the connection", failure, uri=self.request.uri
        )
        already = self.stopped
        self.stopped = True
        self._close_iterator()
        if already:
            return
        try:
            self.request.unregisterProducer()
        except Exception:  # noqa: BLE001 - the connection may be gone
            pass
        transport = getattr(self.request.channel, "transport", None) if self.request.channel else None
        if transport is not None:
            transport.abortConnection()

    def _close_iterator(self) -> None:
        pieces, self.pieces = self.pieces, None
        close = getattr(pieces, "close", None)
        if close is not None:
            try:
                self.endpoint.threadpool.callInThread(close)
            except Exception:  # noqa: BLE001 - the pool is stopping: close here
                close()


def _chunks(content: Any) -> Iterator[bytes]:
    while True:
        chunk = content.read(READ_CHUNK)
        if not chunk:
            return
        yield chunk


def _request_info(request, raw_uri: bytes | None = None) -> HttpRequestInfo:
    """What the handlers may know of the HTTP request. `raw_uri`: for a POST whose body has not
    arrived yet (`SoapEndpoint.stream`): Twisted sets a request's method, URI and path only once its
    body is complete; the channel has them from the request line."""
    headers = {
        k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
        for k, v in request.requestHeaders.getAllRawHeaders()
    }
    client = request.getClientAddress()
    host = request.getHeader(b"host")
    uri = raw_uri.decode("latin-1") if raw_uri is not None else None
    return HttpRequestInfo(
        method="POST" if uri is not None else request.method.decode("latin-1"),
        uri=uri if uri is not None else request.uri.decode("latin-1"),
        path=uri.partition("?")[0] if uri is not None else request.path.decode("latin-1"),
        headers=headers,
        client_host=getattr(client, "host", None),
        client_port=getattr(client, "port", None),
        host=host.decode("latin-1") if host else None,
        is_secure=request.isSecure(),
    )
