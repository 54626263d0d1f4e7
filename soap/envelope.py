"""SOAP 1.2 envelopes with WS-Addressing 1.0, and SOAP faults — sans-I/O.

IHE ITI TF-2x Appendix V: XDS.b web services are SOAP 1.2 with WS-Addressing; wsa:Action is required
on requests and responses, responses carry wsa:RelatesTo the request's wsa:MessageID.
SOAP 1.2 Part 1 (W3C Rec 2007): §5 envelope, §5.2.3 mustUnderstand, §5.4 faults, §5.4.8 NotUnderstood.
WS-Addressing 1.0 SOAP Binding (W3C Rec 2006): §6 faults (§6.4.3 MessageAddressingHeaderRequired,
§6.4.4 ActionNotSupported, §6.4.1 InvalidAddressingHeader).
"""

from __future__ import annotations

import uuid
from typing import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

import attrs
from lxml import etree

from soap.xmlparse import DEFAULT_MAX_BYTES, XmlInputError, parse_xml

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_XOP = "http://www.w3.org/2004/08/xop/include"

WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/fault"  # WS-Addr SOAP Binding §6
# WS-Addr SOAP Binding §6: the [action] of faults that are not WS-Addressing faults (SOAP's own
# MustUnderstand, VersionMismatch, Sender, Receiver), as Axis2, WCF and OpenSAML send it.
SOAP_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
# The WS-Addressing Member Submission's anonymous address: not anonymous in WS-Addressing 1.0, but
# some clients send it in a 1.0 wsa:ReplyTo and mean "reply on this connection"; accepted as such.
WSA_SUBMISSION_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
SOAP11_CONTENT_TYPE = "text/xml; charset=UTF-8"

_ENV = "{%s}" % NS_SOAP12
_WSA = "{%s}" % NS_WSA
ROLE_NEXT = "http://www.w3.org/2003/05/soap-envelope/role/next"
ROLE_NONE = "http://www.w3.org/2003/05/soap-envelope/role/none"
ROLE_ULTIMATE_RECEIVER = "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"

# The WS-Addressing headers this module processes (WS-Addr Core §3.2 message addressing properties).
WSA_HEADERS = frozenset(
    _WSA + n for n in ("To", "From", "ReplyTo", "FaultTo", "Action", "MessageID", "RelatesTo")
)
_SINGLE_WSA = ("To", "From", "ReplyTo", "FaultTo", "Action", "MessageID")

FAULT_CODES = ("Sender", "Receiver", "MustUnderstand", "VersionMismatch", "DataEncodingUnknown")
_PREFIXES = {"env": NS_SOAP12, "wsa": NS_WSA}


# --- errors ----------------------------------------------------------------------------------------


class SoapFaultError(Exception):
    """Anything that must be answered with a SOAP fault. `code` is the env:Code value's local name."""

    code = "Sender"
    http_status = 400  # SOAP 1.2 Part 2 §7.5.1.2, Table 20: env:Sender → 400, others → 500
    content_type = SOAP_CONTENT_TYPE
    # The request's wsa:MessageID when it could be read before the fault was raised (parse_envelope):
    # WS-Addr SOAP Binding §6, "fault messages are correlated as replies using the [relationship]
    # property" (Core §3.4), so a fault raised while parsing still carries wsa:RelatesTo.
    relates_to: str | None = None

    def __init__(
        self,
        reason: str,
        *,
        subcode: str | Sequence[str] | None = None,
        detail: Sequence[etree._Element] = (),
        not_understood: Sequence[str] = (),
    ):
        super().__init__(reason)
        self.reason = reason
        self.subcode = subcode
        self.detail = tuple(detail)
        self.not_understood = tuple(not_understood)

    def to_fault(self, *, relates_to: str | None = None) -> bytes:
        return build_fault(
            self.code,
            self.reason,
            subcode=self.subcode,
            relates_to=relates_to or self.relates_to,
            detail=self.detail,
            not_understood=self.not_understood,
        )


class SenderFault(SoapFaultError):
    """The peer sent something wrong (env:Sender)."""


class MalformedMessage(SenderFault):
    """Not well-formed XML, too big, or with a DTD (wraps `XmlInputError`)."""


class NotAnEnvelope(SenderFault):
    """Well-formed XML that is not a SOAP 1.2 envelope of the expected shape."""


class EmptyBody(SenderFault):
    """env:Body has no child element."""


class MessageAddressingHeaderRequired(SenderFault):
    """A required WS-Addressing header (wsa:Action) is missing — WS-Addr SOAP Binding §6.4.3."""

    def __init__(self, header: str = "Action"):
        problem = etree.Element(_WSA + "ProblemHeaderQName", nsmap={"wsa": NS_WSA})
        problem.text = f"wsa:{header}"
        super().__init__(
            f"A required header representing a Message Addressing Property is not present: wsa:{header}",
            subcode="wsa:MessageAddressingHeaderRequired",
            detail=[problem],
        )


class InvalidAddressingHeader(SenderFault):
    """WS-Addr SOAP Binding §6.4.1 (e.g. a duplicated wsa:Action, or an ActionMismatch).

    §6.4.1: its [Detail] is the QName of the invalid header, as wsa:ProblemHeaderQName."""

    def __init__(self, reason: str, subsubcode: str = "wsa:InvalidCardinality", header: str = "Action"):
        problem = etree.Element(_WSA + "ProblemHeaderQName", nsmap={"wsa": NS_WSA})
        problem.text = f"wsa:{header}"
        super().__init__(reason, subcode=("wsa:InvalidAddressingHeader", subsubcode), detail=[problem])


class ActionNotSupported(SenderFault):
    """No operation for this wsa:Action — WS-Addr SOAP Binding §6.4.4."""

    def __init__(self, action: str):
        problem = etree.Element(_WSA + "ProblemAction", nsmap={"wsa": NS_WSA})
        etree.SubElement(problem, _WSA + "Action").text = action
        super().__init__(
            f"The action {action!r} cannot be processed at the receiver",
            subcode="wsa:ActionNotSupported",
            detail=[problem],
        )
        self.action = action


class UnsupportedMediaType(SenderFault):
    http_status = 415


class RequestTooLarge(SenderFault):
    http_status = 413


class VersionMismatchFault(SoapFaultError):
    """The envelope is not SOAP 1.2 (e.g. SOAP 1.1) — SOAP 1.2 Part 1 §5.4.7.

    SOAP 1.2 Part 1 Appendix A: a SOAP 1.2 node receiving a SOAP/1.1 message "MUST generate a version
    mismatch SOAP fault based on a SOAP/1.1 message construct following SOAP/1.1 semantics", which
    SHOULD carry an Upgrade header block (§5.4.7, Example 7); SOAP 1.1 §6.2 sends it with HTTP 500,
    as text/xml. `soap11=True` builds that fault; otherwise a SOAP 1.2 one."""

    code = "VersionMismatch"
    http_status = 500

    def __init__(self, reason: str, *, soap11: bool = False):
        super().__init__(reason)
        self.soap11 = soap11
        if soap11:
            self.content_type = SOAP11_CONTENT_TYPE

    def to_fault(self, *, relates_to: str | None = None) -> bytes:
        if not self.soap11:
            return super().to_fault(relates_to=relates_to)
        env = etree.Element("{%s}Envelope" % NS_SOAP11, nsmap={"s": NS_SOAP11})
        header = etree.SubElement(env, "{%s}Header" % NS_SOAP11)
        upgrade = etree.SubElement(header, _ENV + "Upgrade", nsmap={"env": NS_SOAP12})
        etree.SubElement(upgrade, _ENV + "SupportedEnvelope", qname="ns1:Envelope", nsmap={"ns1": NS_SOAP12})
        fault = etree.SubElement(etree.SubElement(env, "{%s}Body" % NS_SOAP11), "{%s}Fault" % NS_SOAP11)
        etree.SubElement(fault, "faultcode").text = "s:VersionMismatch"
        etree.SubElement(fault, "faultstring").text = _xml_safe(self.reason)
        return etree.tostring(env, encoding="UTF-8", xml_declaration=True)


class MustUnderstandFault(SoapFaultError):
    """A header block targeted at us with mustUnderstand=true that we do not process (§5.2.3, §5.4.8)."""

    code = "MustUnderstand"
    http_status = 500


class ReceiverFault(SoapFaultError):
    """Our side failed; the reason must not reveal internals."""

    code = "Receiver"
    http_status = 500


# --- parsing -------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class SoapRequest:
    """A parsed inbound SOAP 1.2 message. `body` is the first child element of env:Body."""

    action: str
    message_id: str | None
    to: str | None
    reply_to: str | None
    relates_to: str | None
    header_elements: tuple[etree._Element, ...]
    body: etree._Element
    envelope: etree._Element
    # Filled in by the edge for MTOM requests: Content-ID → soap.mtom.Attachment, and the
    # elements whose xop:Include was resolved → their Attachment (soap.mtom.resolve_xop).
    attachments: Mapping[str, object] = attrs.field(factory=dict)
    xop: Mapping[etree._Element, object] = attrs.field(factory=dict)


def parse_soap(
    data: bytes,
    *,
    understood: Iterable[str] = (),
    content_type_action: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SoapRequest:
    """Parse a SOAP 1.2 message; raise a `SoapFaultError` subclass on anything we must refuse.

    `understood`: extra header QNames ("{ns}local") we process (e.g. wsse:Security), on top of
    WS-Addressing. `content_type_action`: the `action` parameter of the media type, if any.
    """
    try:
        root = parse_xml(data, max_bytes=max_bytes)
    except XmlInputError as exc:
        raise MalformedMessage(str(exc)) from None
    return parse_envelope(root, understood=understood, content_type_action=content_type_action)


def parse_envelope(
    root: etree._Element, *, understood: Iterable[str] = (), content_type_action: str | None = None
) -> SoapRequest:
    """As `parse_soap`, from an already parsed root element (the MTOM path parses the root part)."""
    header, body_el = _envelope_parts(root)
    blocks = tuple(c for c in header if isinstance(c.tag, str)) if header is not None else ()
    try:
        for block in blocks:
            if etree.QName(block).namespace is None:
                # SOAP 1.2 Part 1 §5.2.1: "Each SOAP header block element information item MUST
                # have a [namespace name] property which has a value".
                raise NotAnEnvelope(f"SOAP header block {block.tag!r} is not namespace-qualified")
        _check_must_understand(blocks, WSA_HEADERS | frozenset(understood))
        wsa = _addressing(blocks)
        action = wsa.get("Action")
        if not action:
            # IHE ITI TF-2x V.3.2.1: wsa:Action is required.
            raise MessageAddressingHeaderRequired("Action")
        if content_type_action is not None and content_type_action != action:
            raise InvalidAddressingHeader(
                f"the media type action {content_type_action!r} differs from wsa:Action {action!r}",
                "wsa:ActionMismatch",
            )
        for name in ("ReplyTo", "FaultTo"):
            address = wsa.get(name)
            if address is not None and address not in (WSA_ANONYMOUS, WSA_SUBMISSION_ANONYMOUS):
                # WS-Addr Core §3.4: a reply (or fault) goes to the [reply endpoint] ([fault
                # endpoint]); this endpoint answers on the HTTP response only, so it refuses the
                # request as WS-Addr SOAP Binding §6.4.1 provides: InvalidAddressingHeader /
                # OnlyAnonymousAddressSupported, rather than answer where the peer does not listen.
                raise InvalidAddressingHeader(
                    f"wsa:{name} {address[:200]!r}: only the anonymous address is supported (no asynchronous replies)",
                    "wsa:OnlyAnonymousAddressSupported",
                    header=name,
                )
        body = next((c for c in body_el if isinstance(c.tag, str)), None)
        if body is None:
            raise EmptyBody("the SOAP Body is empty")
    except SoapFaultError as exc:
        exc.relates_to = _message_id(blocks)
        raise
    return SoapRequest(
        action=action,
        message_id=wsa.get("MessageID"),
        to=wsa.get("To"),
        reply_to=wsa.get("ReplyTo"),
        relates_to=wsa.get("RelatesTo"),
        header_elements=blocks,
        body=body,
        envelope=root,
    )


def _envelope_parts(root: etree._Element) -> tuple[etree._Element | None, etree._Element]:
    """SOAP 1.2 Part 1 §5.1: Envelope = optional Header, then Body, then nothing."""
    qname = etree.QName(root)
    if qname.localname == "Envelope" and qname.namespace != NS_SOAP12:
        version = "SOAP 1.1" if qname.namespace == NS_SOAP11 else repr(qname.namespace)
        raise VersionMismatchFault(
            f"{version} envelope received; this endpoint accepts SOAP 1.2 only",
            soap11=qname.namespace == NS_SOAP11,
        )
    if root.tag != _ENV + "Envelope":
        raise NotAnEnvelope(f"expected a SOAP 1.2 env:Envelope, got {qname.localname!r}")
    children = [c for c in root if isinstance(c.tag, str)]
    header = None
    if children and children[0].tag == _ENV + "Header":
        header = children.pop(0)
    if not children or children[0].tag != _ENV + "Body":
        raise NotAnEnvelope("env:Envelope must contain an optional env:Header followed by env:Body")
    if len(children) > 1:
        raise NotAnEnvelope("no element may follow env:Body in env:Envelope")
    return header, children[0]


def _message_id(blocks: Sequence[etree._Element]) -> str | None:
    """The request's wsa:MessageID when there is exactly one for us (for a fault's RelatesTo)."""
    ids = [b for b in blocks if b.tag == _WSA + "MessageID" and _targets_us(b)]
    return (ids[0].text or "").strip() or None if len(ids) == 1 else None


def _targets_us(block: etree._Element) -> bool:
    role = (block.get(_ENV + "role") or ROLE_ULTIMATE_RECEIVER).strip()
    return role in (ROLE_ULTIMATE_RECEIVER, ROLE_NEXT)


def _check_must_understand(blocks: Sequence[etree._Element], understood: frozenset[str]) -> None:
    missing = []
    for block in blocks:
        mu = (block.get(_ENV + "mustUnderstand") or "").strip()
        if mu in ("1", "true") and _targets_us(block) and block.tag not in understood:
            missing.append(block.tag)
        elif mu not in ("", "0", "1", "true", "false"):
            raise NotAnEnvelope(f"invalid env:mustUnderstand value {mu!r}")
    if missing:
        names = ", ".join(missing)
        raise MustUnderstandFault(
            f"One or more mandatory SOAP header blocks not understood: {names}", not_understood=missing
        )


def _addressing(blocks: Sequence[etree._Element]) -> dict[str, str]:
    """The WS-Addressing properties, as text (ReplyTo: its wsa:Address)."""
    found: dict[str, str] = {}
    for block in blocks:
        if block.tag not in WSA_HEADERS or not _targets_us(block):
            continue
        name = etree.QName(block).localname
        if name in found and name in _SINGLE_WSA:
            raise InvalidAddressingHeader(f"more than one wsa:{name} header", header=name)
        if name in ("ReplyTo", "FaultTo", "From"):
            address = block.find(_WSA + "Address")
            if address is None:  # WS-Addr Core §2.2: wsa:Address is required in an EPR
                raise InvalidAddressingHeader(
                    f"wsa:{name} without wsa:Address", "wsa:MissingAddressInEPR", header=name
                )
            value = (address.text or "").strip()
        else:
            value = (block.text or "").strip()
        found.setdefault(name, value)
    return found


# --- building ------------------------------------------------------------------------------------


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


_ENVELOPE_OPEN = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope xmlns:env="{NS_SOAP12}" '
    f'xmlns:wsa="{NS_WSA}"><env:Header>'
).encode()
_BODY_OPEN = b"</env:Header><env:Body>"
_ENVELOPE_CLOSE = b"</env:Body></env:Envelope>"


def _text(value: str) -> bytes:
    return escape(value).encode("utf-8")


def _addressing_headers(action: str, relates_to: str | None, message_id: str | None) -> bytes:
    parts = [
        b'<wsa:Action env:mustUnderstand="1">',
        _text(action),
        b"</wsa:Action><wsa:MessageID>",
        _text(message_id or new_message_id()),
        b"</wsa:MessageID>",
    ]
    if relates_to:
        parts += [b"<wsa:RelatesTo>", _text(relates_to), b"</wsa:RelatesTo>"]
    return b"".join(parts)


def serialize_element(element: etree._Element) -> bytes:
    """One element as UTF-8 bytes, no XML declaration, no tail."""
    return etree.tostring(element, encoding="UTF-8", xml_declaration=False, with_tail=False)


class BodyPieces(tuple):
    """The UTF-8 serialization of one element (no XML declaration) as consecutive byte pieces,
    kept apart up to the socket: a LeafClass answer is its stored fragments side by side (200 of
    6.3 kB for a FindDocuments), which `build_response_pieces` and the HTTP edge pass along
    without joining them into ever larger copies."""

    __slots__ = ()

    def joined(self) -> bytes:
        return b"".join(self)


def _body_bytes(body: etree._Element | bytes) -> bytes:
    if isinstance(body, BodyPieces):
        return body.joined()
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body)
        if body.startswith(b"<?xml"):  # an XML declaration cannot sit inside env:Body
            end = body.find(b"?>")
            if end < 0:
                raise ValueError("body bytes start with an unterminated XML declaration")
            body = body[end + 2 :].lstrip()
        return body
    return serialize_element(body)


def build_response(
    action: str,
    body: etree._Element | bytes,
    *,
    relates_to: str | None,
    message_id: str | None = None,
    extra_headers: Sequence[etree._Element | bytes] = (),
) -> bytes:
    """A SOAP 1.2 response envelope as bytes (ITI TF-2x V.3.2.1: Action, MessageID, RelatesTo).

    `body` may be pre-serialized UTF-8 bytes of one element: it is copied as is, never re-parsed.
    """
    return b"".join(build_response_pieces(action, body, relates_to=relates_to, message_id=message_id,
                                          extra_headers=extra_headers))


def build_response_pieces(
    action: str,
    body: etree._Element | bytes | BodyPieces,
    *,
    relates_to: str | None,
    message_id: str | None = None,
    extra_headers: Sequence[etree._Element | bytes] = (),
) -> list[bytes]:
    """`build_response`'s envelope as the list of its pieces, in order; a `BodyPieces` body is
    spliced in piece by piece."""
    return [
        _ENVELOPE_OPEN,
        _addressing_headers(action, relates_to, message_id),
        *(_body_bytes(h) for h in extra_headers),
        _BODY_OPEN,
        *(body if isinstance(body, BodyPieces) else (_body_bytes(body),)),
        _ENVELOPE_CLOSE,
    ]


def _qname_text(value: str, nsmap: dict[str | None, str]) -> str:
    """'wsa:X' / 'env:X' kept as is; '{ns}X' gets a prefix declared in `nsmap`."""
    if value.startswith("{"):
        q = etree.QName(value)
        for prefix, ns in nsmap.items():
            if ns == q.namespace and prefix:
                return f"{prefix}:{q.localname}"
        prefix = f"ns{len(nsmap)}"
        nsmap[prefix] = q.namespace
        return f"{prefix}:{q.localname}"
    prefix = value.partition(":")[0] if ":" in value else None
    if prefix not in _PREFIXES:
        raise ValueError(f"fault subcode {value!r} must be 'env:…', 'wsa:…' or '{{namespace}}local'")
    return value


def build_fault(
    code: str,
    reason: str,
    *,
    subcode: str | Sequence[str] | None = None,
    relates_to: str | None = None,
    message_id: str | None = None,
    detail: Sequence[etree._Element] = (),
    not_understood: Sequence[str] = (),
    lang: str = "en",
) -> bytes:
    """A SOAP 1.2 fault envelope (Part 1 §5.4) with wsa:Action …/addressing/fault for a WS-Addressing
    fault (a wsa: subcode), …/addressing/soap/fault for any other (WS-Addr SOAP Binding §6).

    `code`: Sender | Receiver | MustUnderstand | VersionMismatch. `subcode`: one QName or a chain
    (subcode, subsubcode…), as 'wsa:ActionNotSupported' or '{namespace}local'.
    """
    if code not in FAULT_CODES:
        raise ValueError(f"unknown SOAP 1.2 fault code {code!r}")
    subcodes = [subcode] if isinstance(subcode, str) else list(subcode or ())
    nsmap: dict[str | None, str] = {"env": NS_SOAP12, "wsa": NS_WSA}
    subcode_texts = [_qname_text(s, nsmap) for s in subcodes]
    headers = []
    if code == "MustUnderstand":  # §5.4.8: one env:NotUnderstood per header block
        for i, tag in enumerate(not_understood):
            q = etree.QName(tag)
            el = etree.Element(_ENV + "NotUnderstood", nsmap={"env": NS_SOAP12, f"nu{i}": q.namespace})
            el.set("qname", f"nu{i}:{q.localname}" if q.namespace else q.localname)
            headers.append(el)
    if code == "VersionMismatch":  # §5.4.7: env:Upgrade lists the envelope versions we support
        upgrade = etree.Element(_ENV + "Upgrade", nsmap={"env": NS_SOAP12})
        etree.SubElement(upgrade, _ENV + "SupportedEnvelope", qname="ns1:Envelope", nsmap={"ns1": NS_SOAP12})
        headers.append(upgrade)

    fault = etree.Element(_ENV + "Fault", nsmap=nsmap)
    code_el = etree.SubElement(fault, _ENV + "Code")
    etree.SubElement(code_el, _ENV + "Value").text = f"env:{code}"
    parent = code_el
    for text in subcode_texts:
        parent = etree.SubElement(parent, _ENV + "Subcode")
        etree.SubElement(parent, _ENV + "Value").text = text
    reason_el = etree.SubElement(fault, _ENV + "Reason")
    text_el = etree.SubElement(reason_el, _ENV + "Text")
    text_el.set("{http://www.w3.org/XML/1998/namespace}lang", lang)
    text_el.text = _xml_safe(reason)
    if detail:
        detail_el = etree.SubElement(fault, _ENV + "Detail")
        for d in detail:
            detail_el.append(_copy(d))
    # WS-Addr SOAP Binding §6: …/addressing/fault "designates WS-Addressing fault messages" (those
    # of §6.4, whose subcode is in the wsa namespace); SOAP's own faults take …/addressing/soap/fault.
    is_wsa_fault = any(s.startswith("wsa:") or s.startswith("{%s}" % NS_WSA) for s in subcodes)
    action = WSA_FAULT_ACTION if is_wsa_fault else SOAP_FAULT_ACTION
    return build_response(action, fault, relates_to=relates_to, message_id=message_id, extra_headers=headers)


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (a reason may quote peer input)."""
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r" or ("\x20" <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd") or ch >= "\U00010000"
    )


# --- media types ---------------------------------------------------------------------------------


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """'type/sub; a=b; c="d;e"' → ('type/sub', {'a': 'b', 'c': 'd;e'}); names lower-cased (RFC 2045 §5.1)."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    mime = items[0].strip().lower()
    params: dict[str, str] = {}
    for item in items[1:]:
        name, sep, val = item.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = _unquote(val[1:-1])
        params.setdefault(name.strip().lower(), val)
    return mime, params


def _unquote(text: str) -> str:
    out, it = [], iter(text)
    for ch in it:
        out.append(next(it, "") if ch == "\\" else ch)
    return "".join(out)


@attrs.frozen
class MediaType:
    """How an inbound HTTP body is packaged: plain SOAP, or MTOM/XOP multipart/related."""

    kind: str  # "soap" | "mtom"
    mime: str
    params: Mapping[str, str]
    action: str | None  # the SOAP 1.2 `action` parameter (RFC 3902), from start-info for MTOM

    @property
    def is_mtom(self) -> bool:
        return self.kind == "mtom"


def classify_content_type(value: str | None) -> MediaType:
    """`application/soap+xml` (or text/xml, application/xml: the envelope then decides the version)
    → soap; `multipart/related; type="application/xop+xml"` → mtom; anything else → 415."""
    mime, params = parse_content_type(value or "")
    if mime in ("application/soap+xml", "text/xml", "application/xml"):
        return MediaType("soap", mime, params, params.get("action") or None)
    if mime == "multipart/related":
        if params.get("type", "").lower() != "application/xop+xml":
            raise UnsupportedMediaType('multipart/related must have type="application/xop+xml" (MTOM/XOP)')
        if not params.get("boundary"):
            raise UnsupportedMediaType("multipart/related without a boundary parameter")
        action = params.get("action")
        if not action:
            _, start_info = parse_content_type(params.get("start-info", ""))
            action = start_info.get("action")
        return MediaType("mtom", mime, params, action or None)
    raise UnsupportedMediaType(f"unsupported media type {mime or '(none)'!r}; expected application/soap+xml")
