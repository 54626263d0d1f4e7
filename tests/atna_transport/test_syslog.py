"""atna.syslog: RFC 5424 messages, RFC 5425 octet counting, RFC 3164 leniency (sans-I/O)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atna.syslog import (
    AUDIT_MSGID,
    BOM,
    AuditMessageFormatter,
    NILVALUE,
    FramingProblem,
    FramingProblemKind,
    OctetCountingDecoder,
    SyslogFormatError,
    SyslogMessage,
    audit_message,
    format_message,
    format_structured_data,
    format_timestamp,
    octet_frame,
    parse_message,
    parse_structured_data,
    udp_datagram,
)

XML = b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification/></AuditMessage>'

# ---------------------------------------------------------------------------------------------------
# strategies

printusascii = st.characters(min_codepoint=33, max_codepoint=126)


def header_field(limit: int):
    return st.one_of(st.just(NILVALUE), st.text(printusascii, min_size=1, max_size=limit))


sd_name = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='= ]"'), min_size=1, max_size=32)
sd_value = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
structured = st.lists(
    st.tuples(sd_name, st.lists(st.tuples(sd_name, sd_value), max_size=3)), max_size=3
).map(format_structured_data)

timestamps = st.one_of(
    st.just(NILVALUE),
    st.datetimes(
        min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-9, minutes=-30))]),
    ).map(format_timestamp),
)

msgs = st.one_of(
    st.text(max_size=200).map(lambda t: BOM + t.encode("utf-8")),
    st.binary(max_size=200).filter(lambda b: not b.startswith(BOM)),
)

messages = st.builds(
    SyslogMessage,
    facility=st.integers(0, 23),
    severity=st.integers(0, 7),
    timestamp=timestamps,
    hostname=header_field(255),
    app_name=header_field(48),
    procid=header_field(128),
    msgid=header_field(32),
    structured_data=structured,
    msg=msgs,
)


# ---------------------------------------------------------------------------------------------------
# RFC 5424 messages


def test_audit_message_wire_form():
    msg = audit_message(
        XML,
        timestamp="2026-11-23T10:15:00.123456+01:00",
        hostname="carnet.example.fr",
        app_name="carnet",
        procid="4242",
        structured_data=format_structured_data([("carnet@32473", [("eventId", "e-1")])]),
    )
    wire = format_message(msg)
    # ITI TF-2a §3.20.6.1: <PRI> = 10*8+5 = 85, VERSION 1, MSGID IHE+RFC-3881, BOM before the XML
    assert wire == (
        b'<85>1 2026-11-23T10:15:00.123456+01:00 carnet.example.fr carnet 4242 IHE+RFC-3881 '
        b'[carnet@32473 eventId="e-1"] \xef\xbb\xbf' + XML
    )
    back = parse_message(wire)
    assert back == msg
    assert (back.facility, back.severity, back.msgid) == (10, 5, AUDIT_MSGID)
    assert back.payload == XML
    assert back.sd_param("carnet@32473", "eventId") == "e-1"
    assert back.sd_param("carnet@32473", "other") is None


def test_audit_message_does_not_double_the_bom():
    msg = audit_message(BOM + XML, timestamp=NILVALUE, hostname="h", app_name="a")
    assert msg.msg == BOM + XML


def test_nil_values_and_no_msg():
    wire = b"<0>1 - - - - - -"
    assert parse_message(wire) == SyslogMessage(0, 0, "-", "-", "-", "-", "-", "-", b"")
    assert format_message(parse_message(wire)) == wire


def test_rfc5424_examples():
    # RFC 5424 §6.5 examples 1 and 3 (example 1 with its BOM)
    ex1 = b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8"
    m = parse_message(ex1)
    assert (m.facility, m.severity, m.hostname, m.app_name, m.procid, m.msgid) == (4, 2, "mymachine.example.com", "su", "-", "ID47")
    ex3 = (
        b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] \xef\xbb\xbfAn application event log entry...'
    )
    m = parse_message(ex3)
    assert parse_structured_data(m.structured_data) == [
        ("exampleSDID@32473", [("iut", "3"), ("eventSource", "Application"), ("eventID", "1011")])
    ]
    assert m.payload == b"An application event log entry..."
    ex4 = b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"][examplePriority@32473 class="high"]'
    m = parse_message(ex4)
    assert [e[0] for e in parse_structured_data(m.structured_data)] == ["exampleSDID@32473", "examplePriority@32473"]
    assert m.msg == b""


@pytest.mark.parametrize(
    "field, value",
    [
        ("hostname", "h" * 256),
        ("app_name", "a" * 49),
        ("procid", "p" * 129),
        ("msgid", "m" * 33),
        ("hostname", "has space"),
        ("app_name", "é"),
        ("msgid", ""),
        ("timestamp", "2026-11-23 10:15:00Z"),
        ("timestamp", "2026-11-23T10:15:60Z"),  # no leap second (§6.2.3)
        ("timestamp", "2026-02-30T10:15:00Z"),
        ("timestamp", "2026-11-23t10:15:00z"),  # T and Z upper case
        ("timestamp", "2026-11-23T10:15:00.1234567Z"),  # SECFRAC ≤ 6 digits
        ("facility", 24),
        ("severity", 8),
        ("structured_data", "[bad"),
        ("structured_data", '[a b="c"]x'),
    ],
)
def test_format_rejects_fields_outside_the_abnf(field, value):
    fields = dict(facility=10, severity=5, timestamp="2026-11-23T10:15:00Z", hostname="h", app_name="a",
                  procid="-", msgid="m", structured_data="-", msg=b"x")
    fields[field] = value
    with pytest.raises(SyslogFormatError):
        format_message(SyslogMessage(**fields))


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"hello",
        b"<>1 - - - - - -",
        b"<192>1 - - - - - -",
        b"<abc>1 - - - - - -",
        b"<13>2 - - - - - -",  # VERSION 2 unsupported
        b"<13>1 - - - - -",  # SD missing
        b"<13>1  - - - - -",  # empty TIMESTAMP
        b"<13>1 - - - - - -x",  # no SP before MSG
        b"<13>1 - - - - - [a",  # unterminated SD
        b'<13>1 - - - - - [a b="c\xff"]',  # SD value not UTF-8
        b"<13>1 - - - - - - \xef\xbb\xbf\xff",  # BOM then not UTF-8
        b"<13>1 - h\x01 - - - -",  # control octet in HOSTNAME
        b"<13>Foo 11 22:14:15 host msg",  # not a BSD timestamp either
    ],
)
def test_parse_rejects_malformed(wire):
    with pytest.raises(SyslogFormatError):
        parse_message(wire)


@settings(max_examples=300)
@given(messages)
def test_round_trip(msg):
    wire = format_message(msg)
    assert parse_message(wire) == msg
    assert format_message(parse_message(wire)) == wire


@settings(max_examples=300)
@given(messages)
def test_structured_data_is_parsed_once_with_the_message(msg):
    parsed = parse_message(format_message(msg))
    # RFC 5424 §6.3: the elements read while finding the end of STRUCTURED-DATA are the ones it holds
    assert parsed.sd_elements == tuple((i, tuple(p)) for i, p in parse_structured_data(msg.structured_data))
    for sd_id, params in parse_structured_data(msg.structured_data):
        for name, _value in params:
            expected = SyslogMessage(0, 0, "-", "-", "-", "-", "-", msg.structured_data).sd_param(sd_id, name)
            assert parsed.sd_param(sd_id, name) == expected


def test_escaped_and_non_ascii_sd_values_and_a_non_utf8_msg():
    wire = ('<85>1 - h a - m [x@1 a="q\\"uo\\]te\\\\" b="é€"][y@2 c=""] ').encode("utf-8") + b"\xff\xfe"
    msg = parse_message(wire)
    assert msg.sd_param("x@1", "a") == 'q"uo]te\\'
    assert msg.sd_param("x@1", "b") == "é€"
    assert msg.sd_param("y@2", "c") == ""
    assert msg.msg == b"\xff\xfe"  # MSG without BOM may be any octets (RFC 5424 §6.4)
    assert format_message(msg) == wire


@settings(max_examples=200)
@given(
    header_field(255).filter(lambda v: v != NILVALUE), header_field(48), header_field(128),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30),
                 timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30))])),
    st.lists(st.tuples(sd_name, st.lists(st.tuples(sd_name, sd_value), max_size=3)), max_size=2),
    st.binary(max_size=200),
)
def test_audit_formatter_writes_what_format_message_writes(hostname, app_name, procid, when, sd, xml):
    formatter = AuditMessageFormatter(hostname=hostname, app_name=app_name, procid=procid)
    expected = format_message(audit_message(
        xml, timestamp=format_timestamp(when), hostname=hostname, app_name=app_name, procid=procid,
        structured_data=format_structured_data(sd),
    ))
    assert formatter.format(xml, when, sd) == expected


@pytest.mark.parametrize("field, value", [("hostname", "two words"), ("app_name", "x" * 49), ("procid", ""),
                                          ("hostname", "hôte")])
def test_audit_formatter_checks_its_header_fields_once(field, value):
    fields = {"hostname": "carnet.test", "app_name": "carnet", "procid": "1", field: value}
    with pytest.raises(SyslogFormatError):
        AuditMessageFormatter(**fields)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_garbage_raises_only_the_typed_error(data):
    try:
        parse_message(data)
    except SyslogFormatError:
        pass


@settings(max_examples=300)
@given(messages, st.integers(0, 400), st.binary(min_size=1, max_size=1))
def test_mutated_messages_raise_only_the_typed_error(msg, index, octet):
    wire = bytearray(format_message(msg))
    wire[index % len(wire)] = octet[0]
    try:
        parse_message(bytes(wire))
    except SyslogFormatError:
        pass


# ---------------------------------------------------------------------------------------------------
# RFC 3164, tolerated


def test_bsd_messages_are_accepted_leniently():
    m = parse_message(b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed")
    assert (m.facility, m.severity, m.timestamp, m.hostname, m.app_name, m.procid, m.msgid) == (
        4, 2, NILVALUE, "mymachine", "su", "230", NILVALUE
    )
    assert m.msg == b"'su root' failed"
    m = parse_message(b"<85>Jan  5 01:02:03 node ATNA: " + XML)
    assert (m.app_name, m.procid, m.payload) == ("ATNA", NILVALUE, XML)
    m = parse_message(b"<85>Jan  5 01:02:03 node " + XML)  # no TAG: all of it is CONTENT
    assert (m.app_name, m.payload) == (NILVALUE, XML)


# ---------------------------------------------------------------------------------------------------
# RFC 5425 §4.3 octet counting


def test_octet_frame():
    assert octet_frame(b"<0>1 - - - - - -") == b"16 <0>1 - - - - - -"
    with pytest.raises(SyslogFormatError):
        octet_frame(b"")


def _decode_all(decoder: OctetCountingDecoder, chunks) -> list:
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


@settings(max_examples=200)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.data())
def test_any_split_decodes_the_same(payloads, data):
    stream = b"".join(octet_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    decoder = OctetCountingDecoder(1000, non_transparent=False)
    assert _decode_all(decoder, chunks) == payloads
    assert decoder.buffered == 0


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=8), st.data())
def test_oversize_frames_are_reported_and_skipped(payloads, data):
    limit = 60
    stream = b"".join(octet_frame(p) for p in payloads)
    size = data.draw(st.integers(1, 17))
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    decoder = OctetCountingDecoder(limit, non_transparent=False)
    expected = [
        p if len(p) <= limit else FramingProblem(FramingProblemKind.TOO_LARGE, f"MSG-LEN {len(p)} exceeds {limit} (skipped)", len(p))
        for p in payloads
    ]
    assert _decode_all(decoder, chunks) == expected
    assert decoder.buffered <= limit + 10


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=50), max_size=10))
def test_garbage_streams_yield_bytes_or_problems(chunks):
    decoder = OctetCountingDecoder(100)
    for item in _decode_all(decoder, chunks):
        assert isinstance(item, (bytes, FramingProblem))
    assert decoder.buffered <= 100 + 50


@pytest.mark.parametrize(
    "stream, detail",
    [
        (b"abc <0>1 - - - - - -", "MSG-LEN starts with b'a'"),
        (b"05 hello", "MSG-LEN starts with b'0'"),
        (b"12x hello", "MSG-LEN: b'x' after the digits"),
        (b"123456789", "MSG-LEN: too many digits"),
        (b"12345", "MSG-LEN: too many digits"),
    ],
)
def test_malformed_length_stops_the_decoder(stream, detail):
    decoder = OctetCountingDecoder(1000, non_transparent=False)
    assert decoder.feed(stream) == [FramingProblem(FramingProblemKind.MALFORMED_LENGTH, detail)]
    assert decoder.failed
    assert decoder.feed(b"5 hello") == []


def test_non_transparent_frames_are_accepted():
    decoder = OctetCountingDecoder(100)
    stream = b"<13>1 - - - - - - one\n" + octet_frame(b"<13>1 - - - - - - two") + b"<13>1 - - - - - - three\r\n"
    assert _decode_all(decoder, [stream[:7], stream[7:30], stream[30:]]) == [
        b"<13>1 - - - - - - one", b"<13>1 - - - - - - two", b"<13>1 - - - - - - three"
    ]
    decoder = OctetCountingDecoder(10)
    out = decoder.feed(b"<13>1 - - - - - - no line end in sight")
    assert [p.kind for p in out] == [FramingProblemKind.UNTERMINATED] and out[0].fatal


def test_udp_datagram_limit():
    assert udp_datagram(b"x" * 65507) == b"x" * 65507
    with pytest.raises(SyslogFormatError):
        udp_datagram(b"x" * 65508)
