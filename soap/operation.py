"""What an endpoint dispatches to, by wsa:Action — Twisted-free so handlers can implement it."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import attrs
from lxml import etree

from soap.envelope import SoapRequest
from soap.mtom import Attachment


@attrs.frozen(eq=False)
class SoapReply:
    """A handler's answer: the element (or pre-serialized UTF-8 bytes of one element) to put in
    env:Body, MTOM attachments (the body then holds the xop:Include elements, see
    `soap.mtom.xop_include`), and the HTTP status (200 unless a handler says otherwise)."""

    body: etree._Element | bytes
    attachments: Sequence[Attachment] = ()
    http_status: int = 200


class Operation(Protocol):
    """One SOAP operation. `handle` runs on a worker thread; it may raise `SoapFaultError`
    (answered as that fault); any other exception becomes an env:Receiver fault."""

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
