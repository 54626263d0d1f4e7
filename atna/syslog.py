"""Syslog for audit messages, sans-I/O, both directions (DESIGN.md §1: never imports Twisted).

- RFC 5424 messages: `format_message` (model → bytes) and `parse_message` (bytes → model, or
  `SyslogFormatError`). ATNA audit messages use facility 10 (authpriv), severity 5 (notice), MSGID
  `IHE+RFC-3881` and an XML MSG that starts with a UTF-8 BOM (ITI TF-2a §3.20.6.1, RFC 5424 §6.4);
  `audit_message` builds one.
- Leniency: `parse_message` also accepts RFC 3164 ("BSD") messages, `<PRI>Mmm dd hh:mm:ss HOST TAG: MSG`,
  which some audit senders still emit. Their timestamp has no year and no zone, so it is kept as
  NILVALUE ("-": the receiver uses its time of receipt); TAG's name becomes APP-NAME and a `[pid]`
  suffix PROCID; MSGID and STRUCTURED-DATA are "-".
- RFC 5425 §4.3 framing over TLS (`MSG-LEN SP SYSLOG-MSG`): `octet_frame` and the incremental
  `OctetCountingDecoder`. The decoder also accepts RFC 6587 §3.4.2 non-transparent framing (a frame
  that starts with "<" and ends at LF), which rsyslog's omfwd sends unless told `TCP_Framing="octet-counted"`.
- RFC 5426 UDP: one message per datagram, no framing; `udp_datagram` checks the size.

The header is scanned by hand (no regular expressions), field by field, per the ABNF of RFC 5424 §6.
"""

from __future__ import annotations

import calendar
import enum
from typing import Iterator

import attrs

NILVALUE = "-"
BOM = b"\xef\xbb\xbf"  # RFC 5424 §6.4: MSG-UTF8 = BOM UTF-8-STRING

# ITI TF-2a §3.20.6.1 (Record Audit Event, syslog): facility 10 (security/authorization), severity 5
# (notice), MSGID "IHE+RFC-3881" (the DICOM PS3.15 A.5 schema grew out of RFC 3881).
AUDIT_FACILITY = 10
AUDIT_SEVERITY = 5
AUDIT_MSGID = "IHE+RFC-3881"

# RFC 5424 §6: field length limits (in octets of PRINTUSASCII).
MAX_HOSTNAME = 255
MAX_APP_NAME = 48
MAX_PROCID = 128
MAX_MSGID = 32
MAX_SD_NAME = 32

# RFC 5426 §3.2: a datagram's payload can be at most 65535 − 8 (UDP) − 20 (IPv4 header) = 65 507 octets
# (IPv6: 65 527). Receivers SHOULD accept 2048 octets; larger ones may be IP-fragmented and lost, so audit
# over UDP is best effort and TLS is the transport that carries the "lose nothing" promise.
UDP_MAX_PAYLOAD = 65507

# RFC 5425 §4.3.1: receivers SHOULD handle messages up to 8192 octets; audit messages with a query body
# can be larger, so the default limit is more generous (it is a decoder argument).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SyslogFormatError(ValueError):
    """A syslog message (or a field meant for one) that is not well-formed; `reason` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class SyslogMessage:
    """One RFC 5424 message (§6). `msg` is the MSG part as sent (an audit message's starts with the BOM)."""

    facility: int
    severity: int
    timestamp: str  # RFC 5424 §6.2.3 (RFC 3339 profile) or "-"
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str = NILVALUE  # the STRUCTURED-DATA part, verbatim, "-" when none
    msg: bytes = b""
    # STRUCTURED-DATA as parsed by `parse_message` (it reads it once anyway); None: parse on demand
    sd_elements: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] | None = attrs.field(
        default=None, eq=False, repr=False
    )

    @property
    def payload(self) -> bytes:
        """MSG without its UTF-8 BOM (the audit XML)."""
        return self.msg[3:] if self.msg.startswith(BOM) else self.msg

    @property
    def pri(self) -> int:
        return self.facility * 8 + self.severity

    def sd_param(self, sd_id: str, name: str) -> str | None:
        """One SD-PARAM's value (unescaped), or None (e.g. `sd_param("carnet@32473", "eventId")`)."""
        elements = self.sd_elements
        if elements is None:
            elements = parse_structured_data(self.structured_data)
        for element_id, params in elements:
            if element_id == sd_id:
                for param_name, value in params:
                    if param_name == name:
                        return value
        return None


# ---------------------------------------------------------------------------------------------------
# Building


def audit_message(
    xml: bytes,
    *,
    timestamp: str,
    hostname: str,
    app_name: str,
    procid: str = NILVALUE,
    structured_data: str = NILVALUE,
) -> SyslogMessage:
    """An ATNA audit message around the DICOM audit XML (ITI TF-2a §3.20.6.1; BOM per RFC 5424 §6.4)."""
    if xml.startswith(BOM):
        xml = xml[3:]
    return SyslogMessage(
        facility=AUDIT_FACILITY,
        severity=AUDIT_SEVERITY,
        timestamp=timestamp,
        hostname=hostname,
        app_name=app_name,
        procid=procid,
        msgid=AUDIT_MSGID,
        structured_data=structured_data,
        msg=BOM + xml,
    )


class AuditMessageFormatter:
    """`format_message(audit_message(...))` for one sender, with the fixed header fields checked once.

    A node sends every audit message with the same HOSTNAME, APP-NAME, PROCID and MSGID (ITI TF-2a
    §3.20.6.1); only TIMESTAMP, STRUCTURED-DATA and MSG change. Those are made here from values
    that are well-formed by construction (`format_timestamp`, `format_structured_data`), so a message
    costs two string joins instead of the field-by-field checks of `format_message`; the bytes are
    identical to it."""

    def __init__(self, *, hostname: str, app_name: str, procid: str = NILVALUE, msgid: str = AUDIT_MSGID,
                 facility: int = AUDIT_FACILITY, severity: int = AUDIT_SEVERITY) -> None:
        probe = SyslogMessage(facility, severity, NILVALUE, hostname, app_name, procid, msgid)
        format_message(probe)  # raises SyslogFormatError for a field RFC 5424 §6 does not allow
        self._pri = f"<{probe.pri}>1 ".encode("ascii")
        self._middle = f" {hostname} {app_name} {procid} {msgid} ".encode("ascii")

    def format(self, xml: bytes, when, structured_data=()) -> bytes:  # noqa: ANN001 - an aware datetime
        """The RFC 5424 message around `xml` (BOM added, RFC 5424 §6.4), stamped `when` (aware
        datetime), with STRUCTURED-DATA from (SD-ID, [(PARAM-NAME, value)]) pairs."""
        if xml.startswith(BOM):
            xml = xml[3:]
        sd = format_structured_data(structured_data).encode("utf-8")
        return b"".join((self._pri, format_timestamp(when).encode("ascii"), self._middle, sd, b" ", BOM, xml))


def format_timestamp(when) -> str:  # noqa: ANN001 - an aware datetime.datetime
    """RFC 5424 §6.2.3 TIMESTAMP from an aware datetime: microseconds (TIME-SECFRAC ≤ 6 digits), "Z" for UTC."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise SyslogFormatError("timestamp: a naive datetime has no TIME-OFFSET (RFC 5424 §6.2.3)")
    offset = when.utcoffset()
    base = (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
        f".{when.microsecond:06d}"
    )
    if not offset:
        return base + "Z"
    seconds = int(offset.total_seconds())
    if seconds % 60:
        raise SyslogFormatError("timestamp: TIME-NUMOFFSET has no seconds (RFC 5424 §6.2.3)")
    sign = "+" if seconds >= 0 else "-"
    minutes = abs(seconds) // 60
    return f"{base}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_structured_data(elements: list[tuple[str, list[tuple[str, str]]]] | tuple = ()) -> str:
    """STRUCTURED-DATA from (SD-ID, [(PARAM-NAME, value)]) pairs; "-" when empty (RFC 5424 §6.3).
    Values are escaped: '"', '\\' and ']' get a backslash (§6.3.3)."""
    if not elements:
        return NILVALUE
    out = []
    for sd_id, params in elements:
        _check_sd_name(sd_id, "SD-ID")
        parts = ["[", sd_id]
        for name, value in params:
            _check_sd_name(name, "PARAM-NAME")
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
            parts.append(f' {name}="{escaped}"')
        parts.append("]")
        out.append("".join(parts))
    return "".join(out)


def format_message(msg: SyslogMessage) -> bytes:
    """RFC 5424 §6 SYSLOG-MSG, VERSION 1. Raises `SyslogFormatError` for a field the ABNF does not allow."""
    if not (isinstance(msg.facility, int) and 0 <= msg.facility <= 23):
        raise SyslogFormatError(f"facility {msg.facility!r} is not 0..23 (RFC 5424 §6.2.1)")
    if not (isinstance(msg.severity, int) and 0 <= msg.severity <= 7):
        raise SyslogFormatError(f"severity {msg.severity!r} is not 0..7 (RFC 5424 §6.2.1)")
    if msg.timestamp != NILVALUE:
        _check_timestamp(msg.timestamp)
    _check_header_field(msg.hostname, "HOSTNAME", MAX_HOSTNAME)
    _check_header_field(msg.app_name, "APP-NAME", MAX_APP_NAME)
    _check_header_field(msg.procid, "PROCID", MAX_PROCID)
    _check_header_field(msg.msgid, "MSGID", MAX_MSGID)
    sd = msg.structured_data
    if sd != NILVALUE:
        end = _scan_structured_data(sd, 0)
        if end != len(sd):
            raise SyslogFormatError("STRUCTURED-DATA: trailing characters after the last SD-ELEMENT")
    if not isinstance(msg.msg, bytes):
        raise SyslogFormatError("MSG must be bytes")
    head = (
        f"<{msg.pri}>1 {msg.timestamp} {msg.hostname} {msg.app_name} {msg.procid} {msg.msgid} {sd}"
    ).encode("utf-8")  # UTF-8 only for SD values; the header fields were checked to be US-ASCII
    return head + b" " + msg.msg if msg.msg else head


def octet_frame(payload: bytes) -> bytes:
    """RFC 5425 §4.3 SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG."""
    if not payload:
        raise SyslogFormatError("an empty SYSLOG-MSG cannot be framed (MSG-LEN = NONZERO-DIGIT *DIGIT)")
    return str(len(payload)).encode("ascii") + b" " + payload


def udp_datagram(payload: bytes) -> bytes:
    """RFC 5426 §3.1: one message per datagram, no framing; §3.2 size limit."""
    if len(payload) > UDP_MAX_PAYLOAD:
        raise SyslogFormatError(f"{len(payload)} octets exceed a UDP datagram's {UDP_MAX_PAYLOAD} (RFC 5426 §3.2)")
    return payload


# ---------------------------------------------------------------------------------------------------
# Field checks shared by both directions


def _is_printusascii(text: str) -> bool:
    # RFC 5424 §6: PRINTUSASCII = %d33-126 (ASCII, printable — %d32-126 — and no SP), tested in C
    return text.isascii() and text.isprintable() and " " not in text


_PRINTUSASCII_BYTES = bytes(range(33, 127))


def _is_printusascii_bytes(raw: bytes) -> bool:
    # RFC 5424 §6: PRINTUSASCII = %d33-126; deleting those octets must leave nothing
    return not raw.translate(None, _PRINTUSASCII_BYTES)


def _check_header_field(value: str, name: str, limit: int) -> None:
    if not isinstance(value, str) or not value:
        raise SyslogFormatError(f"{name} is empty (use NILVALUE '-')")
    if len(value) > limit:
        raise SyslogFormatError(f"{name} is {len(value)} characters, more than {limit} (RFC 5424 §6.2)")
    if not _is_printusascii(value):
        raise SyslogFormatError(f"{name} {value!r} has characters outside printable US-ASCII (RFC 5424 §6)")


def _check_sd_name(value: str, what: str) -> None:
    # RFC 5424 §6.3: SD-NAME = 1*32PRINTUSASCII except '=', SP, ']', %d34
    if not value or len(value) > MAX_SD_NAME or not _is_printusascii(value) or any(c in '= ]"' for c in value):
        raise SyslogFormatError(f"{what} {value!r} is not an SD-NAME (RFC 5424 §6.3)")


def _digits(text: str, start: int, count: int, what: str) -> int:
    part = text[start : start + count]
    if len(part) != count or not (part.isascii() and part.isdigit()):
        raise SyslogFormatError(f"TIMESTAMP {text!r}: {what} must be {count} digits (RFC 5424 §6.2.3)")
    return int(part)


def _expect(text: str, pos: int, char: str) -> None:
    if text[pos : pos + 1] != char:
        raise SyslogFormatError(f"TIMESTAMP {text!r}: expected {char!r} at {pos} (RFC 5424 §6.2.3)")


def _check_timestamp(ts: str) -> None:
    """RFC 5424 §6.2.3: FULL-DATE "T" FULL-TIME, upper-case T and Z, TIME-SECFRAC ≤ 6 digits, no leap second."""
    year = _digits(ts, 0, 4, "DATE-FULLYEAR")
    _expect(ts, 4, "-")
    month = _digits(ts, 5, 2, "DATE-MONTH")
    _expect(ts, 7, "-")
    day = _digits(ts, 8, 2, "DATE-MDAY")
    _expect(ts, 10, "T")
    hour = _digits(ts, 11, 2, "TIME-HOUR")
    _expect(ts, 13, ":")
    minute = _digits(ts, 14, 2, "TIME-MINUTE")
    _expect(ts, 16, ":")
    second = _digits(ts, 17, 2, "TIME-SECOND")
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(max(year, 1), month)[1]:
        raise SyslogFormatError(f"TIMESTAMP {ts!r}: no such date (RFC 5424 §6.2.3)")
    if hour > 23 or minute > 59 or second > 59:
        raise SyslogFormatError(f"TIMESTAMP {ts!r}: time out of range, leap seconds not allowed (RFC 5424 §6.2.3)")
    pos = 19
    if ts[pos : pos + 1] == ".":
        pos += 1
        start = pos
        while pos < len(ts) and "0" <= ts[pos] <= "9":
            pos += 1
        if not 1 <= pos - start <= 6:
            raise SyslogFormatError(f"TIMESTAMP {ts!r}: TIME-SECFRAC must be 1 to 6 digits (RFC 5424 §6.2.3)")
    if ts[pos:] == "Z":
        return
    if ts[pos : pos + 1] not in ("+", "-") or len(ts) != pos + 6:
        raise SyslogFormatError(f"TIMESTAMP {ts!r}: TIME-OFFSET must be 'Z' or ±hh:mm (RFC 5424 §6.2.3)")
    off_hour = _digits(ts, pos + 1, 2, "TIME-HOUR")
    _expect(ts, pos + 3, ":")
    off_minute = _digits(ts, pos + 4, 2, "TIME-MINUTE")
    if off_hour > 23 or off_minute > 59:
        raise SyslogFormatError(f"TIMESTAMP {ts!r}: TIME-NUMOFFSET out of range (RFC 5424 §6.2.3)")


def _scan_sd_name(sd: str, pos: int, what: str) -> int:
    start = pos
    while pos < len(sd) and 33 <= ord(sd[pos]) <= 126 and sd[pos] not in '= ]"':
        pos += 1
    if not 1 <= pos - start <= MAX_SD_NAME:
        raise SyslogFormatError(f"STRUCTURED-DATA: bad {what} at {start} (RFC 5424 §6.3)")
    return pos


def _iter_structured_data(sd: str, pos: int) -> Iterator[tuple[int, str, list[tuple[str, str]]]]:
    """Yields (end position, SD-ID, params) for each SD-ELEMENT starting at `pos` (RFC 5424 §6.3)."""
    if sd[pos : pos + 1] != "[":
        raise SyslogFormatError("STRUCTURED-DATA must be '-' or start with '[' (RFC 5424 §6.3)")
    while sd[pos : pos + 1] == "[":
        pos += 1
        id_end = _scan_sd_name(sd, pos, "SD-ID")
        sd_id = sd[pos:id_end]
        pos = id_end
        params: list[tuple[str, str]] = []
        while True:
            c = sd[pos : pos + 1]
            if c == "]":
                pos += 1
                break
            if c != " ":
                raise SyslogFormatError(f"STRUCTURED-DATA: expected SP or ']' at {pos} (RFC 5424 §6.3)")
            pos += 1
            name_end = _scan_sd_name(sd, pos, "PARAM-NAME")
            name = sd[pos:name_end]
            pos = name_end
            if sd[pos : pos + 2] != '="':
                raise SyslogFormatError(f'STRUCTURED-DATA: expected =" at {pos} (RFC 5424 §6.3)')
            pos += 2
            # fast path: a value without backslash or ']' up to its closing quote (the usual case)
            close = sd.find('"', pos)
            if close >= 0:
                plain = sd[pos:close]
                if "\\" not in plain and "]" not in plain:
                    params.append((name, plain))
                    pos = close + 1
                    continue
            value: list[str] = []
            while True:
                if pos >= len(sd):
                    raise SyslogFormatError("STRUCTURED-DATA: unterminated PARAM-VALUE (RFC 5424 §6.3.3)")
                c = sd[pos]
                if c == "\\" and sd[pos + 1 : pos + 2] in ('"', "\\", "]"):
                    value.append(sd[pos + 1])
                    pos += 2
                elif c == '"':
                    pos += 1
                    break
                elif c == "]":  # §6.3.3: ']' MUST be escaped
                    raise SyslogFormatError("STRUCTURED-DATA: unescaped ']' in PARAM-VALUE (RFC 5424 §6.3.3)")
                else:  # §6.3.3: a backslash before any other character is kept as is
                    value.append(c)
                    pos += 1
            params.append((name, "".join(value)))
        yield pos, sd_id, params


def _scan_structured_data(sd: str, pos: int) -> int:
    end = pos
    for end, _, _ in _iter_structured_data(sd, pos):
        pass
    return end


def parse_structured_data(sd: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """STRUCTURED-DATA → [(SD-ID, [(PARAM-NAME, unescaped value)])]; [] for "-". Raises `SyslogFormatError`."""
    if sd == NILVALUE:
        return []
    out = []
    end = 0
    for end, sd_id, params in _iter_structured_data(sd, 0):
        out.append((sd_id, params))
    if end != len(sd):
        raise SyslogFormatError("STRUCTURED-DATA: trailing characters after the last SD-ELEMENT")
    return out


# ---------------------------------------------------------------------------------------------------
# Parsing


def parse_message(data: bytes) -> SyslogMessage:
    """One syslog message (RFC 5424 §6; RFC 3164 tolerated, see the module docstring). A trailing LF or
    NUL (non-transparent framing leftovers) is not part of the message and is dropped from MSG only
    when there is no MSG at all. Raises `SyslogFormatError` on anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SyslogFormatError("a syslog message is bytes")
    data = bytes(data)
    if not data.startswith(b"<"):
        raise SyslogFormatError("a syslog message starts with '<' PRIVAL '>' (RFC 5424 §6.2.1)")
    close = data.find(b">", 1, 5)
    if close < 2:
        raise SyslogFormatError("PRI must be '<' 1*3DIGIT '>' (RFC 5424 §6.2.1)")
    prival_text = data[1:close]
    if not prival_text.isdigit() or not prival_text.isascii():
        raise SyslogFormatError("PRIVAL must be digits (RFC 5424 §6.2.1)")
    prival = int(prival_text)
    if prival > 191:
        raise SyslogFormatError(f"PRIVAL {prival} exceeds 191 (RFC 5424 §6.2.1)")
    facility, severity = divmod(prival, 8)
    rest = close + 1
    if rest < len(data) and 0x31 <= data[rest] <= 0x39:  # VERSION = NONZERO-DIGIT 0*2DIGIT
        return _parse_5424(data, rest, facility, severity)
    return _parse_3164(data, rest, facility, severity)


def _next_field(data: bytes, pos: int, name: str, limit: int) -> tuple[str, int]:
    """A header field up to the next SP (which must be there), checked; returns (field, position after SP)."""
    end = data.find(b" ", pos, pos + limit + 1)
    if end < 0:
        raise SyslogFormatError(f"{name} missing, longer than {limit} octets, or not followed by SP (RFC 5424 §6)")
    raw = data[pos:end]
    if not raw:
        raise SyslogFormatError(f"{name} is empty (two SP in a row; RFC 5424 §6)")
    if not _is_printusascii_bytes(raw):
        raise SyslogFormatError(f"{name} has octets outside printable US-ASCII (RFC 5424 §6)")
    return raw.decode("ascii"), end + 1


def _parse_5424(data: bytes, pos: int, facility: int, severity: int) -> SyslogMessage:
    version, pos = _next_field(data, pos, "VERSION", 3)
    if not version.isdigit():
        raise SyslogFormatError("VERSION must be digits (RFC 5424 §6.2.2)")
    if version != "1":
        raise SyslogFormatError(f"VERSION {version} is not supported (RFC 5424 §6.2.2 defines 1)")
    timestamp, pos = _next_field(data, pos, "TIMESTAMP", 32)
    if timestamp != NILVALUE:
        _check_timestamp(timestamp)
    hostname, pos = _next_field(data, pos, "HOSTNAME", MAX_HOSTNAME)
    app_name, pos = _next_field(data, pos, "APP-NAME", MAX_APP_NAME)
    procid, pos = _next_field(data, pos, "PROCID", MAX_PROCID)
    msgid, pos = _next_field(data, pos, "MSGID", MAX_MSGID)
    # STRUCTURED-DATA, then [SP MSG]
    if data[pos : pos + 1] == b"-":
        sd, elements = NILVALUE, ()
        pos += 1
    else:
        # SD-NAMEs are ASCII; PARAM-VALUEs are UTF-8 (§6.3.3): parsed once, here.
        sd, elements, pos = _read_sd_bytes(data, pos)
    if pos == len(data):
        msg = b""
    elif data[pos] == 0x20:
        msg = data[pos + 1 :]
        if msg.startswith(BOM):  # RFC 5424 §6.4: after the BOM, MSG-UTF8 is UTF-8
            try:
                msg[3:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SyslogFormatError("MSG starts with a BOM but is not UTF-8 (RFC 5424 §6.4)") from exc
    else:
        raise SyslogFormatError("STRUCTURED-DATA must be followed by SP MSG or end the message (RFC 5424 §6)")
    return SyslogMessage(facility, severity, timestamp, hostname, app_name, procid, msgid, sd, msg, elements)


def _read_sd_bytes(data: bytes, pos: int) -> tuple[str, tuple, int]:
    """STRUCTURED-DATA starting at `pos` (RFC 5424 §6.3), parsed in one pass: (text, elements, end).

    The rest of the message is decoded with `surrogateescape` (MSG need not be UTF-8, §6.4) and the
    SD-ELEMENTs are read from it by the same scanner that checks them; the SD part itself must be
    UTF-8 (§6.3.3), i.e. hold no escaped (undecodable) octet."""
    text = data[pos:].decode("utf-8", "surrogateescape")
    elements = []
    end = 0
    for end, sd_id, params in _iter_structured_data(text, 0):
        elements.append((sd_id, tuple(params)))
    sd = text[:end]
    if not sd.isascii():
        try:
            raw = sd.encode("utf-8")
        except UnicodeEncodeError:
            raise SyslogFormatError("STRUCTURED-DATA: PARAM-VALUE is not UTF-8 (RFC 5424 §6.3.3)") from None
        return sd, tuple(elements), pos + len(raw)
    return sd, tuple(elements), pos + end


def _parse_3164(data: bytes, pos: int, facility: int, severity: int) -> SyslogMessage:
    """RFC 3164 §4.1.2 HEADER = TIMESTAMP SP HOSTNAME SP, then MSG = TAG CONTENT (lenient, §4.3)."""
    stamp = data[pos : pos + 16]
    # TIMESTAMP "Mmm dd hh:mm:ss" (day space-padded) followed by SP
    if (
        len(stamp) < 16
        or stamp[:3].decode("latin-1") not in _MONTHS
        or stamp[3:4] != b" "
        or not (stamp[4:5] == b" " or stamp[4:5].isdigit())
        or not stamp[5:6].isdigit()
        or stamp[6:7] != b" "
        or not (stamp[7:9].isdigit() and stamp[10:12].isdigit() and stamp[13:15].isdigit())
        or stamp[9:10] != b":"
        or stamp[12:13] != b":"
        or stamp[15:16] != b" "
    ):
        raise SyslogFormatError("neither an RFC 5424 VERSION nor an RFC 3164 TIMESTAMP after PRI")
    pos += 16
    hostname, pos = _next_field(data, pos, "HOSTNAME", MAX_HOSTNAME)
    # TAG: up to 32 alphanumerics (§4.1.3), then '[' pid ']' and/or ':'; if absent, everything is CONTENT.
    app_name, procid = NILVALUE, NILVALUE
    tag_end = pos
    while tag_end < len(data) and tag_end - pos < 48 and 33 <= data[tag_end] <= 126 and data[tag_end] not in b"[:":
        tag_end += 1
    after = data[tag_end : tag_end + 1]
    if tag_end > pos and after in (b"[", b":"):
        app_name = data[pos:tag_end].decode("ascii")
        cursor = tag_end
        if after == b"[":
            close = data.find(b"]", cursor, cursor + MAX_PROCID + 2)
            pid = data[cursor + 1 : close] if close > cursor + 1 else b""
            if pid and all(33 <= b <= 126 for b in pid):
                procid = pid.decode("ascii")
                cursor = close + 1
        if data[cursor : cursor + 1] == b":":
            cursor += 1
        if data[cursor : cursor + 1] == b" ":
            cursor += 1
        pos = cursor
    return SyslogMessage(facility, severity, NILVALUE, hostname, app_name, procid, NILVALUE, NILVALUE, data[pos:])


# ---------------------------------------------------------------------------------------------------
# RFC 5425 §4.3 octet counting, incremental


class FramingProblemKind(enum.Enum):
    TOO_LARGE = "too-large"  # MSG-LEN above the limit: the frame is skipped, decoding goes on
    MALFORMED_LENGTH = "malformed-length"  # not NONZERO-DIGIT *DIGIT SP: the stream is lost, close it
    UNTERMINATED = "unterminated"  # non-transparent frame with no LF within the limit: the stream is lost


@attrs.frozen
class FramingProblem:
    """A problem in the stream, reported in `OctetCountingDecoder.feed`'s output (not raised)."""

    kind: FramingProblemKind
    detail: str
    length: int | None = None

    @property
    def fatal(self) -> bool:
        """True when the decoder cannot find the next frame: the connection should be closed."""
        return self.kind is not FramingProblemKind.TOO_LARGE


class OctetCountingDecoder:
    """RFC 5425 §4.3 SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG, fed any split of the stream.

    `feed(data)` returns the complete SYSLOG-MSGs (bytes) and `FramingProblem`s in stream order. Memory is
    bounded by `max_message_bytes`: an oversize frame is reported and its octets skipped as they arrive
    (never buffered); a malformed MSG-LEN is reported once and the decoder stops (`failed`), since the
    next frame cannot be found. With `non_transparent=True` a frame that starts with '<' is read up to LF
    (RFC 6587 §3.4.2), as rsyslog's default TCP framing sends.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, non_transparent: bool = True) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self.non_transparent = non_transparent
        self._max_digits = len(str(max_message_bytes))
        self._buf = bytearray()
        self._need: int | None = None  # octets of the current SYSLOG-MSG still expected
        self._skip = 0  # octets of an oversize frame still to discard
        self._lf_mode = False
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FramingProblem]:
        out: list[bytes | FramingProblem] = []
        if self.failed:
            return out
        self._buf += data
        buf = self._buf
        while buf:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                continue
            if self._need is not None:
                if len(buf) < self._need:
                    break
                out.append(bytes(buf[: self._need]))
                del buf[: self._need]
                self._need = None
                continue
            if self._lf_mode:
                lf = buf.find(b"\n")
                if lf < 0:
                    if len(buf) > self.max_message_bytes:
                        out.append(self._fail(FramingProblemKind.UNTERMINATED, "no LF within the size limit"))
                    break
                frame = bytes(buf[:lf])
                del buf[: lf + 1]
                self._lf_mode = False
                if frame.endswith(b"\r"):
                    frame = frame[:-1]
                if frame:
                    out.append(frame)
                continue
            first = buf[0]
            if first == 0x3C and self.non_transparent:  # '<': RFC 6587 non-transparent framing
                self._lf_mode = True
                continue
            if first in (0x0A, 0x0D) and self.non_transparent:  # stray line ends between LF frames
                del buf[:1]
                continue
            # MSG-LEN = NONZERO-DIGIT *DIGIT, then SP (RFC 5425 §4.3)
            limit = min(len(buf), self._max_digits + 1)
            i = 0
            while i < limit and 0x30 <= buf[i] <= 0x39:
                i += 1
            if i == 0 or buf[0] == 0x30:
                out.append(self._fail(FramingProblemKind.MALFORMED_LENGTH, f"MSG-LEN starts with {bytes(buf[:1])!r}"))
                break
            if i == len(buf):
                if i > self._max_digits:  # digits only, already more than any allowed length
                    out.append(self._fail(FramingProblemKind.MALFORMED_LENGTH, "MSG-LEN: too many digits"))
                break  # wait for more digits or the SP
            if buf[i] != 0x20 or i > self._max_digits:
                what = "too many digits" if i > self._max_digits else f"{bytes(buf[i:i+1])!r} after the digits"
                out.append(self._fail(FramingProblemKind.MALFORMED_LENGTH, f"MSG-LEN: {what}"))
                break
            length = int(buf[:i])
            del buf[: i + 1]
            if length > self.max_message_bytes:
                out.append(
                    FramingProblem(
                        FramingProblemKind.TOO_LARGE,
                        f"MSG-LEN {length} exceeds {self.max_message_bytes} (skipped)",
                        length,
                    )
                )
                self._skip = length
            else:
                self._need = length
        return out

    def _fail(self, kind: FramingProblemKind, detail: str) -> FramingProblem:
        self.failed = True
        self._buf.clear()
        return FramingProblem(kind, detail)
