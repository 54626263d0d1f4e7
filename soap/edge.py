"""The Twisted edge of the SOAP layer (the only Twisted module in `soap/`, DESIGN.md §1).

`SoapEndpoint` is a leaf `Resource`: GET `?wsdl` serves the WSDL; POST decodes the request (plain
SOAP 1.2 or MTOM/XOP), dispatches on wsa:Action to an `Operation` run on a thread pool, and writes
the reply. Every exception becomes a well-formed SOAP 1.2 fault (DESIGN.md §3 rule 3): peer errors
→ env:Sender (HTTP 400), unknown action → env:Sender + wsa:ActionNotSupported, anything else →
env:Receiver (HTTP 500) with no internals in the body. The reactor and the thread pool are passed
in, never imported here.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Iterator, Mapping

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from soap.envelope import (
    SOAP_CONTENT_TYPE,
    ActionNotSupported,
    MalformedMessage,
    ReceiverFault,
    RequestTooLarge,
    SoapFaultError,
    SoapRequest,
    build_fault,
    build_response,
    classify_content_type,
    parse_envelope,
    parse_soap,
)
from soap.mtom import build_mtom, parse_mtom, resolve_xop, SinkFactory
from soap.operation import Operation, SoapReply
from soap.xmlparse import DEFAULT_MAX_BYTES, XmlInputError, parse_xml

READ_CHUNK = 64 * 1024


class SoapHttpRequest(Request):
    """A twisted.web Request that does not treat a POST body as an HTML form: Twisted otherwise
    parses every POST's Content-Type with the `email` package (about a tenth of an ITI-42
    registration's CPU) only to find it is not a form. SOAP endpoints never read form fields;
    the query string (`?wsdl`) is still parsed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)


class SoapSite(Site):
    """The HTTP site of the SOAP endpoints: `SoapHttpRequest`s, and no access log by default
    (Twisted's default writes one formatted line per request to its legacy log, which Carnet
    never starts; audit records go to the AuditSink). Pass `access_log=True` to keep Twisted's."""

    def __init__(self, resource: Resource, *, access_log: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("requestFactory", SoapHttpRequest)
        super().__init__(resource, **kwargs)
        self.access_log = access_log

    def log(self, request) -> None:
        if self.access_log:
            super().log(request)


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
    body: bytes
    error: str | None = None  # a traceback to log on the reactor thread


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
        if getattr(request, "_disconnected", False):
            return
        request.setResponseCode(answer.status)
        request.setHeader(b"content-type", answer.content_type.encode("latin-1"))
        request.setHeader(b"content-length", str(len(answer.body)).encode())
        request.write(answer.body)
        request.finish()

    def _write_failure(self, failure, request) -> None:
        # Only reached if `process` itself broke (it catches everything): still answer a fault.
        self.log.failure("SOAP endpoint failure", failure)
        answer = _Answer(500, SOAP_CONTENT_TYPE, build_fault("Receiver", "internal error"))
        try:
            self._write(answer, request)
        except Exception:  # noqa: BLE001 - the connection may be gone
            self.log.failure("could not write the fault")

    # --- worker thread -------------------------------------------------------------------------

    def process(self, info: HttpRequestInfo, content: Any, size: int) -> _Answer:
        """Decode, dispatch, encode; never raises. Runs on the thread pool (pure but for `content`)."""
        relates_to = None
        try:
            if size > self.max_body_bytes:
                raise RequestTooLarge(f"request body of {size} bytes exceeds {self.max_body_bytes} bytes")
            soap_request, mtom = self.decode(info, content)
            relates_to = soap_request.message_id
            operation = self.operations.get(soap_request.action)
            if operation is None:
                raise ActionNotSupported(soap_request.action)
            context = self.context_factory(soap_request, info)
            reply = operation.handle(soap_request, context)
            if not isinstance(reply, SoapReply):
                reply = SoapReply(reply)
            return self.encode(operation, reply, relates_to, mtom)
        except SoapFaultError as fault:
            body = fault.to_fault(relates_to=relates_to)
            return _Answer(fault.http_status, SOAP_CONTENT_TYPE, body)
        except Exception:  # noqa: BLE001 - "we have a bug" answers env:Receiver, logged not echoed
            fault = ReceiverFault("The receiver could not process the message")
            body = fault.to_fault(relates_to=relates_to)
            return _Answer(500, SOAP_CONTENT_TYPE, body, error=traceback.format_exc())

    def decode(self, info: HttpRequestInfo, content: Any) -> tuple[SoapRequest, bool]:
        media = classify_content_type(info.headers.get("content-type"))
        ct_action = media.action if self.check_action_mismatch else None
        if not media.is_mtom:
            data = content.read()
            request = parse_soap(
                data, understood=self.understood, content_type_action=ct_action, max_bytes=self.max_body_bytes
            )
            return request, False
        message = parse_mtom(
            info.headers["content-type"], _chunks(content), sink_factory=self.sink_factory
        )
        try:
            root = parse_xml(message.root, max_bytes=self.max_body_bytes)
        except XmlInputError as exc:
            raise MalformedMessage(str(exc)) from None
        soap_request = parse_envelope(root, understood=self.understood, content_type_action=ct_action)
        xop = resolve_xop(soap_request.body, message.attachments)
        return attrs.evolve(soap_request, attachments=message.attachments, xop=xop), True

    def encode(self, operation: Operation, reply: SoapReply, relates_to: str | None, mtom: bool) -> _Answer:
        envelope = build_response(operation.response_action, reply.body, relates_to=relates_to)
        # ITI TF-2x V.3.6: answer an MTOM request with MTOM; attachments always need it.
        if mtom or reply.attachments:
            content_type, body = build_mtom(envelope, reply.attachments, action=operation.response_action)
            return _Answer(reply.http_status, content_type, body)
        return _Answer(reply.http_status, SOAP_CONTENT_TYPE, envelope)

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


def _chunks(content: Any) -> Iterator[bytes]:
    while True:
        chunk = content.read(READ_CHUNK)
        if not chunk:
            return
        yield chunk


def _request_info(request) -> HttpRequestInfo:
    headers = {
        k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
        for k, v in request.requestHeaders.getAllRawHeaders()
    }
    client = request.getClientAddress()
    host = request.getHeader(b"host")
    return HttpRequestInfo(
        method=request.method.decode("latin-1"),
        uri=request.uri.decode("latin-1"),
        path=request.path.decode("latin-1"),
        headers=headers,
        client_host=getattr(client, "host", None),
        client_port=getattr(client, "port", None),
        host=host.decode("latin-1") if host else None,
        is_secure=request.isSecure(),
    )
