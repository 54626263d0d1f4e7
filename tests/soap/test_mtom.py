"""MTOM/XOP: the incremental multipart parser, XOP resolution, building, and a real Axis2 capture."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings, strategies as st
from lxml import etree

from soap.envelope import parse_soap
from soap.mtom import (
    Attachment,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartHeaders,
    build_mtom,
    parse_mtom,
    resolve_xop,
    xop_include,
)
from support import need_shared

B = b"simple-boundary"


def message(*parts: tuple[dict[str, str], bytes], crlf: bytes = b"\r\n", preamble: bytes = b"") -> bytes:
    out = [preamble]
    for headers, body in parts:
        out.append(b"--" + B + crlf)
        for k, v in headers.items():
            out.append(f"{k}: {v}".encode() + crlf)
        out += [crlf, body, crlf]
    out.append(b"--" + B + b"--" + crlf + b"epilogue")
    return b"".join(out)


def collect(events):
    parts, current = [], None
    for ev in events:
        if isinstance(ev, PartHeaders):
            current = [ev.headers, b""]
        elif isinstance(ev, PartData):
            current[1] += ev.data
        else:
            assert isinstance(ev, PartEnd)
            parts.append((current[0], current[1]))
    return parts


def run(data: bytes, splits) -> list:
    p = MultipartParser(B)
    events = []
    prev = 0
    for s in sorted(set(splits)) + [len(data)]:
        events += p.feed(data[prev:s])
        prev = s
    events += p.end()
    assert p.finished
    return collect(events)


PARTS = [
    ({"Content-Type": "application/xop+xml", "Content-ID": "<root@x>"}, b"<root/>"),
    ({"Content-Type": "application/octet-stream", "Content-ID": "<a@x>"}, b"\r\n--simple-boundar\r\nx\r"),
    ({"Content-ID": "<b@x>"}, b""),
]


def test_parts_headers_and_data():
    parts = run(message(*PARTS, preamble=b"this is a preamble\r\n"), [])
    assert [h["content-id"] for h, _ in parts] == ["<root@x>", "<a@x>", "<b@x>"]
    assert [d for _, d in parts] == [d for _, d in PARTS]


def test_bare_lf_and_transport_padding_are_accepted():
    data = message(*PARTS, crlf=b"\n").replace(b"--" + B + b"\n", b"--" + B + b" \t\n", 1)
    parts = run(data, [])
    assert parts[0][1] == b"<root/>" and len(parts) == 3


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=60), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=400), max_size=30),
)
def test_any_split_gives_the_same_parts(bodies, splits):
    parts = [({"Content-ID": f"<{i}@x>"}, body) for i, body in enumerate(bodies)]
    data = message(*parts)
    whole = run(data, [])
    assert [d for _, d in whole] == bodies
    assert run(data, [s for s in splits if s < len(data)]) == whole
    assert run(data, range(1, len(data))) == whole  # byte by byte


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=5))
def test_garbage_only_raises_multipart_error(data, splits):
    p = MultipartParser(B, max_parts=5, max_header_bytes=100)
    try:
        prev = 0
        for s in sorted(splits) + [len(data)]:
            p.feed(data[prev:s])
            prev = max(prev, s)
        p.end()
    except MultipartError:
        pass


def test_a_50_mb_part_streams_through_a_small_buffer():
    chunk = bytes(range(256)) * 256  # 64 KiB
    head = b"--" + B + b"\r\nContent-ID: <big@x>\r\n\r\n"
    p = MultipartParser(B)
    digest, size, peak = hashlib.sha256(), 0, 0
    expected = hashlib.sha256()

    def feed(data):
        nonlocal size, peak
        for ev in p.feed(data):
            if isinstance(ev, PartData):
                digest.update(ev.data)
                size += len(ev.data)
        peak = max(peak, p.buffered)

    feed(head)
    for _ in range(800):  # 50 MiB
        feed(chunk)
        expected.update(chunk)
    feed(b"\r\n--" + B + b"--\r\n")
    p.end()
    assert size == 800 * len(chunk) and digest.digest() == expected.digest()
    assert peak <= len(chunk) + 64  # never more than one chunk plus a delimiter


def test_limits_and_malformed_input():
    with pytest.raises(MultipartError, match="headers exceed"):
        MultipartParser(B, max_header_bytes=64).feed(b"--" + B + b"\r\nX-Long: " + b"a" * 100)
    with pytest.raises(MultipartError, match="headers exceed"):  # no line end at all
        MultipartParser(B, max_header_bytes=64).feed(b"--" + B + b"\r\n" + b"a" * 100)
    with pytest.raises(MultipartError, match="more than 2"):
        MultipartParser(B, max_parts=2).feed(message(*PARTS))
    with pytest.raises(MultipartError, match="malformed MIME header"):
        MultipartParser(B).feed(b"--" + B + b"\r\nno colon here\r\n\r\n")
    with pytest.raises(MultipartError, match="line end"):
        MultipartParser(B).feed(b"--" + B + b"X\r\n")
    with pytest.raises(MultipartError, match="no parts"):
        MultipartParser(B).feed(b"--" + B + b"--\r\n")
    truncated = MultipartParser(B)
    truncated.feed(message(*PARTS)[:-30])
    with pytest.raises(MultipartError, match="truncated"):
        truncated.end()


def test_build_then_parse_round_trip_and_xop():
    doc = etree.fromstring(b'<r xmlns:x="urn:x"><x:Document id="d1"/></r>')
    xop_include(doc[0], "doc 1@carnet")
    root_xml = etree.tostring(doc)
    att = Attachment("doc 1@carnet", "application/pdf", b"%PDF-1.4\r\n--MIMEBoundary\r\n\x00\xff")
    content_type, body = build_mtom(root_xml, [att], action="urn:ihe:iti:2007:RetrieveDocumentSetResponse")
    assert content_type.startswith("multipart/related;") and 'type="application/xop+xml"' in content_type
    msg = parse_mtom(content_type, [body[i : i + 5] for i in range(0, len(body), 5)])
    assert msg.root == root_xml
    assert msg.root_headers["content-type"].startswith("application/xop+xml")
    got = msg.attachments["doc 1@carnet"]
    assert (got.content_type, got.data, got.size) == ("application/pdf", att.data, len(att.data))
    parsed = etree.fromstring(msg.root)
    mapping = resolve_xop(parsed, msg.attachments)
    (element, attachment), = mapping.items()
    assert element.get("id") == "d1" and attachment is got
    assert len(element) == 0 and not element.text  # the Include is gone, nothing inlined


def test_resolve_xop_unknown_cid():
    doc = etree.fromstring(b'<r><d><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:nope"/></d></r>')
    with pytest.raises(MultipartError, match="missing MIME part"):
        resolve_xop(doc, {})


class ListSink:
    instances: list = []

    def __init__(self, headers):
        self.headers, self.chunks, self.closed = headers, [], False
        ListSink.instances.append(self)

    def write(self, data):
        self.chunks.append(data)

    def close(self):
        self.closed = True
        return ("stored", sum(map(len, self.chunks)))


def test_custom_sink_receives_attachment_parts_only():
    root = b"<env/>"
    content_type, body = build_mtom(root, [Attachment("a@x", "text/plain", b"x" * 1000), Attachment("b@x", "text/plain", b"yy")])
    ListSink.instances = []
    msg = parse_mtom(content_type, [body[i : i + 100] for i in range(0, len(body), 100)], sink_factory=ListSink)
    assert msg.root == root
    assert [s.headers["content-id"] for s in ListSink.instances] == ["<a@x>", "<b@x>"]
    assert all(s.closed for s in ListSink.instances)
    assert msg.attachments["a@x"].data == ("stored", 1000) and msg.attachments["a@x"].size == 1000


def test_parse_mtom_errors():
    ok_ct, body = build_mtom(b"<e/>", [])
    with pytest.raises(MultipartError):
        parse_mtom("application/soap+xml", [body])
    wrong_start = ok_ct.replace('start="<', 'start="<missing.')
    with pytest.raises(MultipartError, match="root part"):
        parse_mtom(wrong_start, [body])
    with pytest.raises(MultipartError, match="Content-Transfer-Encoding"):
        parse_mtom(ok_ct, [body.replace(b"Content-Transfer-Encoding: binary", b"Content-Transfer-Encoding: base64")])
    with pytest.raises(MultipartError, match="root part must be application/xop"):
        parse_mtom(ok_ct, [body.replace(b"Content-Type: application/xop+xml", b"Content-Type: text/xml")])


def test_axis2_capture_of_an_iti41_request():
    raw = need_shared("samples", "iti41", "nist-validator__http-mtom-pnr.txt").read_bytes()
    head, _, body = raw.partition(b"\n\n")  # the capture uses bare LF line ends
    headers = dict(line.split(b": ", 1) for line in head.split(b"\n")[1:])
    content_type = headers[b"Content-Type"].decode().strip()
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    msg = parse_mtom(content_type, chunks)
    request = parse_soap(msg.root)
    assert request.action == "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    assert request.message_id == "urn:uuid:3D4B161591CD1DEC0C1286850962146"
    assert etree.QName(request.body).localname == "ProvideAndRegisterDocumentSetRequest"
    cid = "1.urn:uuid:3D4B161591CD1DEC0C1286850962319@apache.org"
    assert list(msg.attachments) == [cid]
    text = msg.attachments[cid].data
    assert text.startswith(b"Four score and seven years ago") and text.endswith(b"shall not perish from the earth.")
    mapping = resolve_xop(request.body, msg.attachments)
    (document, attachment), = mapping.items()
    assert document.get("id") == "urn:uuid:102439f8-5881-4b36-8b42-ef73ae560c04"
    assert attachment.content_type == "text/plain"
