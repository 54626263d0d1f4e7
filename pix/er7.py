"""HL7 v2 ER7 (pipe-and-hat) codec for the PIX Manager, over python-hl7 (DESIGN.md §7). Sans-I/O.

Reading:
- `read_header(data)` reads MSH from raw bytes without decoding the rest, so that MSH-10 can be
  echoed (MSA-2) even when the body is broken (HL7 v2.5 §2.9.2: an acknowledgment answers the
  message control id it received);
- `parse(data)` decodes the text honouring MSH-18 (HL7 table 0211: `UNICODE UTF-8`, `8859/1`,
  `8859/15`, `ASCII`; none given: UTF-8, then ISO-8859-1 when that fails), accepts `\\r`, `\\n`
  and `\\r\\n` segment ends and lines wrapped inside a segment (some published samples), and
  gives an `Er7Message` with typed accessors (repetitions / components / subcomponents,
  unescaped, HL7 v2.5 §2.7.4). Segments are split into fields once, and a field into its parts
  only when read; escape sequences are decoded by python-hl7. (Measured here: python-hl7's
  `hl7.parse` builds a container for every component of every field, ~290 µs for a PAM ADT^A01
  of which a PIX feed reads four fields; splitting on demand takes ~25 µs.)

Writing: `Er7Writer` builds segments with the request's own delimiters (so that an echoed field,
e.g. QPD in RSP^K23, is byte-exact) and escapes every value it writes (§2.7.4); `response_header`
builds the MSH of an answer (sending/receiving application and facility swapped, a new MSH-10,
MSH-12 as in the request); `msa`/`err` build MSA and ERR (HL7 table 0357 codes,
ITI TF-2a §3.8.4.1.3, §3.9.4.2.2.6).
"""

from __future__ import annotations

import datetime
import itertools
import os
from typing import Iterable, Sequence

import attrs
import hl7
from hl7.util import unescape as hl7_unescape

# HL7 table 0211 (MSH-18, alternate character sets) → Python codecs.
CHARSETS = {
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "ASCII": "ascii",
}

# HL7 table 0357 (message error condition codes) texts used in ERR-3.
HL7_0357 = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

STANDARD_DELIMITERS = "|^~\\&"


class Er7Error(Exception):
    """The bytes are not a readable HL7 v2 message (typed: HL7 0357 code and location)."""

    def __init__(self, message: str, *, hl7_code: str = "100", location: str = "") -> None:
        super().__init__(message)
        self.hl7_code = hl7_code
        self.location = location


@attrs.frozen
class MessageHeader:
    """MSH as received. Fields are raw ER7 text in the message's own delimiters (to echo them);
    `message_code`, `trigger_event`, `control_id`, `version` are the plain values."""

    field_separator: str
    encoding_characters: str
    sending_application: str = ""  # MSH-3
    sending_facility: str = ""  # MSH-4
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_type: str = ""  # MSH-9 raw
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11 raw
    version_field: str = ""  # MSH-12 raw (e.g. "2.5^FRA^2.11")
    charset: str = ""  # MSH-18 (first repetition)

    @property
    def component_separator(self) -> str:
        return self.encoding_characters[0] if self.encoding_characters else "^"

    @property
    def message_code(self) -> str:  # MSH-9.1
        return self.message_type.split(self.component_separator)[0].strip()

    @property
    def trigger_event(self) -> str:  # MSH-9.2
        parts = self.message_type.split(self.component_separator)
        return parts[1].strip() if len(parts) > 1 else ""

    @property
    def version(self) -> str:  # MSH-12.1
        return self.version_field.split(self.component_separator)[0].strip()

    @property
    def sending_application_name(self) -> str:  # MSH-3.1
        return self.sending_application.split(self.component_separator)[0].strip()

    @property
    def delimiters(self) -> str:
        return self.field_separator + self.encoding_characters


def _first_segment(data: bytes) -> bytes | None:
    start = 0
    while start < len(data) and data[start] in b"\r\n \t":
        start += 1
    if data[start : start + 3] != b"MSH" or len(data) < start + 4:
        return None
    end = len(data)
    for sep in (b"\r", b"\n"):
        i = data.find(sep, start)
        if 0 <= i < end:
            end = i
    return data[start:end]


def read_header(data: bytes) -> MessageHeader | None:
    """MSH from the first segment of raw bytes (never raises; None when there is no MSH).
    Works on a truncated message (an oversize head) and whatever the body's encoding."""
    segment = _first_segment(data)
    if segment is None:
        return None
    # latin-1 is byte-preserving; `parse` reads MSH again from the properly decoded text
    return header_from_line(segment.decode("latin-1"))


def header_from_line(text: str) -> MessageHeader | None:
    """MSH from the text of its segment (None when it is not one)."""
    if not text.startswith("MSH") or len(text) < 4:
        return None
    sep = text[3]
    if sep.isalnum() or sep in " \t":
        return None
    fields = text.split(sep)
    enc = fields[1] if len(fields) > 1 else ""
    if len(enc) < 4 or sep in enc:
        enc = "^~\\&"  # unreadable encoding characters: read the rest with the defaults

    def f(n: int) -> str:  # MSH-n lives at fields[n - 1] (MSH-1 is the separator itself)
        return fields[n - 1] if len(fields) > n - 1 else ""

    return MessageHeader(
        field_separator=sep,
        encoding_characters=enc,
        sending_application=f(3),
        sending_facility=f(4),
        receiving_application=f(5),
        receiving_facility=f(6),
        message_type=f(9),
        control_id=f(10).strip(),
        processing_id=f(11),
        version_field=f(12),
        charset=f(18).split(enc[1] if len(enc) > 1 else "~")[0].strip(),
    )


def codec_for(charset: str) -> str | None:
    """The Python codec for an MSH-18 value; None when absent or not in table 0211 as we know it."""
    return CHARSETS.get(charset.strip().upper()) if charset else None


def decode_text(data: bytes, header: MessageHeader | None) -> tuple[str, str]:
    """(text, codec used). The declared MSH-18 charset first; undeclared: UTF-8, then ISO-8859-1."""
    declared = codec_for(header.charset) if header is not None else None
    for codec in ([declared] if declared else []) + ["utf-8"]:
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _is_segment_start(line: str, sep: str) -> bool:
    """A segment starts with a 3-character id (letters/digits, HL7 v2.5 §2.5) then the field
    separator or the end of the line."""
    return (
        len(line) >= 3
        and line[0].isalpha()
        and line[0].isupper()
        and line[1:3].isalnum()
        and (len(line) == 3 or line[3] == sep)
    )


def normalise_segments(text: str, sep: str) -> str:
    """Segments joined by `\\r` whatever the line ends (`\\r`, `\\n`, `\\r\\n`); empty lines
    dropped; a line that does not start a segment continues the previous one (a wrapped line)."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    out: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        if out and not _is_segment_start(line, sep):
            out[-1] += line
        else:
            out.append(line)
    return "\r".join(out)


class Er7Segment(list):
    """One segment as its raw fields: `seg[0]` the segment id, `seg[n]` field n as raw ER7 text
    (for MSH, as python-hl7 numbers it, `seg[1]` is MSH-1 the field separator and `seg[n]` is
    MSH-n); `str(seg)` is the segment's text as received (to echo it, e.g. QPD in RSP^K23)."""

    __slots__ = ("text",)

    def __init__(self, text: str, fields: list[str]) -> None:
        super().__init__(fields)
        self.text = text

    def __str__(self) -> str:
        return self.text


def split_segment(text: str, sep: str) -> Er7Segment:
    """Fields of one segment's text (HL7 v2.5 §2.5: fields separated by MSH-1; in MSH itself,
    MSH-1 is the separator character, so MSH-n sits at index n like any segment's field n)."""
    fields = text.split(sep)
    if text.startswith("MSH"):
        fields.insert(1, sep)
    return Er7Segment(text, fields)


class Er7Message:
    """A parsed message: its segments split into raw fields once, with typed, unescaped
    accessors that split a field into repetitions / components / subcomponents on demand
    (only the fields a transaction reads are split). Escape sequences (HL7 v2.5 §2.7.4) are
    decoded by python-hl7 (`hl7.util.unescape`). `message` gives python-hl7's full container
    tree of the same text (built on demand: tools and debugging, not the transaction path)."""

    def __init__(self, segments: list[Er7Segment], header: MessageHeader, codec: str) -> None:
        self._segments = segments
        self.header = header
        self.codec = codec
        enc = header.encoding_characters
        self._component, self._repetition, self._escape, self._subcomponent = enc[0], enc[1], enc[2], enc[3]
        self._hl7: hl7.Message | None = None

    @property
    def message(self) -> hl7.Message:
        return hl7.parse("\r".join(s.text for s in self._segments))

    def segments(self, name: str) -> list[Er7Segment]:
        return [s for s in self._segments if s[0] == name]

    def segment_names(self) -> list[str]:
        return [s[0] for s in self._segments]

    def first(self, name: str) -> Er7Segment | None:
        for s in self._segments:
            if s[0] == name:
                return s
        return None

    def raw_field(self, segment, n: int) -> str:
        """Field n of a segment as raw ER7 text ('' when absent)."""
        if segment is None or n >= len(segment) or n < 1:
            return ""
        return segment[n]

    def unescape(self, value: str) -> str:
        if self._escape and self._escape in value:
            if self._hl7 is None:
                h = self.header
                # python-hl7's separators string: segment, field, repetition, component, subcomponent
                self._hl7 = hl7.Message(
                    "\r", esc=self._escape,
                    separators="\r" + h.field_separator + self._repetition + self._component + self._subcomponent,
                )
            return hl7_unescape(self._hl7, value)
        return value

    def repetitions(self, segment, n: int) -> list[list[list[str]]]:
        """Field n as repetitions → components → subcomponents, each value unescaped."""
        raw = self.raw_field(segment, n)
        if raw == "":
            return []
        sub, comp, unescape = self._subcomponent, self._component, self.unescape
        return [
            [[unescape(s) for s in c.split(sub)] for c in rep.split(comp)]
            for rep in raw.split(self._repetition)
        ]

    def value(self, segment, n: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        reps = self.repetitions(segment, n)
        return component_of(reps[repetition - 1], component, subcomponent) if len(reps) >= repetition else ""


def component_of(rep: Sequence[Sequence[str]], component: int, subcomponent: int = 1) -> str:
    if len(rep) < component:
        return ""
    subs = rep[component - 1]
    return subs[subcomponent - 1] if len(subs) >= subcomponent else ""


def parse(data: bytes, header: MessageHeader | None = None) -> Er7Message:
    """Decode and parse one message (see the module doc). Raises Er7Error."""
    header = header or read_header(data)
    if header is None:
        raise Er7Error("no MSH segment at the start of the message", hl7_code="100", location="MSH")
    text, codec = decode_text(data, header)
    text = normalise_segments(text.lstrip("\r\n \t"), header.field_separator)
    if not text.startswith("MSH" + header.field_separator):
        raise Er7Error("no MSH segment at the start of the message", hl7_code="100", location="MSH")
    header = header_from_line(text.split("\r", 1)[0]) or header
    if len(header.encoding_characters) < 4 or len(set(header.delimiters[:5])) < 5:
        raise Er7Error("MSH-2 does not hold four distinct encoding characters", hl7_code="102", location="MSH-2")
    sep = header.field_separator
    # text.strip(): whitespace around the message is not part of it (as python-hl7 reads it)
    segments = [split_segment(line, sep) for line in text.strip().split("\r")]
    return Er7Message(segments, header, codec)


# --- writing ---------------------------------------------------------------------------------


class Er7Writer:
    """Builds segments in a given delimiter set; values are escaped (HL7 v2.5 §2.7.4)."""

    def __init__(self, delimiters: str = STANDARD_DELIMITERS) -> None:
        if len(delimiters) < 5:
            delimiters = STANDARD_DELIMITERS
        self.field, self.component, self.repetition, self.escape_char, self.subcomponent = delimiters[:5]
        self.encoding_characters = delimiters[1:]
        e = self.escape_char
        self._table = str.maketrans(
            {
                e: f"{e}E{e}",
                self.field: f"{e}F{e}",
                self.component: f"{e}S{e}",
                self.repetition: f"{e}R{e}",
                self.subcomponent: f"{e}T{e}",
                "\r": f"{e}X0D{e}",
                "\n": f"{e}X0A{e}",
            }
        )

    def escape(self, value: str) -> str:
        return value.translate(self._table)

    def components(self, *parts: str | Sequence[str]) -> str:
        """One repetition: components (a str) or subcomponents (a sequence of str), escaped."""
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(self.escape(part))
            else:
                out.append(self.subcomponent.join(self.escape(p) for p in part))
        return self.component.join(out).rstrip(self.component)

    def segment(self, name: str, *fields: str) -> str:
        """A segment from already-encoded fields (use `escape`/`components` to build them)."""
        return self.field.join((name,) + fields).rstrip(self.field)


_counter = itertools.count(1)
_prefix = os.urandom(4).hex()


def new_control_id() -> str:
    """A fresh MSH-10 (unique per process run, short)."""
    return f"CARNET{_prefix}{next(_counter)}"


def now_dtm() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S+0000")


@attrs.frozen
class ResponderIdentity:
    """MSH-3/4 of our answers when the request's MSH-5/6 is empty."""

    application: str = "CARNET"
    facility: str = "CARNET"


def response_header(
    request: MessageHeader | None,
    writer: Er7Writer,
    message_type: str,
    *,
    control_id: str | None = None,
    responder: ResponderIdentity = ResponderIdentity(),
    timestamp: str | None = None,
) -> str:
    """MSH of an answer: sending and receiving application/facility swapped, a new MSH-10,
    MSH-11 and MSH-12 as in the request (HL7 v2.5 §2.9.2), MSH-18 echoed."""
    sep = writer.field
    req = request or MessageHeader(field_separator=sep, encoding_characters=writer.encoding_characters)
    fields = [
        writer.encoding_characters,  # MSH-2
        req.receiving_application or writer.escape(responder.application),  # MSH-3
        req.receiving_facility or writer.escape(responder.facility),  # MSH-4
        req.sending_application,  # MSH-5
        req.sending_facility,  # MSH-6
        timestamp or now_dtm(),  # MSH-7
        "",  # MSH-8
        message_type,  # MSH-9 (already encoded)
        writer.escape(control_id or new_control_id()),  # MSH-10
        req.processing_id or "P",  # MSH-11
        req.version_field or "2.5",  # MSH-12
    ]
    if req.charset:
        fields += ["", "", "", "", "", req.charset]  # MSH-13..17 empty, MSH-18
    return "MSH" + sep + sep.join(fields)


def msa(writer: Er7Writer, code: str, request: MessageHeader | None, text: str = "") -> str:
    """MSA-1 acknowledgment code (HL7 table 0008: AA, AE, AR), MSA-2 = the request's MSH-10,
    MSA-3 a short text (deprecated in v2.5 but still read by many senders)."""
    control_id = request.control_id if request is not None else ""
    return writer.segment("MSA", code, writer.escape(control_id), writer.escape(text[:80]))


def erl(writer: Er7Writer, location: str) -> str:
    """An ERL (HL7 v2.5 ERR-2) from a location: 'PID-3' → PID^1^3; an ERL given with the
    component separator already ('QPD^1^3^1^4') is kept."""
    if "^" in location:
        return location.replace("^", writer.component)
    if "-" in location:
        seg, _, field = location.partition("-")
        if field.isdigit():
            return writer.component.join((seg, "1", field))
    return writer.escape(location)


def err(
    writer: Er7Writer,
    hl7_code: str,
    *,
    locations: Iterable[str] = (),
    text: str = "",
    version: str = "2.5",
    severity: str = "E",
) -> str:
    """ERR segment: ERR-2 error location(s), ERR-3 HL7 table 0357 code^text^HL70357, ERR-4
    severity (HL7 table 0516), ERR-8 user message. For versions before 2.5 (which only have
    ERR-1, ELD), ERR-1 carries segment^sequence^field^code&text&HL70357 as well."""
    locs = [erl(writer, loc) for loc in locations if loc]
    code_text = HL7_0357.get(hl7_code, "")
    err3 = writer.component.join((hl7_code, writer.escape(code_text), "HL70357"))
    err1 = ""
    if version and version < "2.5":
        first = (locs[0] if locs else "").split(writer.component)
        eld = [first[0] if first else "", first[1] if len(first) > 1 else "", first[2] if len(first) > 2 else ""]
        eld.append(writer.subcomponent.join((hl7_code, writer.escape(code_text), "HL70357")))
        err1 = writer.component.join(eld)
    return writer.segment(
        "ERR", err1, writer.repetition.join(locs), err3, severity, "", "", "", writer.escape(text[:200])
    )


def encode(segments: Sequence[str], codec: str = "utf-8") -> bytes:
    """Segments joined and terminated by <CR> (HL7 v2.5 §2.5), encoded with `codec`."""
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")


def ack(
    request: MessageHeader | None,
    code: str,
    *,
    hl7_code: str = "",
    locations: Iterable[str] = (),
    text: str = "",
    trigger_event: str | None = None,
    codec: str = "utf-8",
    responder: ResponderIdentity = ResponderIdentity(),
    control_id: str | None = None,
) -> bytes:
    """A general acknowledgment: MSH-9 ACK^<event>^ACK (ITI TF-2a §3.8.4.1.3), MSA, and an ERR
    when `hl7_code` is given. `request` may be None (no MSH could be read)."""
    writer = Er7Writer(request.delimiters if request is not None else STANDARD_DELIMITERS)
    event = trigger_event if trigger_event is not None else (request.trigger_event if request else "")
    message_type = writer.component.join(("ACK", writer.escape(event), "ACK"))
    segments = [
        response_header(request, writer, message_type, responder=responder, control_id=control_id),
        msa(writer, code, request, text),
    ]
    if hl7_code:
        version = request.version if request is not None else "2.5"
        segments.append(err(writer, hl7_code, locations=locations, text=text, version=version))
    return encode(segments, codec)


def nak_for_head(head: bytes, *, hl7_code: str, text: str, code: str = "AR",
                 responder: ResponderIdentity = ResponderIdentity()) -> bytes | None:
    """A NAK for a message we could not take whole (oversize, garbled), when MSH-10 can be read
    from its first bytes; None otherwise (nothing to answer to)."""
    header = read_header(head)
    if header is None or not header.control_id:
        return None
    return ack(header, code, hl7_code=hl7_code, text=text, responder=responder)


# --- CX ⇄ Identifier -------------------------------------------------------------------------

HL7_NULL = '""'  # HL7 v2.5 §2.5.3: "delete the value" — a PIX Manager does not delete on a feed


@attrs.frozen
class AssigningAuthority:
    """A patient identifier domain as HL7 v2 senders name it: CX.4.2 universal id (OID) and
    CX.4.1 namespace id; `sources` (MSH-3.1 sending applications) restricts who may feed or merge
    identifiers of this domain (empty: anyone) — OpenHIE CR-04/CR-17 "blocks invalid assigning
    authority": a source may not register identifiers in another source's domain."""

    oid: str
    namespace: str = ""
    sources: frozenset[str] = frozenset()


class AuthorityTable:
    """How CX.4 is read and written: namespace-only CX.4 resolved to its OID (OpenHIE CR-02
    "auto-fill CX.4"), CX.4.1 filled on output, an optional default domain per sending application
    for CX without CX.4, and per-domain source restrictions."""

    def __init__(self, authorities: Iterable[AssigningAuthority] = (), *,
                 default_by_source: dict[str, str] | None = None) -> None:
        self.authorities = tuple(authorities)
        self._by_oid = {a.oid: a for a in self.authorities}
        self._by_namespace = {a.namespace: a for a in self.authorities if a.namespace}
        self.default_by_source = dict(default_by_source or {})

    def oid_for_namespace(self, namespace: str) -> str | None:
        a = self._by_namespace.get(namespace)
        return a.oid if a is not None else None

    def namespace_of(self, oid: str) -> str:
        a = self._by_oid.get(oid)
        return a.namespace if a is not None else ""

    def may_feed(self, oid: str, source: str) -> bool:
        a = self._by_oid.get(oid)
        return a is None or not a.sources or source in a.sources

    def resolve(self, rep: Sequence[Sequence[str]], *, source: str = "") -> tuple[str, str, str, str] | None:
        """(value, authority OID or '', namespace, type code) of one CX repetition; None for an
        empty repetition or an HL7 null value. Authority '' when CX.4 is absent and no default
        applies; raises LookupError(namespace) for a namespace this table does not know."""
        value = component_of(rep, 1).strip()
        namespace = component_of(rep, 4, 1).strip()
        universal_id = component_of(rep, 4, 2).strip()
        type_code = component_of(rep, 5).strip()
        if value == HL7_NULL:
            return None
        if not value and not namespace and not universal_id:
            return None
        if universal_id:
            return value, universal_id, namespace or self.namespace_of(universal_id), type_code
        if namespace:
            oid = self.oid_for_namespace(namespace)
            if oid is None:
                raise LookupError(namespace)
            return value, oid, namespace, type_code
        default = self.default_by_source.get(source, "")
        return value, default, self.namespace_of(default) if default else "", type_code

    def cx(self, writer: Er7Writer, value: str, oid: str, namespace: str = "", type_code: str = "") -> str:
        """value^^^namespace&OID&ISO^type (ITI TF-2a §3.9.4.2.2.6, §3.10.4.1.2.3: CX.4 with
        CX.4.1 and CX.4.2/4.3 as far as known)."""
        ns = namespace or self.namespace_of(oid)
        return writer.components(value, "", "", (ns, oid, "ISO"), type_code)
