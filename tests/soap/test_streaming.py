"""Streaming through the SOAP edge: MTOM request parts into a `StreamingIntake` as they are read,
and MTOM replies whose attachments are pulled from iterators while the response is written."""

from __future__ import annotations

import hashlib
import http.client
import io
import threading
import tracemalloc
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings, strategies as st
from lxml import etree

from reactor_support import reactor, serve, thread_pool
from soap.edge import ONE_PASS_BYTES, SoapEndpoint
from soap.envelope import NS_SOAP12, NS_WSA
from soap.mtom import (
    Attachment,
    MtomReader,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartHeaders,
    build_mtom,
    build_mtom_stream,
    parse_mtom,
    xop_include,
)
from soap.operation import FunctionOperation, SoapReply, StreamingAttachment, StreamingOperation

NS = {"env": NS_SOAP12, "wsa": NS_WSA}
XOP = "http://www.w3.org/2004/08/xop/include"
PUT = "urn:test:Put"
PLAIN_PUT = "urn:test:PlainPut"
GET = "urn:test:Get"
MB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


def envelope(action: str, body: str, mid: str = "urn:uuid:stream-1") -> bytes:
    return (
        f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header>'
        f"<wsa:Action>{action}</wsa:Action><wsa:MessageID>{mid}</wsa:MessageID>"
        f"</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def put_body(*cids: str) -> str:
    docs = "".join(f'<t:Doc><xop:Include xmlns:xop="{XOP}" href="cid:{cid}"/></t:Doc>' for cid in cids)
    return f'<t:Put xmlns:t="urn:test">{docs}</t:Put>'


def pattern(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """`total` deterministic pseudo-random bytes, in chunks."""
    i = 0
    sent = 0
    while sent < total:
        block = (hashlib.sha256(i.to_bytes(8, "big")).digest() * (chunk // 32 + 1))[: min(chunk, total - sent)]
        yield block
        sent += len(block)
        i += 1


def digest(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def manual_mtom(parts: list[tuple[str, str, bytes]], start: str, boundary: str = "BOUNDARY_x1") -> tuple[str, bytes]:
    """A multipart/related body with the parts in the given order (cid, content-type, data)."""
    out = []
    for cid, ctype, data in parts:
        out.append(
            f"--{boundary}\r\nContent-Type: {ctype}\r\nContent-ID: <{cid}>\r\n\r\n".encode() + data + b"\r\n"
        )
    body = b"".join(out) + f"--{boundary}--\r\n".encode()
    ct = f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<{start}>"; start-info="application/soap+xml"'
    return ct, body


ROOT_TYPE = 'application/xop+xml; charset=UTF-8; type="application/soap+xml"'


class StreamBody(io.RawIOBase):
    """A request body read piece by piece (so the client never holds it whole)."""

    def __init__(self, head: bytes, middle: Iterator[bytes], tail: bytes):
        self._gen = self._all(head, middle, tail)
        self._buf = b""

    @staticmethod
    def _all(head, middle, tail):
        yield head
        yield from middle
        yield tail

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while len(self._buf) < max(n, 1):
            nxt = next(self._gen, None)
            if nxt is None:
                break
            self._buf += nxt
        out, self._buf = self._buf[:n] if n >= 0 else self._buf, self._buf[n:] if n >= 0 else b""
        return out


# --- the intake used by the tests ---------------------------------------------------------------


class RecordingSink:
    def __init__(self, intake: "RecordingIntake", cid: str, headers):
        self.intake, self.cid, self.headers = intake, cid, headers
        self.hash = hashlib.sha256()
        self.size = 0
        self.writes = 0
        self.largest_write = 0

    def write(self, data: bytes) -> None:
        if self.intake.fail_on_write:
            raise OSError("disk full")
        self.hash.update(data)
        self.size += len(data)
        self.writes += 1
        self.largest_write = max(self.largest_write, len(data))
        self.intake.events.append(("write", self.cid))

    def close(self) -> dict:
        self.intake.events.append(("close", self.cid))
        return {"cid": self.cid, "sha256": self.hash.hexdigest(), "size": self.size, "writes": self.writes,
                "largest_write": self.largest_write, "type": self.headers.get("content-type")}


class RecordingIntake:
    instances: list["RecordingIntake"] = []
    fail_on_write = False

    def __init__(self):
        self.events: list = []
        RecordingIntake.instances.append(self)

    def on_root(self, request) -> None:
        self.events.append(("root", request.action, len(request.body.findall(f".//{{{XOP}}}Include"))))

    def open_part(self, content_id, headers):
        self.events.append(("open", content_id))
        return RecordingSink(self, content_id, headers)

    def abort(self) -> None:
        self.events.append(("abort",))


HANDLED: list = []


def put(request, context):
    if request.body.get("fail"):
        raise RuntimeError("handler failed after the parts were staged")
    HANDLED.append(request)
    out = etree.Element("{urn:test}PutResponse")
    for element, result in request.xop.items():
        etree.SubElement(out, "{urn:test}Got", cid=result["cid"], sha256=result["sha256"], size=str(result["size"]))
    return out


STREAM_FACTORIES: dict = {}


def get(request, context):
    """Replies with the streamed attachment the request names (`<t:Get kind=.. size=..>`)."""
    kind = request.body.get("kind")
    size = int(request.body.get("size", "0"))
    body = etree.Element("{urn:test}GetResponse")
    doc = etree.SubElement(body, "{urn:test}Document")
    xop_include(doc, "doc@test")
    hint = request.body.get("hint")  # the size the reply announces (StreamingAttachment.size)
    chunks = STREAM_FACTORIES[kind](size)
    return SoapReply(body, attachments=[
        StreamingAttachment("doc@test", "application/octet-stream", chunks, size=None if hint is None else int(hint))
    ])


class Closable:
    """Chunks with a close() (like a blob reader): records that it was closed."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.closed = threading.Event()

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed.set()


LAST_CLOSABLE: list[Closable] = []


def _closable(size):
    c = Closable(pattern(size))
    LAST_CLOSABLE.append(c)
    return c


def _raising(size):
    def gen():
        yield from pattern(size // 2)
        raise ValueError("segment 17 failed authentication")

    return gen()


def _raising_at_once(size):
    def gen():
        raise ValueError("no key")
        yield b""  # pragma: no cover

    return gen()


STREAM_FACTORIES.update(pattern=lambda size: pattern(size), closable=_closable, raising=_raising,
                        raising_at_once=_raising_at_once)

OPS = {
    PUT: StreamingOperation(PUT, PUT + "Response", put, intake_factory=RecordingIntake, max_body_bytes=64 * MB),
    PLAIN_PUT: FunctionOperation(PLAIN_PUT, PLAIN_PUT + "Response", lambda r, c: etree.Element("{urn:test}Ok")),
    GET: FunctionOperation(GET, GET + "Response", get),
}


@pytest.fixture(scope="module")
def base_url():
    with thread_pool(name="soap-streaming-test") as pool:
        endpoint = SoapEndpoint(OPS, reactor=reactor(), threadpool=pool, max_body_bytes=200_000)
        with serve(endpoint) as url:
            yield url


@pytest.fixture(autouse=True)
def _reset():
    RecordingIntake.instances.clear()
    RecordingIntake.fail_on_write = False
    HANDLED.clear()
    yield


def post(url: str, body, content_type: str, length: int | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Content-Type": content_type}
    if length is not None:
        headers["Content-Length"] = str(length)
    conn.request("POST", parts.path or "/", body=body, headers=headers)
    resp = conn.getresponse()
    return conn, resp


def post_all(url, body, content_type, length=None):
    conn, resp = post(url, body, content_type, length)
    try:
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


# --- sans-I/O: MtomReader and build_mtom_stream ---------------------------------------------------


def _reader_events(content_type: str, data: bytes, chunk: int):
    events = []

    def on_root(root, headers):
        events.append(("root", etree.fromstring(root).tag))

        def opener(cid, headers):
            events.append(("open", cid))
            sink = io.BytesIO()
            sink.close = lambda: sink.getvalue()  # type: ignore[method-assign]
            return sink

        return opener

    reader = MtomReader(content_type, on_root)
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
        return events, {cid: a.data for cid, a in reader.finish().items()}
    finally:
        reader.close()


@settings(max_examples=60)
@given(
    docs=st.lists(st.binary(min_size=0, max_size=3000), min_size=0, max_size=4),
    chunk=st.integers(min_value=1, max_value=5000),
    root_position=st.integers(min_value=0, max_value=4),
)
def test_reader_dispatches_the_root_first_whatever_its_position(docs, chunk, root_position):
    cids = [f"d{i}@test" for i in range(len(docs))]
    root = envelope(PUT, put_body(*cids))
    parts = [(cid, "application/octet-stream", d) for cid, d in zip(cids, docs)]
    parts.insert(min(root_position, len(parts)), ("root@test", ROOT_TYPE, root))
    ct, data = manual_mtom(parts, "root@test", boundary="b-" + "7" * 40)
    events, got = _reader_events(ct, data, chunk)
    # the root is dispatched before any attachment is opened, every part is opened once, in order
    assert events[0][0] == "root"
    assert events[1:] == [("open", cid) for cid in [p[0] for p in parts if p[0] != "root@test"]]
    assert got == dict(zip(cids, docs))
    assert got == {cid: a.data for cid, a in parse_mtom(ct, [data]).attachments.items()}


def test_reader_spools_parts_before_the_root_outside_memory():
    big = b"".join(pattern(2 * MB))
    ct, data = manual_mtom([("a@test", "application/pdf", big), ("root@test", ROOT_TYPE, envelope(PUT, put_body("a@test")))], "root@test")
    seen = {}

    def on_root(root, headers):
        def opener(cid, headers):
            h = hashlib.sha256()
            seen[cid] = h
            return type("S", (), {"write": lambda self, d: h.update(d), "close": lambda self: h.hexdigest()})()

        return opener

    reader = MtomReader(ct, on_root)
    tracemalloc.start()
    try:
        for i in range(0, len(data), 64 * 1024):
            reader.feed(data[i : i + 64 * 1024])
        _, peak = tracemalloc.get_traced_memory()
        result = reader.finish()
    finally:
        tracemalloc.stop()
        reader.close()
    assert result["a@test"].data == hashlib.sha256(big).hexdigest() and result["a@test"].size == len(big)
    assert peak < 1 * MB, f"spooling held {peak} bytes in memory"


def test_reader_refuses_a_message_without_its_root():
    ct, data = manual_mtom([("a@test", "text/plain", b"x")], "missing@test")
    with pytest.raises(MultipartError, match="root"):
        _reader_events(ct, data, 100)


def test_stream_builder_matches_the_buffered_builder():
    root = envelope(GET, "<t:X xmlns:t='urn:test'/>")
    data = b"".join(pattern(300_000))
    ct, pieces = build_mtom_stream(
        root,
        [Attachment("a@test", "text/plain", b"fixed"), StreamingAttachment("b@test", "application/pdf", iter([data[i : i + 1000] for i in range(0, len(data), 1000)]))],
        action="urn:a",
    )
    body = b"".join(pieces)
    msg = parse_mtom(ct, [body])
    assert msg.root == root
    assert {cid: a.data for cid, a in msg.attachments.items()} == {"a@test": b"fixed", "b@test": data}
    ct2, body2 = build_mtom(root, [Attachment("a@test", "text/plain", b"fixed"), Attachment("b@test", "application/pdf", data)], action="urn:a")
    assert parse_mtom(ct2, [body2]).attachments["b@test"].data == data
    assert 'action="urn:a"' in ct and ct.startswith("multipart/related")


def test_stream_builder_closes_unconsumed_chunks():
    c = Closable([b"never read"])
    _, pieces = build_mtom_stream(b"<x/>", [StreamingAttachment("a@t", "text/plain", c)])
    next(pieces)
    pieces.close()
    assert c.closed.is_set()


# --- request streaming over HTTP ----------------------------------------------------------------


def test_mtom_parts_stream_into_the_intake(base_url):
    one = b"".join(pattern(1 * MB))
    two = b"small"
    ct, data = build_mtom(envelope(PUT, put_body("one@test", "two@test")),
                          [Attachment("one@test", "application/pdf", one), Attachment("two@test", "text/plain", two)])
    status, rct, body = post_all(base_url, data, ct)
    assert status == 200 and rct.startswith("multipart/related")
    (intake,) = RecordingIntake.instances
    kinds = [e[0] for e in intake.events]
    assert intake.events[0] == ("root", PUT, 2)
    assert kinds.index("open") > 0 and "abort" not in kinds
    assert [e for e in intake.events if e[0] in ("open", "close")] == [
        ("open", "one@test"), ("close", "one@test"), ("open", "two@test"), ("close", "two@test")]
    (request,) = HANDLED
    one_result = request.attachments["one@test"]
    # the part arrived in many bounded writes, never as one block
    assert one_result["writes"] > 4 and one_result["largest_write"] <= 128 * 1024
    assert one_result["sha256"] == hashlib.sha256(one).hexdigest() and one_result["type"] == "application/pdf"
    assert sorted(r["cid"] for r in request.xop.values()) == ["one@test", "two@test"]
    env = etree.fromstring(parse_mtom(rct, [body]).root)
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:stream-1"
    assert {g.get("cid"): g.get("size") for g in env.iter("{urn:test}Got")} == {"one@test": str(len(one)), "two@test": "5"}


def test_parts_before_the_root_are_replayed_after_it(base_url):
    ct, data = manual_mtom(
        [("a@test", "text/plain", b"first"), ("root@test", ROOT_TYPE, envelope(PUT, put_body("a@test", "b@test"))),
         ("b@test", "text/plain", b"second")],
        "root@test",
    )
    status, _, _ = post_all(base_url, data, ct)
    assert status == 200
    (intake,) = RecordingIntake.instances
    assert intake.events[0][0] == "root"
    assert [e for e in intake.events if e[0] == "open"] == [("open", "a@test"), ("open", "b@test")]
    assert HANDLED[0].attachments["a@test"]["sha256"] == hashlib.sha256(b"first").hexdigest()


@pytest.mark.parametrize("case", ["handler", "truncated", "sink", "missing-part"])
def test_intake_is_aborted_when_the_request_fails(base_url, case):
    cids = ("a@test",)
    root = envelope(PUT, put_body(*cids).replace("<t:Put ", '<t:Put fail="1" ' if case == "handler" else "<t:Put "))
    parts = [Attachment("a@test", "text/plain", b"x" * 300_000)]
    if case == "missing-part":
        root = envelope(PUT, put_body("a@test", "nowhere@test"))
    ct, data = build_mtom(root, parts)
    if case == "truncated":
        data = data[: len(data) - 200]
    RecordingIntake.fail_on_write = case == "sink"
    status, _, body = post_all(base_url, data, ct)
    assert status in (400, 500)
    assert etree.fromstring(body).find("env:Body/env:Fault", NS) is not None
    (intake,) = RecordingIntake.instances
    assert intake.events[-1] == ("abort",) and intake.events.count(("abort",)) == 1
    assert HANDLED == []


def test_an_operation_may_accept_larger_mtom_requests(base_url):
    """The endpoint's cap is 200 kB; the streaming operation's is 64 MB (the root keeps 200 kB)."""
    doc = b"".join(pattern(3 * MB))
    ct, data = build_mtom(envelope(PUT, put_body("a@test")), [Attachment("a@test", "text/plain", doc)])
    assert post_all(base_url, data, ct)[0] == 200
    ct, data = build_mtom(envelope(PLAIN_PUT, put_body("a@test")), [Attachment("a@test", "text/plain", doc)])
    status, _, body = post_all(base_url, data, ct)
    assert status == 413 and b"Sender" in body
    big_root = envelope(PUT, put_body("a@test") + "<!--" + "x" * 300_000 + "-->")
    ct, data = build_mtom(big_root, [Attachment("a@test", "text/plain", b"x")])
    assert post_all(base_url, data, ct)[0] == 400


def test_a_large_request_streams_in_bounded_memory(base_url):
    size = 40 * MB
    root = envelope(PUT, put_body("big@test"))
    boundary = "bnd-" + "4" * 30
    head = (f"--{boundary}\r\nContent-Type: {ROOT_TYPE}\r\nContent-ID: <root@test>\r\n\r\n").encode() + root + (
        f"\r\n--{boundary}\r\nContent-Type: application/pdf\r\nContent-ID: <big@test>\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    ct = f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<root@test>"; start-info="application/soap+xml"'
    tracemalloc.start()
    try:
        status, _, _ = post_all(base_url, StreamBody(head, pattern(size), tail), ct, len(head) + size + len(tail))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200
    result = HANDLED[0].attachments["big@test"]
    assert result["size"] == size and result["sha256"] == digest(pattern(size))
    assert peak < 8 * MB, f"peak traced memory {peak / MB:.1f} MB for a {size // MB} MB request"


# --- response streaming over HTTP ---------------------------------------------------------------


def get_request(kind: str, size: int, hint: int | None = None) -> bytes:
    announced = "" if hint is None else f' hint="{hint}"'
    return envelope(GET, f'<t:Get xmlns:t="urn:test" kind="{kind}" size="{size}"{announced}/>')


def read_mtom_stream(resp, chunk: int = 64 * 1024):
    """Parse a streamed MTOM response incrementally: (root bytes, {cid: (sha256, size)})."""
    from soap.envelope import parse_content_type

    _, params = parse_content_type(resp.getheader("Content-Type"))
    parser = MultipartParser(params["boundary"].encode())
    parts, current, root = {}, None, b""
    while True:
        data = resp.read(chunk)
        if not data:
            break
        for ev in parser.feed(data):
            if isinstance(ev, PartHeaders):
                current = [ev.headers.get("content-id", "").strip("<>"), hashlib.sha256(), 0]
            elif isinstance(ev, PartData):
                if current[0].startswith("root."):
                    root += ev.data
                else:
                    current[1].update(ev.data)
                    current[2] += len(ev.data)
            elif isinstance(ev, PartEnd):
                if not current[0].startswith("root."):
                    parts[current[0]] = (current[1].hexdigest(), current[2])
    parser.end()
    return root, parts


def test_a_streamed_attachment_arrives_intact_in_bounded_memory(base_url):
    size = 50 * MB
    import resource

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        conn, resp = post(base_url, get_request("pattern", size), "application/soap+xml")
        try:
            assert resp.status == 200
            assert resp.getheader("Transfer-Encoding") == "chunked" and resp.getheader("Content-Length") is None
            root, parts = read_mtom_stream(resp)
        finally:
            conn.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert parts == {"doc@test": (digest(pattern(size)), size)}
    env = etree.fromstring(root)
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == GET + "Response"
    assert env.find(f".//{{{XOP}}}Include").get("href") == "cid:doc@test"
    assert peak < 8 * MB, f"peak traced memory {peak / MB:.1f} MB while streaming {size // MB} MB"
    assert rss_growth_kb < 64 * 1024


def test_a_failing_stream_aborts_the_connection(base_url):
    conn, resp = post(base_url, get_request("raising", 8 * MB), "application/soap+xml")
    try:
        assert resp.status == 200  # the headers were sent before the failure
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):  # not a clean end
            read_mtom_stream(resp)
    finally:
        conn.close()


def test_a_stream_failing_before_its_first_byte_is_a_fault(base_url):
    status, ctype, body = post_all(base_url, get_request("raising_at_once", 10), "application/soap+xml")
    assert status == 500 and ctype.startswith("application/soap+xml")
    fault = etree.fromstring(body).find("env:Body/env:Fault", NS)
    assert fault.findtext("env:Code/env:Value", namespaces=NS) == "env:Receiver"
    assert b"no key" not in body


def test_a_client_leaving_early_closes_the_chunks(base_url):
    LAST_CLOSABLE.clear()
    conn, resp = post(base_url, get_request("closable", 200 * MB), "application/soap+xml")
    resp.read(256 * 1024)
    conn.sock.close()
    conn.close()
    (closable,) = LAST_CLOSABLE
    assert closable.closed.wait(10), "the streamed chunks were not closed after the client left"


def test_a_small_stream_is_complete_without_chunk_loop(base_url):
    status, ctype, body = post_all(base_url, get_request("pattern", 1000), "application/soap+xml")
    assert status == 200
    assert parse_mtom(ctype, [body]).attachments["doc@test"].data == b"".join(pattern(1000))


def test_a_small_sized_reply_is_written_in_one_pass_with_a_content_length(base_url):
    size = 1 * MB
    conn, resp = post(base_url, get_request("pattern", size, hint=size), "application/soap+xml")
    try:
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") is None
        body = resp.read()
        assert int(resp.getheader("Content-Length")) == len(body)
        ctype = resp.getheader("Content-Type")
    finally:
        conn.close()
    assert parse_mtom(ctype, [body]).attachments["doc@test"].data == b"".join(pattern(size))


def test_a_large_sized_reply_still_streams(base_url):
    size = ONE_PASS_BYTES + 1
    conn, resp = post(base_url, get_request("pattern", size, hint=size), "application/soap+xml")
    try:
        assert resp.getheader("Transfer-Encoding") == "chunked" and resp.getheader("Content-Length") is None
        _, parts = read_mtom_stream(resp)
    finally:
        conn.close()
    assert parts == {"doc@test": (digest(pattern(size)), size)}


def test_a_one_pass_reply_failing_is_a_fault_not_a_short_document(base_url):
    # the whole reply is produced before anything is sent: a failure is answered, not truncated
    status, ctype, body = post_all(base_url, get_request("raising", MB, hint=MB), "application/soap+xml")
    assert status == 500 and ctype.startswith("application/soap+xml")
    fault = etree.fromstring(body).find("env:Body/env:Fault", NS)
    assert fault.findtext("env:Code/env:Value", namespaces=NS) == "env:Receiver"
    assert b"segment 17" not in body


@pytest.mark.parametrize("hint", [1000, 0])
def test_a_size_hint_that_lies_changes_nothing_on_the_wire(base_url, hint):
    size = 3 * ONE_PASS_BYTES  # far more than announced: pulled in bounded batches, then streamed
    conn, resp = post(base_url, get_request("pattern", size, hint=hint), "application/soap+xml")
    try:
        assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
        _, parts = read_mtom_stream(resp)
    finally:
        conn.close()
    assert parts == {"doc@test": (digest(pattern(size)), size)}
