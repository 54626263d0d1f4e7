"""MTOM/XOP (W3C SOAP MTOM, XOP 1.0) over MIME multipart/related (RFC 2046 §5.1, RFC 2387) — sans-I/O.

`MultipartParser` is incremental in the style of h11: feed it bytes as they arrive, get events back.
It never holds a whole part: its buffer stays below max(chunk, header limit) + the delimiter length,
so the repository can hash, encrypt and store a large document while reading it (DESIGN.md §1).

Leniency (be liberal in what we accept): a bare LF is accepted where MIME requires CRLF (some
captures and proxies rewrite line ends), and transport padding after a boundary is skipped.
"""

from __future__ import annotations

import io
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol
from urllib.parse import unquote

import attrs
from lxml import etree

from soap.envelope import NS_XOP, SenderFault, parse_content_type
from soap.spill import EphemeralSpool

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_PARTS = 1000
_MAX_PADDING = 256


class MultipartError(SenderFault):
    """Malformed or over-limit multipart/related or XOP content (a Sender fault)."""


# --- events --------------------------------------------------------------------------------------


@attrs.frozen
class PartHeaders:
    headers: Mapping[str, str]  # lower-cased names


@attrs.frozen
class PartData:
    data: bytes


@attrs.frozen
class PartEnd:
    pass


Event = PartHeaders | PartData | PartEnd

_PREAMBLE, _HEADERS, _BODY, _AFTER_DELIMITER, _EPILOGUE = range(5)


class MultipartParser:
    """Incremental parser of one multipart body, given its boundary (without the leading '--')."""

    def __init__(
        self,
        boundary: bytes,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_parts: int = DEFAULT_MAX_PARTS,
    ):
        if not boundary or len(boundary) > 200:
            raise MultipartError("invalid multipart boundary")
        self._delimiter = b"\n--" + boundary
        self._buffer = bytearray(b"\r\n")  # the first delimiter may open the body
        self._state = _PREAMBLE
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._parts = 0
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._last_header: str | None = None

    @property
    def finished(self) -> bool:
        """True once the close delimiter has been read."""
        return self._state == _EPILOGUE

    @property
    def buffered(self) -> int:
        """Bytes held inside the parser (bounded; tests assert on it)."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Event]:
        if self._state == _EPILOGUE:
            return []  # the epilogue is ignored (RFC 2046 §5.1.1)
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def end(self) -> list[Event]:
        """Signal end of input; raises `MultipartError` if the close delimiter was not seen."""
        if self._state != _EPILOGUE:
            raise MultipartError("multipart body truncated: no closing boundary")
        return []

    # One state transition; False when more input is needed.
    def _step(self, events: list[Event]) -> bool:
        if self._state == _PREAMBLE:
            return self._preamble()
        if self._state == _AFTER_DELIMITER:
            return self._after_delimiter(events)
        if self._state == _HEADERS:
            return self._header_line(events)
        if self._state == _BODY:
            return self._body(events)
        self._buffer.clear()
        return False

    def _preamble(self) -> bool:
        i = self._buffer.find(self._delimiter)
        if i < 0:
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                del self._buffer[: len(self._buffer) - keep]
            return False
        del self._buffer[: i + len(self._delimiter)]
        self._state = _AFTER_DELIMITER
        return True

    def _after_delimiter(self, events: list[Event]) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        if buf[:2] == b"--":
            if self._parts == 0:
                raise MultipartError("multipart body has no parts")
            del buf[:]
            self._state = _EPILOGUE
            return False
        i = 0
        while i < len(buf) and buf[i] in b" \t":  # transport padding (RFC 2046 §5.1.1)
            i += 1
        if i > _MAX_PADDING:
            raise MultipartError("too much transport padding after a boundary")
        if i == len(buf) or (buf[i] == 0x0D and i + 1 == len(buf)):
            return False
        if buf[i : i + 2] == b"\r\n":
            i += 2
        elif buf[i] == 0x0A:
            i += 1
        else:
            raise MultipartError("boundary delimiter not followed by a line end")
        del buf[:i]
        self._parts += 1
        if self._parts > self._max_parts:
            raise MultipartError(f"more than {self._max_parts} MIME parts")
        self._headers, self._header_bytes, self._last_header = {}, 0, None
        self._state = _HEADERS
        return True

    def _header_line(self, events: list[Event]) -> bool:
        buf = self._buffer
        nl = buf.find(b"\n")
        if nl < 0:
            if self._header_bytes + len(buf) > self._max_header_bytes:
                raise MultipartError(f"MIME part headers exceed {self._max_header_bytes} bytes")
            return False
        self._header_bytes += nl + 1
        if self._header_bytes > self._max_header_bytes:
            raise MultipartError(f"MIME part headers exceed {self._max_header_bytes} bytes")
        line = bytes(buf[:nl]).rstrip(b"\r")
        del buf[: nl + 1]
        if not line:
            events.append(PartHeaders(dict(self._headers)))
            self._state = _BODY
            return True
        text = line.decode("latin-1")
        if text[0] in " \t":  # folded continuation (RFC 5322 §2.2.3)
            if self._last_header is None:
                raise MultipartError("MIME header continuation without a header")
            self._headers[self._last_header] += " " + text.strip()
            return True
        name, sep, value = text.partition(":")
        name = name.strip().lower()
        if not sep or not name or any(c in name for c in " \t"):
            raise MultipartError(f"malformed MIME header line {text[:80]!r}")
        self._headers.setdefault(name, value.strip())
        self._last_header = name
        return True

    def _body(self, events: list[Event]) -> bool:
        buf = self._buffer
        i = buf.find(self._delimiter)
        if i < 0:
            # Everything but a possible partial delimiter (and the CR before it) is part data.
            n = len(buf) - len(self._delimiter) - 1
            if n > 0:
                events.append(PartData(bytes(buf[:n])))
                del buf[:n]
            return False
        end = i - 1 if i > 0 and buf[i - 1] == 0x0D else i
        if end > 0:
            events.append(PartData(bytes(buf[:end])))
        events.append(PartEnd())
        del buf[: i + len(self._delimiter)]
        self._state = _AFTER_DELIMITER
        return True


# --- whole messages ------------------------------------------------------------------------------


class Sink(Protocol):
    def write(self, data: bytes) -> Any: ...

    def close(self) -> Any: ...


class MemorySink:
    """The default sink: collects a part in memory; close() returns its bytes."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()

    def write(self, data: bytes) -> None:
        self._buf.write(data)

    def close(self) -> bytes:
        return self._buf.getvalue()


SinkFactory = Callable[[Mapping[str, str]], Sink]


@attrs.frozen(eq=False)
class Attachment:
    """One MIME part other than the root. `data`: bytes (default sink, and for building), or
    whatever the custom sink's close() returned. `size`: bytes received."""

    content_id: str  # without the angle brackets
    content_type: str
    data: Any
    size: int = 0
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(eq=False)
class MtomMessage:
    root: bytes
    root_headers: Mapping[str, str]
    attachments: dict[str, Attachment]  # by content_id

    def __iter__(self):  # `root, attachments = parse_mtom(...)`
        return iter((self.root, self.attachments))


def normalize_content_id(value: str) -> str:
    """'<a@b>' → 'a@b'; 'cid:a%40b' → 'a@b' (RFC 2392)."""
    value = value.strip()
    if value[:4].lower() == "cid:":
        value = unquote(value[4:])
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.strip()


def parse_mtom(
    content_type: str,
    data_chunks: Iterable[bytes],
    *,
    sink_factory: SinkFactory | None = None,
    max_root_bytes: int = 64 * 1024 * 1024,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> MtomMessage:
    """Collect an MTOM multipart/related message: the root part (the SOAP envelope, in memory,
    capped) and the attachments, each written to a sink made by `sink_factory(headers)`."""
    mime, params = parse_content_type(content_type)
    if mime != "multipart/related" or not params.get("boundary"):
        raise MultipartError("not a multipart/related media type with a boundary")
    start = normalize_content_id(params["start"]) if params.get("start") else None
    parser = MultipartParser(
        params["boundary"].encode("latin-1"), max_parts=max_parts, max_header_bytes=max_header_bytes
    )
    factory = sink_factory or (lambda headers: MemorySink())
    collector = _Collector(start, factory, max_root_bytes)
    for chunk in data_chunks:
        collector.handle(parser.feed(chunk))
    parser.end()
    return collector.result()


class _Collector:
    def __init__(self, start: str | None, factory: SinkFactory, max_root_bytes: int):
        self.start, self.factory, self.max_root_bytes = start, factory, max_root_bytes
        self.root: bytearray | None = None
        self.root_headers: Mapping[str, str] = {}
        self.attachments: dict[str, Attachment] = {}
        self.headers: Mapping[str, str] = {}
        self.sink: Sink | None = None
        self.in_root = False
        self.size = 0

    def handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, PartHeaders):
                self._begin(ev.headers)
            elif isinstance(ev, PartData):
                self.size += len(ev.data)
                if self.in_root:
                    if self.size > self.max_root_bytes:
                        raise MultipartError(f"MTOM root part exceeds {self.max_root_bytes} bytes")
                    assert self.root is not None
                    self.root += ev.data
                else:
                    assert self.sink is not None
                    self.sink.write(ev.data)
            else:
                self._finish()

    def _begin(self, headers: Mapping[str, str]) -> None:
        cid = _part_content_id(headers)
        self.headers, self.size = headers, 0
        is_root = self.root is None and (self.start is None or cid == self.start)
        if is_root:
            self.in_root, self.root, self.root_headers = True, bytearray(), headers
            return
        if not cid:
            raise MultipartError("MTOM attachment part without a Content-ID")
        if cid in self.attachments or cid == self.start:
            raise MultipartError(f"duplicate Content-ID {cid!r}")
        self.in_root, self.sink = False, self.factory(headers)

    def _finish(self) -> None:
        if self.in_root:
            self.in_root = False
            return
        assert self.sink is not None
        cid = normalize_content_id(self.headers.get("content-id", ""))
        ctype = self.headers.get("content-type", "application/octet-stream")
        self.attachments[cid] = Attachment(cid, ctype, self.sink.close(), self.size, self.headers)
        self.sink = None

    def result(self) -> MtomMessage:
        if self.root is None:
            raise MultipartError("MTOM message without its root part" + (f" <{self.start}>" if self.start else ""))
        _check_root_type(self.root_headers)
        return MtomMessage(bytes(self.root), self.root_headers, self.attachments)


def _part_content_id(headers: Mapping[str, str]) -> str:
    """The part's Content-ID (normalized); refuses encodings MTOM does not use (XOP §4)."""
    cte = headers.get("content-transfer-encoding", "binary").strip().lower()
    if cte not in ("binary", "8bit", "7bit"):
        raise MultipartError(f"unsupported Content-Transfer-Encoding {cte!r} in an MTOM part")
    return normalize_content_id(headers.get("content-id", ""))


def _check_root_type(root_headers: Mapping[str, str]) -> None:
    ctype, _ = parse_content_type(root_headers.get("content-type", ""))
    if ctype != "application/xop+xml":  # MTOM §3.2 / XOP §4.1
        raise MultipartError(f"MTOM root part must be application/xop+xml, not {ctype!r}")


# --- streaming reader ---------------------------------------------------------------------------

PartOpener = Callable[[str, Mapping[str, str]], Sink]  # (content_id, headers) → sink
SPOOL_MEMORY_BYTES = 64 * 1024
_REPLAY_CHUNK = 64 * 1024


class MtomReader:
    """Reads an MTOM message incrementally and hands each attachment to a sink as it arrives.

    The root part (the SOAP envelope) is collected in memory, capped at `max_root_bytes`. As
    soon as it is complete, `on_root(root_bytes, root_headers)` is called (the caller parses
    and dispatches it) and returns the `PartOpener` that makes a sink per attachment. Parts
    that precede the root (the `start` parameter names a later part) are spooled to temporary
    files (at most `SPOOL_MEMORY_BYTES` of each in memory) and replayed into their sinks right
    after `on_root`, in message order. Usage: `feed()` every chunk, then `finish()`, which
    returns the attachments by Content-ID (`Attachment.data` = the sink's close() result);
    `close()` releases spools in any case."""

    def __init__(
        self,
        content_type: str,
        on_root: Callable[[bytes, Mapping[str, str]], PartOpener],
        *,
        max_root_bytes: int = 64 * 1024 * 1024,
        max_parts: int = DEFAULT_MAX_PARTS,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ):
        mime, params = parse_content_type(content_type)
        if mime != "multipart/related" or not params.get("boundary"):
            raise MultipartError("not a multipart/related media type with a boundary")
        self.start = normalize_content_id(params["start"]) if params.get("start") else None
        self._parser = MultipartParser(
            params["boundary"].encode("latin-1"), max_parts=max_parts, max_header_bytes=max_header_bytes
        )
        self._on_root = on_root
        self._max_root_bytes = max_root_bytes
        self._opener: PartOpener | None = None
        self._root: bytearray | None = None
        self._root_seen = False
        self._spooled: list[tuple[str, Mapping[str, str], Any, int]] = []
        self._seen: set[str] = set()
        self.attachments: dict[str, Attachment] = {}
        # the part being read: "root", or (content_id, headers, sink-or-spool, spooled?)
        self._current: Any = None
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        for ev in self._parser.feed(chunk):
            if isinstance(ev, PartData):
                self._data(ev.data)
            elif isinstance(ev, PartHeaders):
                self._begin(ev.headers)
            else:
                self._end()

    def finish(self) -> dict[str, Attachment]:
        self._parser.end()
        if not self._root_seen:
            raise MultipartError("MTOM message without its root part" + (f" <{self.start}>" if self.start else ""))
        return self.attachments

    def close(self) -> None:
        spooled, self._spooled = self._spooled, []
        for _, _, spool, _ in spooled:
            spool.close()
        current = self._current
        if isinstance(current, tuple) and current[3]:
            current[2].close()

    def _begin(self, headers: Mapping[str, str]) -> None:
        cid = _part_content_id(headers)
        self._size = 0
        if not self._root_seen and self._root is None and (self.start is None or cid == self.start):
            self._root, self._root_headers, self._current = bytearray(), headers, "root"
            return
        if not cid:
            raise MultipartError("MTOM attachment part without a Content-ID")
        if cid in self._seen or cid == self.start:
            raise MultipartError(f"duplicate Content-ID {cid!r}")
        self._seen.add(cid)
        if self._opener is None:
            spool = EphemeralSpool(SPOOL_MEMORY_BYTES)  # a document: never in clear on disk (soap.spill)
            self._current = (cid, headers, spool, True)
        else:
            self._current = (cid, headers, self._opener(cid, headers), False)

    def _data(self, data: bytes) -> None:
        self._size += len(data)
        if self._current == "root":
            if self._size > self._max_root_bytes:
                raise MultipartError(f"MTOM root part exceeds {self._max_root_bytes} bytes")
            self._root += data
        else:
            self._current[2].write(data)

    def _end(self) -> None:
        current, self._current = self._current, None
        if current == "root":
            root, self._root, self._root_seen = bytes(self._root), None, True
            _check_root_type(self._root_headers)
            self._opener = self._on_root(root, self._root_headers)
            self._replay()
            return
        cid, headers, target, spooled = current
        if spooled:
            self._spooled.append((cid, headers, target, self._size))
        else:
            self._record(cid, headers, target.close(), self._size)

    def _replay(self) -> None:
        while self._spooled:
            cid, headers, spool, size = self._spooled[0]
            spool.seek(0)
            sink = self._opener(cid, headers)
            while chunk := spool.read(_REPLAY_CHUNK):
                sink.write(chunk)
            self._record(cid, headers, sink.close(), size)
            self._spooled.pop(0)
            spool.close()

    def _record(self, cid: str, headers: Mapping[str, str], data: Any, size: int) -> None:
        ctype = headers.get("content-type", "application/octet-stream")
        self.attachments[cid] = Attachment(cid, ctype, data, size, headers)


def resolve_xop(
    root: etree._Element, attachments: Mapping[str, Attachment]
) -> dict[etree._Element, Attachment]:
    """Replace each xop:Include by a reference: the Include is removed and the mapping
    {containing element → Attachment} returned (XOP 1.0 §3.2); nothing is base64-inlined."""
    found: dict[etree._Element, Attachment] = {}
    for include in list(root.iter(f"{{{NS_XOP}}}Include")):
        href = include.get("href") or ""
        if not href.lower().startswith("cid:"):
            raise MultipartError(f"xop:Include href must be a cid: URL, got {href[:80]!r}")
        attachment = attachments.get(normalize_content_id(href))
        if attachment is None:
            raise MultipartError(f"xop:Include refers to a missing MIME part {href[:120]!r}")
        parent = include.getparent()
        if parent is None:
            raise MultipartError("xop:Include cannot be the document element")
        if parent in found:
            raise MultipartError("more than one xop:Include in one element")
        if (parent.text or "").strip() or len(parent) > 1:
            raise MultipartError("an element with xop:Include must have no other content")
        parent.remove(include)
        found[parent] = attachment
    return found


def xop_include(parent: etree._Element, content_id: str) -> etree._Element:
    """Add `<xop:Include href="cid:…"/>` to `parent` (for building MTOM replies, e.g. ITI-43)."""
    from urllib.parse import quote

    include = etree.SubElement(parent, f"{{{NS_XOP}}}Include", nsmap={"xop": NS_XOP})
    include.set("href", "cid:" + quote(content_id, safe="@.-_~!$&'()*+,;=:"))
    return include


def build_mtom(
    root_xml: bytes,
    attachments: Iterable[Attachment],
    *,
    start_info: str = "application/soap+xml",
    action: str | None = None,
    boundary: str | None = None,
) -> tuple[str, bytes]:
    """An MTOM multipart/related message: (Content-Type header value, body bytes).
    Each attachment's `data` must be bytes here."""
    attachments = list(attachments)
    payloads = [root_xml] + [a.data for a in attachments]
    boundary = boundary or f"MIMEBoundary_{uuid.uuid4().hex}"
    while any(boundary.encode() in p for p in payloads):
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    start_id = f"root.{uuid.uuid4().hex}@carnet"
    info = f"{start_info};action=\\\"{action}\\\"" if action else start_info
    root_type = f'application/xop+xml; charset=UTF-8; type="{info}"'
    delimiter = f"--{boundary}\r\n".encode()
    out = [
        delimiter,
        f"Content-Type: {root_type}\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: <{start_id}>\r\n\r\n".encode(),
        root_xml,
    ]
    for a in attachments:
        out += [
            b"\r\n",
            delimiter,
            f"Content-Type: {a.content_type}\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{a.content_id}>\r\n\r\n".encode(),
            a.data,
        ]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<{start_id}>"; start-info="{start_info}"'
    )
    if action:
        content_type += f'; action="{action}"'
    return content_type, b"".join(out)


# --- streaming writer ---------------------------------------------------------------------------


def _mtom_head(start_info: str, action: str | None, boundary: str) -> tuple[str, str, bytes]:
    start_id = f"root.{uuid.uuid4().hex}@carnet"
    info = f"{start_info};action=\\\"{action}\\\"" if action else start_info
    root_type = f'application/xop+xml; charset=UTF-8; type="{info}"'
    head = (
        f"--{boundary}\r\nContent-Type: {root_type}\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: <{start_id}>\r\n\r\n"
    ).encode()
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<{start_id}>"; start-info="{start_info}"'
    )
    if action:
        content_type += f'; action="{action}"'
    return content_type, start_id, head


def build_mtom_stream(
    root_xml: bytes,
    attachments: Iterable[Any],
    *,
    start_info: str = "application/soap+xml",
    action: str | None = None,
) -> tuple[str, Iterator[bytes]]:
    """An MTOM message produced piece by piece: (Content-Type header value, iterator of body
    pieces). Each attachment has either `data` (bytes) or `chunks` (an iterable of bytes pulled
    while the body is produced, e.g. `soap.operation.StreamingAttachment`). Streamed bytes are
    not searched for the boundary: it holds 128 random bits, which a document cannot guess
    (RFC 2046 §5.1.1 only asks that it not occur). Closing the iterator (or exhausting it)
    calls `close()` on every attachment's `chunks` that has one, consumed or not."""
    attachments = list(attachments)
    fixed = [root_xml] + [a.data for a in attachments if getattr(a, "chunks", None) is None]
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    while any(boundary.encode() in p for p in fixed):
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    content_type, _, head = _mtom_head(start_info, action, boundary)
    return content_type, _MtomStream(head, root_xml, attachments, boundary)


class _MtomStream:
    """The pieces of a streamed MTOM message; `close()` releases every attachment's chunks,
    even when iteration never started (a generator's `finally` would not run then)."""

    def __init__(self, head: bytes, root_xml: bytes, attachments: list[Any], boundary: str):
        self._attachments = attachments
        self._pieces = _mtom_pieces(head, root_xml, attachments, boundary)

    def __iter__(self) -> "_MtomStream":
        return self

    def __next__(self) -> bytes:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()
        close_chunks(self._attachments)


def close_chunks(attachments: Iterable[Any]) -> None:
    """Call `chunks.close()` on every streamed attachment that has one."""
    for a in attachments:
        close = getattr(getattr(a, "chunks", None), "close", None)
        if close is not None:
            close()


def _mtom_pieces(head: bytes, root_xml: bytes, attachments: list[Any], boundary: str) -> Iterator[bytes]:
    try:
        yield head + root_xml
        for a in attachments:
            yield (
                f"\r\n--{boundary}\r\nContent-Type: {a.content_type}\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: <{a.content_id}>\r\n\r\n"
            ).encode()
            chunks = getattr(a, "chunks", None)
            if chunks is None:
                yield a.data
                continue
            for chunk in chunks:
                if chunk:
                    yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()
    finally:
        close_chunks(attachments)
