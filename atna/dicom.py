"""The DICOM audit message (PS3.15 A.5.1, the XML that ATNA carries, ITI TF-2a §3.20.6): model ⇄ bytes.

Sans-I/O: `audit_message(event)` writes an `AuditMessage` (element order and attribute names of the
PS3.15-2017c schema); `parse_audit_message(data)` reads one back into the same frozen model, or raises
`AuditMessageError`. The parser is the Audit Record Repository's (issue 5): it must take what real
nodes send, so it is tolerant where that costs nothing:

- the older RFC 3881 attribute forms: `code`/`displayName`/`codeSystem` beside DICOM's `csd-code`/
  `originalText`/`codeSystemName`, and `AuditSourceIdentification@code` (RFC 3881 §5.4 AuditSourceTypeCode
  as an attribute, as the WUSTL samples write it);
- a namespace on the elements (matched by local name), unknown elements and attributes (ignored);
- a comment before the XML declaration (the WUSTL sample files), which XML itself forbids;
- a ParticipantObjectDetail value that is not base64 (kept as its UTF-8 bytes).

It refuses what cannot be stored meaningfully: not XML, not an AuditMessage, no EventIdentification
or EventID, a missing or unreadable EventDateTime / EventOutcomeIndicator, no AuditSourceIdentification.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

import attrs
from lxml import etree

from soap.xmlparse import XmlInputError, parse_xml

MAX_AUDIT_MESSAGE_BYTES = 1024 * 1024  # RFC 5425 lets a receiver cap a message; 1 MiB is ample

# EventOutcomeIndicator (PS3.15 A.5.1; RFC 3881 §5.1.4)
OUTCOME_SUCCESS = 0
OUTCOME_MINOR_FAILURE = 4
OUTCOME_SERIOUS_FAILURE = 8
OUTCOME_MAJOR_FAILURE = 12
EVENT_ACTION_CODES = frozenset("CRUDE")


class AuditMessageError(ValueError):
    """The bytes are not a DICOM/RFC 3881 audit message we can read (a peer's fault, not ours)."""


@attrs.frozen
class Code:
    """A coded value (PS3.15 A.5.1 CodedValueType): csd-code, codeSystemName, originalText."""

    code: str
    code_system_name: str | None = None
    original_text: str | None = None
    display_name: str | None = None


@attrs.frozen
class ActiveParticipant:
    user_id: str
    user_is_requestor: bool = False
    alternative_user_id: str | None = None
    user_name: str | None = None
    network_access_point_id: str | None = None
    network_access_point_type_code: str | None = None  # 1 machine name, 2 IP address, 5 URI
    role_id_codes: tuple[Code, ...] = ()


@attrs.frozen
class AuditSource:
    audit_source_id: str
    audit_enterprise_site_id: str | None = None
    type_codes: tuple[Code, ...] = ()


@attrs.frozen
class ParticipantObject:
    id_type_code: Code
    object_id: str | None = None
    type_code: str | None = None  # 1 person, 2 system object, 3 organization, 4 other
    type_code_role: str | None = None  # 1 patient, 3 report, 20 job, 24 query, ...
    data_life_cycle: str | None = None
    sensitivity: str | None = None
    name: str | None = None  # ParticipantObjectName ...
    query: bytes | None = None  # ... or ParticipantObjectQuery (decoded from base64), not both
    details: tuple[tuple[str, bytes], ...] = ()  # ParticipantObjectDetail (type, decoded value)

    def detail(self, type_: str) -> bytes | None:
        return next((v for t, v in self.details if t == type_), None)


@attrs.frozen
class AuditEvent:
    """One AuditMessage. `date_time` keeps the offset it was written with (naive if it had none)."""

    event_id: Code
    date_time: datetime
    outcome: int
    source: AuditSource
    action: str | None = None
    event_type_codes: tuple[Code, ...] = ()
    outcome_description: str | None = None
    purposes_of_use: tuple[Code, ...] = ()
    participants: tuple[ActiveParticipant, ...] = ()
    objects: tuple[ParticipantObject, ...] = ()

    def objects_with(self, type_code: str, role: str) -> tuple[ParticipantObject, ...]:
        return tuple(o for o in self.objects if o.type_code == type_code and o.type_code_role == role)

    def participant_with_role(self, code: str) -> ActiveParticipant | None:
        return next((p for p in self.participants if any(c.code == code for c in p.role_id_codes)), None)


# --------------------------------------------------------------------------------------- writing


def format_datetime(value: datetime) -> str:
    """xs:dateTime; UTC written as `Z` (the form syslog collectors and IPF write)."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _attrib(*pairs: tuple[str, str | None]) -> dict[str, str]:
    """Attributes in the given order, those without a value left out (each element is made with
    its attributes at once: a `set` per attribute costs more than the rest of the writer)."""
    return {k: v for k, v in pairs if v is not None}


_SubElement = etree.SubElement


# The attributes of each element, in schema order (None: left out); shared by both writers below.


def _code_attrs(code: Code) -> tuple[tuple[str, str | None], ...]:
    return (
        ("csd-code", code.code),
        ("codeSystemName", code.code_system_name),
        ("displayName", code.display_name),
        ("originalText", code.original_text),
    )


def _event_attrs(event: AuditEvent) -> tuple[tuple[str, str | None], ...]:
    if event.action is not None and event.action not in EVENT_ACTION_CODES:
        raise ValueError(f"EventActionCode {event.action!r} is not one of C, R, U, D, E")
    return (
        ("EventActionCode", event.action),
        ("EventDateTime", format_datetime(event.date_time)),
        ("EventOutcomeIndicator", str(event.outcome)),
    )


def _participant_attrs(p: ActiveParticipant) -> tuple[tuple[str, str | None], ...]:
    return (
        ("UserID", p.user_id),
        ("AlternativeUserID", p.alternative_user_id),
        ("UserName", p.user_name),
        ("UserIsRequestor", "true" if p.user_is_requestor else "false"),
        ("NetworkAccessPointID", p.network_access_point_id),
        ("NetworkAccessPointTypeCode", p.network_access_point_type_code),
    )


def _source_attrs(source: AuditSource) -> tuple[tuple[str, str | None], ...]:
    return (("AuditEnterpriseSiteID", source.audit_enterprise_site_id), ("AuditSourceID", source.audit_source_id))


def _object_attrs(o: ParticipantObject) -> tuple[tuple[str, str | None], ...]:
    if o.name is not None and o.query is not None:
        raise ValueError("a ParticipantObject has a ParticipantObjectName or a ParticipantObjectQuery, not both")
    return (
        ("ParticipantObjectID", o.object_id),
        ("ParticipantObjectTypeCode", o.type_code),
        ("ParticipantObjectTypeCodeRole", o.type_code_role),
        ("ParticipantObjectDataLifeCycle", o.data_life_cycle),
        ("ParticipantObjectSensitivity", o.sensitivity),
    )


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _code(parent: etree._Element, tag: str, code: Code) -> etree._Element:
    return _SubElement(parent, tag, _attrib(*_code_attrs(code)))


def audit_message_element(event: AuditEvent) -> etree._Element:
    """The AuditMessage element, children in the order of PS3.15 A.5.1 (dicom2017c.xsd)."""
    root = etree.Element("AuditMessage")
    ei = _SubElement(root, "EventIdentification", _attrib(*_event_attrs(event)))
    _code(ei, "EventID", event.event_id)
    for c in event.event_type_codes:
        _code(ei, "EventTypeCode", c)
    if event.outcome_description is not None:
        _SubElement(ei, "EventOutcomeDescription").text = event.outcome_description
    for c in event.purposes_of_use:
        _code(ei, "PurposeOfUse", c)
    for p in event.participants:
        ap = _SubElement(root, "ActiveParticipant", _attrib(*_participant_attrs(p)))
        for c in p.role_id_codes:
            _code(ap, "RoleIDCode", c)
    src = _SubElement(root, "AuditSourceIdentification", _attrib(*_source_attrs(event.source)))
    for c in event.source.type_codes:
        _code(src, "AuditSourceTypeCode", c)
    for o in event.objects:
        po = _SubElement(root, "ParticipantObjectIdentification", _attrib(*_object_attrs(o)))
        _code(po, "ParticipantObjectIDTypeCode", o.id_type_code)
        if o.name is not None:
            _SubElement(po, "ParticipantObjectName").text = o.name
        if o.query is not None:
            _SubElement(po, "ParticipantObjectQuery").text = _b64(o.query)
        for type_, value in o.details:
            _SubElement(po, "ParticipantObjectDetail", {"type": type_, "value": _b64(value)})
    return root


def audit_message(event: AuditEvent) -> bytes:
    """The AuditMessage as UTF-8 bytes with an XML declaration (what RFC 5424 MSG carries, ITI TF-2a §3.20.6.1).

    Written as text, the bytes lxml writes for `audit_message_element` (tests compare the two on
    generated events): every transaction builds one or more of these on its request thread, and the
    element tree took three times as long as the rest of the event (48 of 64 µs for ITI-42)."""
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessage>']
    add = out.append
    add("<EventIdentification" + _attrs(_event_attrs(event)) + ">")
    add(_code_text("EventID", event.event_id))
    for c in event.event_type_codes:
        add(_code_text("EventTypeCode", c))
    if event.outcome_description is not None:
        add(_text_element("EventOutcomeDescription", event.outcome_description))
    for c in event.purposes_of_use:
        add(_code_text("PurposeOfUse", c))
    add("</EventIdentification>")
    for p in event.participants:
        add(_with_children("ActiveParticipant", _participant_attrs(p), [_code_text("RoleIDCode", c) for c in p.role_id_codes]))
    add(_with_children("AuditSourceIdentification", _source_attrs(event.source),
                       [_code_text("AuditSourceTypeCode", c) for c in event.source.type_codes]))
    for o in event.objects:
        attrs = _object_attrs(o)
        children = [_code_text("ParticipantObjectIDTypeCode", o.id_type_code)]
        if o.name is not None:
            children.append(_text_element("ParticipantObjectName", o.name))
        if o.query is not None:
            children.append(_text_element("ParticipantObjectQuery", _b64(o.query)))
        children.extend(f'<ParticipantObjectDetail{_attrs((("type", t), ("value", _b64(v))))}/>' for t, v in o.details)
        add(_with_children("ParticipantObjectIdentification", attrs, children))
    add("</AuditMessage>")
    return "".join(out).encode("utf-8")


# XML 1.0 §2.2 Char: what lxml refuses to write ("All strings must be XML compatible")
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r]')
_ATTR_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
_TEXT_SPECIAL = re.compile("[&<>\r]")
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}


# one search per value: most need neither escaping nor refusing
_ATTR_ATTENTION = re.compile('[&<>"\t\n\r]|[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]')
_TEXT_ATTENTION = re.compile("[&<>\r]|[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escaped(value: str, special: re.Pattern, escapes: dict[str, str]) -> str:
    if _NOT_XML_CHAR.search(value):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    return special.sub(lambda m: escapes[m.group()], value)


def _attrs(pairs) -> str:
    parts = []
    for name, value in pairs:
        if value is None:
            continue
        if _ATTR_ATTENTION.search(value):
            value = _escaped(value, _ATTR_SPECIAL, _ATTR_ESCAPES)
        parts.append(f' {name}="{value}"')
    return "".join(parts)


def _text_element(tag: str, text: str) -> str:
    if _TEXT_ATTENTION.search(text):
        text = _escaped(text, _TEXT_SPECIAL, _TEXT_ESCAPES)
    return f"<{tag}>{text}</{tag}>"


def _with_children(tag: str, pairs, children: list[str]) -> str:
    attrs = _attrs(pairs)
    return f"<{tag}{attrs}>{''.join(children)}</{tag}>" if children else f"<{tag}{attrs}/>"


def _code_text(tag: str, code: Code) -> str:
    return f"<{tag}{_attrs(_code_attrs(code))}/>"



# --------------------------------------------------------------------------------------- reading


def _local(el: etree._Element) -> str | None:
    """The element's local name (a namespace, if any, is ignored); None for comments and PIs.
    `str.rpartition` rather than `etree.QName`: no object per element (the ARR reads thousands a second)."""
    tag = el.tag
    if not isinstance(tag, str):
        return None
    return tag.rpartition("}")[2] if tag[:1] == "{" else tag


_NONE: tuple = ()


def _group(el: etree._Element) -> dict[str, list[etree._Element]]:
    """The element's children by local name, in document order, in one pass (PS3.15 A.5.1
    elements are read by name; unknown ones are simply never asked for)."""
    out: dict[str, list[etree._Element]] = {}
    for c in el:
        name = _local(c)
        if name is not None:
            bucket = out.get(name)
            if bucket is None:
                out[name] = [c]
            else:
                bucket.append(c)
    return out


def _first(groups: dict[str, list[etree._Element]], name: str) -> etree._Element | None:
    found = groups.get(name)
    return found[0] if found else None


def _attr(el: etree._Element, *names: str) -> str | None:
    for n in names:
        v = el.get(n)
        if v is not None:
            return v
    return None


def _read_code(el: etree._Element, where: str) -> Code:
    code = _attr(el, "csd-code", "code")  # DICOM, then RFC 3881 §5 (code attribute)
    if code is None:
        raise AuditMessageError(f"{where} has no csd-code")
    return Code(
        code=code,
        code_system_name=_attr(el, "codeSystemName", "codeSystem"),
        original_text=el.get("originalText"),
        display_name=el.get("displayName"),
    )


_FRACTION = re.compile(r"(\.\d{6})\d+")  # Python keeps microseconds; xs:dateTime allows any precision


def parse_datetime(text: str) -> datetime:
    value = text.strip()
    try:
        return datetime.fromisoformat(value)  # the usual case: ≤ 6 fraction digits
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        raise AuditMessageError(f"EventDateTime {text!r} is not an xs:dateTime") from None


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _strip_leading_comments(data: bytes) -> bytes:
    """Drop comments placed before an XML declaration (WUSTL sample files): XML 1.0 §2.8 puts the
    declaration first, so libxml2 refuses them, yet the rest is a well-formed message."""
    rest, stripped = data.lstrip(), False
    while rest.startswith(b"<!--"):
        end = rest.find(b"-->")
        if end < 0:
            return data
        rest, stripped = rest[end + 3 :].lstrip(), True
    return rest if stripped and rest.startswith(b"<?xml") else data


def parse_audit_message(data: bytes, *, max_bytes: int = MAX_AUDIT_MESSAGE_BYTES) -> AuditEvent:
    """Read one AuditMessage (DICOM PS3.15 A.5.1 or RFC 3881) into an `AuditEvent`, or raise `AuditMessageError`."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        root = parse_xml(_strip_leading_comments(bytes(data)), max_bytes=max_bytes)
    except XmlInputError as exc:
        raise AuditMessageError(str(exc)) from None
    if _local(root) != "AuditMessage":
        raise AuditMessageError(f"the root element is {_local(root)!r}, not AuditMessage")

    top = _group(root)
    ei = _first(top, "EventIdentification")
    if ei is None:
        raise AuditMessageError("no EventIdentification")
    ei_children = _group(ei)
    eid = _first(ei_children, "EventID")
    if eid is None:
        raise AuditMessageError("no EventIdentification/EventID")
    when = ei.get("EventDateTime")
    if when is None:
        raise AuditMessageError("no EventDateTime")
    outcome_text = ei.get("EventOutcomeIndicator")
    try:
        outcome = int(outcome_text) if outcome_text is not None else None
    except ValueError:
        outcome = None
    if outcome is None:
        raise AuditMessageError(f"EventOutcomeIndicator {outcome_text!r} is not a number")
    action = ei.get("EventActionCode")
    if action is not None:
        action = action.strip() or None
    description = _first(ei_children, "EventOutcomeDescription")

    participants = []
    for ap in top.get("ActiveParticipant", _NONE):
        requestor = (ap.get("UserIsRequestor") or "").strip().lower()
        participants.append(
            ActiveParticipant(
                user_id=ap.get("UserID", ""),
                user_is_requestor=requestor in ("true", "1"),
                alternative_user_id=ap.get("AlternativeUserID"),
                user_name=ap.get("UserName"),
                network_access_point_id=ap.get("NetworkAccessPointID"),
                network_access_point_type_code=ap.get("NetworkAccessPointTypeCode"),
                role_id_codes=tuple(_read_code(c, "RoleIDCode") for c in ap if _local(c) == "RoleIDCode"),
            )
        )

    src = _first(top, "AuditSourceIdentification")
    if src is None:
        raise AuditMessageError("no AuditSourceIdentification")
    type_codes = [_read_code(c, "AuditSourceTypeCode") for c in src if _local(c) == "AuditSourceTypeCode"]
    if not type_codes and src.get("code") is not None:  # RFC 3881 attribute form
        type_codes.append(Code(code=src.get("code", "")))
    source = AuditSource(
        audit_source_id=src.get("AuditSourceID", ""),
        audit_enterprise_site_id=src.get("AuditEnterpriseSiteID"),
        type_codes=tuple(type_codes),
    )

    objects = []
    for po in top.get("ParticipantObjectIdentification", _NONE):
        po_children = _group(po)
        idt = _first(po_children, "ParticipantObjectIDTypeCode")
        if idt is None:
            raise AuditMessageError("a ParticipantObjectIdentification has no ParticipantObjectIDTypeCode")
        name = _first(po_children, "ParticipantObjectName")
        query = _first(po_children, "ParticipantObjectQuery")
        query_bytes = None
        if query is not None:
            query_text = query.text or ""
            query_bytes = _b64decode(query_text)
            if query_bytes is None:
                query_bytes = query_text.encode("utf-8")
        details = []
        for d in po_children.get("ParticipantObjectDetail", _NONE):
            raw = d.get("value", "")
            decoded = _b64decode(raw)
            details.append((d.get("type", ""), decoded if decoded is not None else raw.encode("utf-8")))
        objects.append(
            ParticipantObject(
                id_type_code=_read_code(idt, "ParticipantObjectIDTypeCode"),
                object_id=po.get("ParticipantObjectID"),
                type_code=po.get("ParticipantObjectTypeCode"),
                type_code_role=po.get("ParticipantObjectTypeCodeRole"),
                data_life_cycle=po.get("ParticipantObjectDataLifeCycle"),
                sensitivity=po.get("ParticipantObjectSensitivity"),
                name=(name.text or "") if name is not None else None,
                query=query_bytes,
                details=tuple(details),
            )
        )

    return AuditEvent(
        event_id=_read_code(eid, "EventID"),
        date_time=parse_datetime(when),
        outcome=outcome,
        source=source,
        action=action,
        event_type_codes=tuple(_read_code(c, "EventTypeCode") for c in ei_children.get("EventTypeCode", _NONE)),
        outcome_description=(description.text or "") if description is not None else None,
        purposes_of_use=tuple(_read_code(c, "PurposeOfUse") for c in ei_children.get("PurposeOfUse", _NONE)),
        participants=tuple(participants),
        objects=tuple(objects),
    )
