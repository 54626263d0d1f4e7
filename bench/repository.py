"""Repository benchmarks of issue 3 ("Speed and memory"), each next to a floor measured in the same run.

(a) ITI-41 Provide and Register of one 30 KB CDA (MTOM), N concurrent keep-alive clients, fresh
    uniqueIds per request, on the embedded defaults (SQLite registry, filesystem blobs, generated
    master key). Floor: a bare Twisted MTOM echo (`soap.mtom` parses the multipart, the root is
    parsed with lxml, a canned RegistryResponse answers) in its own process.
(b) ITI-43 Retrieve of a 1 MB and of a 20 MB document, 1 and N clients; the SHA-1 and size of
    every response's document are checked. Floors: the echo serving a canned MTOM answer of the
    same size, and AES-256-GCM decryption (64 KiB segments) + SHA-1 of the same bytes in-process.
(c) ITI-41 of a 200 MB document generated on the fly by the client (chunked upload, never whole in
    the client), the peak RSS growth of the server process sampled from /proc/<pid>/status; then
    the document is retrieved (streamed, hashed) and its registry entry's size/hash checked.

Sizes are decimal (1 MB = 10^6 bytes) and so are MB/s. `python -m bench --only repository` runs
this part alone; `python -m bench.repository floor --port 0` is the floor process.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from lxml import etree

from bench import messages as M
from bench.cpu import CpuMeter
from bench.load import LoadResult, check_registry_response, run_load
from bench.procs import ROOT, Process, carnet_command, listening_port, start_carnet_server, wait_ready
from bench.table import Row, print_report
from registry import constants as C
from soap.mtom import Attachment, build_mtom, build_mtom_stream, parse_mtom, xop_include

REPOSITORY_PATH = "/xds/repository"
SHARED_CDA = ROOT.parent / "shared" / "samples" / "cda" / "ans__CSE-CS8_2025.01.xml"

NS_XDSB = C.NS_XDSB
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NS_HL7 = "urn:hl7-org:v3"
X = f"{{{NS_XDSB}}}"
# ITI TF-2b §3.41.5 / §3.43.5 (WSDL actions)
ACTION_ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
ACTION_ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_ITI43_RESPONSE = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"

CDA_SIZE = 30_000
MB = 1_000_000
RETRIEVE_SIZES = (1 * MB, 20 * MB)
BIG_SIZE = 200 * MB
RSS_LIMIT_MB = 64
SEGMENT = 64 * 1024
# DocumentUniqueIds of the retrieve documents: <arc>.<size>.<k>, so the floor knows the size.
RETRIEVE_UID_ARC = "1.3.6.1.4.1.21367.13.20.3004"
BOUNDARY = "MIMEBoundary_carnetbench0a1b2c3d4e5f60718293a4b5c6d7"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


# --- documents -----------------------------------------------------------------------------------


def document_bytes(size: int) -> bytes:
    """`size` pseudo-random bytes, the same in every process (the floor serves them too)."""
    return random.Random(f"carnet-bench-{size}").randbytes(size)


def big_document_chunks(size: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """A `size`-byte document produced chunk by chunk (never whole in memory)."""
    rng = random.Random("carnet-bench-big")
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield rng.randbytes(n)
        sent += n


def cda_30k() -> tuple[bytes, str]:
    """A ~30 KB CDA: the ANS CSE-CS8 sample with its largest body sections removed, padded with a
    comment to exactly CDA_SIZE bytes; a generated CDA when ../shared is absent."""
    if SHARED_CDA.exists():
        tree = etree.parse(str(SHARED_CDA), _PARSER)
        root = tree.getroot()
        body = root.find(f".//{{{NS_HL7}}}structuredBody")
        components = sorted(body.findall(f"{{{NS_HL7}}}component"), key=lambda c: -len(etree.tostring(c)))
        for comp in components:
            if len(etree.tostring(tree, xml_declaration=True, encoding="UTF-8")) <= CDA_SIZE - 8:
                break
            body.remove(comp)
        origin = f"{SHARED_CDA.name} trimmed"
    else:
        root = etree.Element(f"{{{NS_HL7}}}ClinicalDocument", nsmap={None: NS_HL7})
        etree.SubElement(root, f"{{{NS_HL7}}}title").text = "Compte rendu (bench)"
        sb = etree.SubElement(etree.SubElement(etree.SubElement(root, f"{{{NS_HL7}}}component"),
                                               f"{{{NS_HL7}}}structuredBody"), f"{{{NS_HL7}}}component")
        section = etree.SubElement(sb, f"{{{NS_HL7}}}section")
        rng = random.Random(30)
        while len(etree.tostring(root)) < CDA_SIZE - 2000:
            etree.SubElement(section, f"{{{NS_HL7}}}text").text = " ".join(
                rng.choice(("patient", "examen", "normal", "tension", "suivi", "dossier")) for _ in range(40))
        tree = etree.ElementTree(root)
        origin = "generated (../shared absent)"
    data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    pad = CDA_SIZE - len(data) - len(b"\n<!--  -->")
    if pad >= 0:
        data += b"\n<!-- " + b"x" * pad + b" -->"
    return data, origin


# --- messages ------------------------------------------------------------------------------------


def _strip_slots(entry: etree._Element, names: tuple[str, ...]) -> None:
    for slot in list(entry.iterfind(f"{{{C.NS_RIM}}}Slot")):
        if slot.get("name") in names:
            entry.remove(slot)


def pnr_root(patient_id: str, to: str, doc_uid: str, ss_uid: str, message_id: str, mime: str,
             content_id: str) -> bytes:
    """The SOAP envelope of an ITI-41 request (ITI TF-2b §3.41.4.1.2) with one document as an
    xop:Include; hash, size and repositoryUniqueId are left to the repository (ITI TF-3 Table 4.2.3.2-1)."""
    req = etree.Element(X + "ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": NS_XDSB})
    sor = M.submit_objects_request(patient_id, doc_uid, ss_uid, M.dtm_now())
    entry = sor.find(f".//{{{C.NS_RIM}}}ExtrinsicObject")
    entry.set("mimeType", mime)
    _strip_slots(entry, ("hash", "size", "repositoryUniqueId"))
    req.append(sor)
    doc = etree.SubElement(req, X + "Document", id="Document01")
    xop_include(doc, content_id)
    return M.soap_envelope(ACTION_ITI41, to, req, message_id)


class PnrFactory:
    """Fresh MTOM ITI-41 requests at template speed: built once with lxml around sentinels, then
    only the identifiers and the patient change (one boundary and root Content-ID, so every
    request has the same Content-Type)."""

    CID = "Document01@bench.carnet"
    _KEYS = ("@@PATIENT@@", "@@DOCUID@@", "@@SSUID@@", "@@MSGID@@")

    def __init__(self, to: str, content: bytes, mime: str = "text/xml") -> None:
        root = pnr_root("@@PATIENT@@", to, "@@DOCUID@@", "@@SSUID@@", "@@MSGID@@", mime, self.CID)
        self.content_type, wire = build_mtom(
            root, [Attachment(self.CID, mime, content)], action=ACTION_ITI41, boundary=BOUNDARY
        )
        head_len = wire.index(content)  # the sentinels are all in the root part, before the document
        self.template = M.Template(wire[:head_len], list(self._KEYS))
        self.rest = wire[head_len:]

    def __call__(self, patient_id: str, doc_uid: str | None = None) -> bytes:
        head = self.template.render({
            "@@PATIENT@@": M.xml_safe(patient_id), "@@DOCUID@@": (doc_uid or M.new_oid()).encode(),
            "@@SSUID@@": M.new_oid().encode(), "@@MSGID@@": M.new_urn_uuid().encode(),
        })
        return head + self.rest


def retrieve_request(to: str, repository_unique_id: str, doc_uids: list[str]) -> bytes:
    """ITI-43 RetrieveDocumentSetRequest (ITI TF-2b §3.43.4.1.2)."""
    req = etree.Element(X + "RetrieveDocumentSetRequest", nsmap={"xdsb": NS_XDSB})
    for uid in doc_uids:
        dr = etree.SubElement(req, X + "DocumentRequest")
        etree.SubElement(dr, X + "RepositoryUniqueId").text = repository_unique_id
        etree.SubElement(dr, X + "DocumentUniqueId").text = uid
    return M.soap_envelope(ACTION_ITI43, to, req, M.new_urn_uuid())


def retrieve_uid(size: int, k: int) -> str:
    return f"{RETRIEVE_UID_ARC}.{size}.{k}"


# --- response checks -----------------------------------------------------------------------------


class _HashSink:
    def __init__(self) -> None:
        self.sha1 = hashlib.sha1()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha1.update(data)
        self.size += len(data)

    def close(self) -> tuple[str, int]:
        return self.sha1.hexdigest(), self.size


def _boundary_of(body: bytes) -> str:
    first = body[: body.index(b"\n")].rstrip(b"\r")
    if not first.startswith(b"--"):
        raise ValueError("not a multipart body")
    return first[2:].decode("latin-1")


def split_multipart(body: bytes) -> tuple[bytes, dict[str, tuple[str, int]]]:
    """(root part, {cid: (SHA-1, size)}) of a multipart/related body whose parts are delimited by
    CRLF as RFC 2046 §5.1.1 requires: the delimiters are found with bytes.find and the parts hashed
    through memoryviews, so that verifying a 20 MB answer costs the client little more than its
    SHA-1 (soap.mtom's incremental parser, written for servers that must not buffer, is slower)."""
    from soap.mtom import normalize_content_id

    first_end = body.index(b"\r\n")
    if not body.startswith(b"--"):
        raise ValueError("not a multipart body")
    delimiter = b"\r\n" + body[:first_end]
    view = memoryview(body)
    root: bytes | None = None
    parts: dict[str, tuple[str, int]] = {}
    pos = first_end + 2
    while True:
        head_end = body.index(b"\r\n\r\n", pos)
        headers = {}
        for line in body[pos:head_end].decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = head_end + 4
        end = body.index(delimiter, start)
        if root is None:
            root = bytes(view[start:end])
        else:
            parts[normalize_content_id(headers.get("content-id", ""))] = (hashlib.sha1(view[start:end]).hexdigest(),
                                                                         end - start)
        after = end + len(delimiter)
        if body[after: after + 2] == b"--":
            return root, parts
        pos = body.index(b"\r\n", after) + 2


def split_mtom(body: bytes, content_type: str | None = None):
    """(root element, {cid: (sha1, size)}) of an MTOM body (the boundary read from its first line)."""
    ct = content_type or f'multipart/related; boundary="{_boundary_of(body)}"; type="application/xop+xml"'
    msg = parse_mtom(ct, [body], sink_factory=lambda headers: _HashSink())
    return etree.fromstring(msg.root, _PARSER), {cid: a.data for cid, a in msg.attachments.items()}


def check_pnr_response(status: int, body: bytes) -> str | None:
    """ITI-41: HTTP 200 and a RegistryResponse Success, in an MTOM answer or a plain SOAP one."""
    if body.startswith(b"--"):
        try:
            env, _ = split_mtom(body)
        except Exception as exc:  # noqa: BLE001 - any parse problem is a failed response
            return f"unparsable MTOM response: {exc}"
        body = etree.tostring(env)
    return check_registry_response(status, body)


def check_retrieve(expected: dict[str, tuple[str, int]]) -> Callable[[int, bytes], str | None]:
    """ITI-43: HTTP 200, RetrieveDocumentSetResponse Success, and each document's SHA-1 and size
    as expected ({documentUniqueId: (sha1, size)})."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        try:
            root, parts = split_multipart(body)
            env = etree.fromstring(root, _PARSER)
        except Exception as exc:  # noqa: BLE001
            return f"unparsable MTOM response: {exc}"
        rsp = env.find(f"{{{M.NS_SOAP12}}}Body/{X}RetrieveDocumentSetResponse")
        if rsp is None:
            return "no RetrieveDocumentSetResponse"
        rr = rsp.find(f"{{{C.NS_RS}}}RegistryResponse")
        if rr is None or rr.get("status") != C.RESPONSE_SUCCESS:
            return f"status {None if rr is None else rr.get('status')}"
        docs = rsp.findall(f"{X}DocumentResponse")
        if not docs:
            return "no DocumentResponse"
        for dr in docs:
            uid = dr.findtext(f"{X}DocumentUniqueId")
            include = dr.find(f"{X}Document/{{{NS_XOP}}}Include")
            if include is None:
                return f"{uid}: no xop:Include"
            got = parts.get(include.get("href")[4:])
            if got is None or got != expected.get(uid):
                return f"{uid}: got (sha1, size) {got}, expected {expected.get(uid)}"
        return None

    return check


# --- the floor: a bare Twisted MTOM echo ---------------------------------------------------------


def run_floor(port: int) -> int:
    """A leaf resource on the reactor thread: ITI-41 MTOM requests are parsed with `soap.mtom`
    (attachments counted, not kept) and their root with lxml, and answered with a canned MTOM
    RegistryResponse; ITI-43 requests are answered with a canned MTOM RetrieveDocumentSetResponse
    carrying `document_bytes(size)` (the size read from the requested uniqueId)."""
    from twisted.internet import reactor
    from twisted.web import resource, server

    relates = "urn:uuid:00000000-0000-4000-8000-000000000000"
    pnr_answer = M.Template(
        M._response_envelope(
            ACTION_ITI41_RESPONSE, relates,
            etree.Element(f"{{{C.NS_RS}}}RegistryResponse", status=C.RESPONSE_SUCCESS, nsmap={"rs": C.NS_RS}),
        ),
        [relates],
    )
    docs: dict[int, bytes] = {}

    def retrieve_answer(message_id: str, uids: list[str], repo: str):
        rsp = etree.Element(X + "RetrieveDocumentSetResponse", nsmap={"xdsb": NS_XDSB, "rs": C.NS_RS})
        etree.SubElement(rsp, f"{{{C.NS_RS}}}RegistryResponse", status=C.RESPONSE_SUCCESS)
        atts = []
        for n, uid in enumerate(uids):
            size = int(uid.split(".")[-2])
            data = docs.get(size)
            if data is None:
                data = docs[size] = document_bytes(size)
            dr = etree.SubElement(rsp, X + "DocumentResponse")
            etree.SubElement(dr, X + "RepositoryUniqueId").text = repo
            etree.SubElement(dr, X + "DocumentUniqueId").text = uid
            etree.SubElement(dr, X + "mimeType").text = "application/octet-stream"
            cid = f"doc{n}@floor"
            xop_include(etree.SubElement(dr, X + "Document"), cid)
            atts.append(Attachment(cid, "application/octet-stream", data))
        env = M._response_envelope(ACTION_ITI43_RESPONSE, message_id, rsp)
        return build_mtom_stream(env, atts, action=ACTION_ITI43_RESPONSE)

    class Echo(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", b"text/xml")
            return b"<definitions/>"

        def render_POST(self, request):
            ctype = request.getHeader(b"content-type").decode("latin-1")
            content = request.content
            content.seek(0)
            if ctype.startswith("multipart/related"):
                chunks = iter(lambda: content.read(64 * 1024), b"")
                msg = parse_mtom(ctype, chunks, sink_factory=lambda headers: _HashSink())
                env = etree.fromstring(msg.root, _PARSER)
            else:
                env = etree.fromstring(content.read(), _PARSER)
            header = env.find(f"{{{M.NS_SOAP12}}}Header")
            action = header.findtext(f"{{{M.NS_WSA}}}Action").strip()
            message_id = header.findtext(f"{{{M.NS_WSA}}}MessageID").strip()
            if action == ACTION_ITI43:
                body = env.find(f"{{{M.NS_SOAP12}}}Body")[0]
                uids = [e.text for e in body.iter(f"{X}DocumentUniqueId")]
                repo = body.findtext(f"{X}DocumentRequest/{X}RepositoryUniqueId")
                out_type, pieces = retrieve_answer(message_id, uids, repo)
                pieces = list(pieces)
            else:
                out_type, wire = build_mtom(
                    pnr_answer.render({relates: M.xml_safe(message_id)}), [], action=ACTION_ITI41_RESPONSE
                )
                pieces = [wire]
            request.setHeader(b"content-type", out_type.encode())
            request.setHeader(b"content-length", str(sum(map(len, pieces))).encode())
            for piece in pieces:
                request.write(piece)
            request.finish()
            return server.NOT_DONE_YET

    site = server.Site(Echo())
    site.noisy = False
    listening = reactor.listenTCP(port, site, interface="127.0.0.1")
    print(f"LISTENING {listening.getHost().port}", flush=True)
    reactor.run()
    return 0


# --- processes -----------------------------------------------------------------------------------


def start_floor(workdir: Path) -> tuple[Process, str]:
    srv = Process("repository floor", [sys.executable, "-m", "bench.repository", "floor", "--port", "0"],
                  workdir / "repository-floor.log", stdout_pipe=True)
    url = f"http://127.0.0.1:{listening_port(srv, 'floor')}{REPOSITORY_PATH}"
    wait_ready(url, srv)
    return srv, url


def start_carnet(workdir: Path, env: dict) -> tuple[Process, str]:
    """`carnet serve` on the embedded defaults: SQLite registry, filesystem blobs and a master key
    generated in the data dir."""
    return start_carnet_server(["--data-dir", str(workdir / "carnet")], REPOSITORY_PATH,
                               workdir / "carnet-repository.log", env=env)


# --- memory --------------------------------------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class RssSampler:
    """VmRSS of a process sampled every `interval` s in a thread, plus VmHWM before/after: the peak
    is the highest sample, or VmHWM after when it rose during the measurement (a peak between two
    samples)."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self.baseline = statistics.median(self._rss() for _ in range(5))
        self.hwm_before = proc_status_kb(self.pid, "VmHWM")
        self._thread.start()
        return self

    def _rss(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._rss())
            except (OSError, RuntimeError):
                return
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm_after = proc_status_kb(self.pid, "VmHWM")

    @property
    def peak_growth_mb(self) -> float:
        peak = max(self.samples or [self.baseline])
        if self.hwm_after > self.hwm_before:
            peak = max(peak, self.hwm_after)
        return (peak - self.baseline) * 1024 / MB


# --- the benchmarks ------------------------------------------------------------------------------


def _post(url: str, body, content_type: str, timeout: float = 600):
    """POST on a new connection: (status, Content-Type, response, connection); the caller closes."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    conn.request("POST", parts.path, body, {"Content-Type": content_type})
    resp = conn.getresponse()
    return resp.status, resp.getheader("content-type", ""), resp, conn


def provide(url: str, factory: PnrFactory, patient_id: str, doc_uid: str) -> None:
    status, ctype, resp, conn = _post(url, factory(patient_id, doc_uid), factory.content_type)
    try:
        why = check_pnr_response(status, resp.read())
    finally:
        conn.close()
    if why:
        raise RuntimeError(f"ITI-41 of {doc_uid} failed: {why}")


def provide_big(url: str, patient: str, size: int, doc_uid: str) -> tuple[str, float]:
    """Upload a `size`-byte document generated on the fly (chunked transfer coding); returns the
    SHA-1 the client computed while sending, and the seconds the request took."""
    cid = "Big01@bench.carnet"
    root = pnr_root(patient, url, doc_uid, M.new_oid(), M.new_urn_uuid(), "application/octet-stream", cid)
    sha1 = hashlib.sha1()

    class Chunks:
        def __iter__(self):
            for chunk in big_document_chunks(size):
                sha1.update(chunk)
                yield chunk

    content_type, pieces = build_mtom_stream(
        root, [_Streamed(cid, Chunks())], action=ACTION_ITI41)
    t0 = time.perf_counter()
    status, _, resp, conn = _post(url, pieces, content_type)
    try:
        why = check_pnr_response(status, resp.read())
    finally:
        conn.close()
    dt = time.perf_counter() - t0
    if why:
        raise RuntimeError(f"ITI-41 of the {size // MB} MB document failed: {why}")
    return sha1.hexdigest(), dt


@dataclass
class _Streamed:
    content_id: str
    chunks: object
    content_type: str = "application/octet-stream"
    data: bytes | None = None


def retrieve_streaming(url: str, repository_unique_id: str, doc_uid: str) -> tuple[str, int, float]:
    """ITI-43 of one document read and parsed chunk by chunk (never whole in the client):
    (SHA-1, size, seconds)."""
    from soap.mtom import MultipartParser, PartData, PartEnd, PartHeaders
    from soap.envelope import parse_content_type

    t0 = time.perf_counter()
    status, ctype, resp, conn = _post(url, retrieve_request(url, repository_unique_id, [doc_uid]),
                                      M.SOAP12_CONTENT_TYPE)
    try:
        if status != 200:
            raise RuntimeError(f"ITI-43 of {doc_uid}: HTTP {status}: {resp.read()[:2000]!r}")
        _, params = parse_content_type(ctype)
        parser = MultipartParser(params["boundary"].encode("latin-1"))
        part, root, sink = 0, bytearray(), _HashSink()
        while chunk := resp.read(256 * 1024):
            for ev in parser.feed(chunk):
                if isinstance(ev, PartHeaders):
                    part += 1
                elif isinstance(ev, PartData):
                    (root.extend if part == 1 else sink.write)(ev.data)
                elif isinstance(ev, PartEnd) and part > 2:
                    raise RuntimeError("more than one document in the response")
        parser.end()
    finally:
        conn.close()
    env = etree.fromstring(bytes(root), _PARSER)
    rr = env.find(f".//{{{C.NS_RS}}}RegistryResponse")
    if rr is None or rr.get("status") != C.RESPONSE_SUCCESS:
        raise RuntimeError(f"ITI-43 of {doc_uid}: {bytes(root)[:2000]!r}")
    sha1, size = sink.close()
    return sha1, size, time.perf_counter() - t0


def crypto_floor(size: int, seconds: float) -> float:
    """MB/s of AES-256-GCM decryption over 64 KiB segments + SHA-1 of the plaintext, in-process,
    one thread (what a retrieve must at least do to the bytes)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = document_bytes(size)
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    segments = [aead.encrypt(n.to_bytes(12, "big"), data[i: i + SEGMENT], b"bench")
                for n, i in enumerate(range(0, size, SEGMENT))]
    expected = hashlib.sha1(data).hexdigest()
    del data
    done, t0 = 0, time.perf_counter()
    while True:
        sha1 = hashlib.sha1()
        for n, seg in enumerate(segments):
            sha1.update(aead.decrypt(n.to_bytes(12, "big"), seg, b"bench"))
        if sha1.hexdigest() != expected:
            raise RuntimeError("crypto floor: SHA-1 mismatch")
        done += 1
        if time.perf_counter() - t0 >= seconds:
            break
    return done * size / (time.perf_counter() - t0) / MB


def registry_row(data_dir: Path, doc_uid: str) -> tuple[str | None, int | None]:
    """(hash, size) of the registry entry of `doc_uid`, read from the embedded SQLite registry."""
    db = data_dir / "registry.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT hash, size FROM document_entry WHERE unique_id = ?", (doc_uid,)).fetchone()
    return (row[0], row[1]) if row else (None, None)


@dataclass
class Options:
    quick: bool = False
    clients: int = 8  # ITI-41 clients
    retrieve_clients: int = 4
    duration: float | None = None
    big_mb: int = 200
    skip_big: bool = False


def run(opts: Options, log: Callable[[str], None] = print) -> tuple[list[Row], list[str]]:
    """Run the repository benchmarks; returns the table rows and the failures (never raises)."""
    duration = opts.duration or (3.0 if opts.quick else 10.0)
    rduration = duration
    big_size = opts.big_mb * MB
    workdir = Path(tempfile.mkdtemp(prefix="carnet-bench-repo-"))
    servers: list[Process] = []
    failures: list[str] = []
    fig: dict[str, float | None] = {}
    repo_uid = M.BENCH_REPOSITORY
    env = {"CARNET_REPOSITORY_UNIQUE_ID": repo_uid}
    patients = [M.bench_patient(8_000_000 + k) for k in range(max(opts.clients, 2))]
    cda, origin = cda_30k()
    log(f"repository: ITI-41 {len(cda)} B CDA ({origin}), {opts.clients} clients × {duration:.0f} s; "
        f"ITI-43 1 MB and 20 MB, 1 and {opts.retrieve_clients} clients × {rduration:.0f} s; "
        f"ITI-41 {opts.big_mb} MB streamed")

    def load(name: str, who: str, result: LoadResult) -> LoadResult:
        log(f"  {who}: {result.summary()}")
        if result.failures:
            failures.append(f"{name} {who}: {result.failures} failed requests; first:\n{result.first_failure}")
        return result

    def throughput(r: LoadResult, scale: float = 1.0) -> float | None:
        return None if r.requests == 0 or r.failures else r.throughput * scale

    try:
        floor, floor_url = start_floor(workdir)
        servers.append(floor)
        data_dir = workdir / "carnet"
        out = carnet_command(["patients", "add", *patients, "--data-dir", str(data_dir)], env)
        log(f"patients: {out.splitlines()[-1] if out else 'added'}")
        srv, url = start_carnet(workdir, env)
        servers.append(srv)
        log(f"Carnet (SQLite + filesystem blobs, {data_dir}) at {url}")

        # warm-up: a few small provides and retrieves, so that the RSS baseline is a served state
        small = PnrFactory(url, cda)
        for _ in range(5):
            provide(url, small, patients[0], M.new_oid())
        warm_uid = M.new_oid()
        provide(url, small, patients[0], warm_uid)
        retrieve_streaming(url, repo_uid, warm_uid)

        # (c) 200 MB upload, peak RSS growth: first, on a server that has only been warmed up
        if not opts.skip_big:
            for who, target_url, pid in (("floor", floor_url, floor.pid), ("carnet", url, srv.pid)):
                uid = M.new_oid()
                log(f"ITI-41 {opts.big_mb} MB streamed upload, {who} …")
                with RssSampler(pid) as rss:
                    sha1, dt = provide_big(target_url, patients[1], big_size, uid)
                fig[f"big41-rss-{who}"] = rss.peak_growth_mb
                fig[f"big41-mbs-{who}"] = big_size / dt / MB
                log(f"  {who}: {dt:.1f} s ({big_size / dt / MB:.0f} MB/s), RSS {rss.baseline / 1024:.0f} MiB "
                    f"before, peak growth {rss.peak_growth_mb:.1f} MB ({len(rss.samples)} samples)")
                if who == "carnet":
                    h, s = registry_row(data_dir, uid)
                    if (h, s) != (sha1, big_size):
                        failures.append(f"{opts.big_mb} MB: registry entry has hash {h}, size {s}; "
                                        f"expected {sha1}, {big_size}")
                    else:
                        log(f"  registry entry: size {s}, hash {h} (as sent)")
                    with RssSampler(pid) as rss:
                        got_sha1, got_size, dt = retrieve_streaming(url, repo_uid, uid)
                    if (got_sha1, got_size) != (sha1, big_size):
                        failures.append(f"{opts.big_mb} MB: retrieved {got_size} B SHA-1 {got_sha1}; "
                                        f"expected {big_size} B SHA-1 {sha1}")
                    else:
                        fig["big43-mbs"] = big_size / dt / MB
                        fig["big43-rss"] = rss.peak_growth_mb
                        log(f"  retrieved back in {dt:.1f} s ({big_size / dt / MB:.0f} MB/s), SHA-1 and size "
                            f"match; RSS peak growth {rss.peak_growth_mb:.1f} MB")

        # (a) ITI-41 30 KB CDA, concurrent clients
        for who, target_url, pid in (("floor", floor_url, floor.pid), ("carnet", url, srv.pid)):
            log(f"ITI-41 30 KB CDA, {who} …")
            factory = PnrFactory(target_url, cda)
            r = load("ITI-41", who, run_load(
                target_url, lambda i, f=factory: f(patients[i % len(patients)]), check=check_pnr_response,
                clients=opts.clients, duration=duration, warmup=10, content_type=factory.content_type,
                meter=CpuMeter(pid)))
            log(f"  {' ' * len(who)}  {r.cpu.summary()}")
            fig[f"pnr-{who}"] = throughput(r)
            fig[f"pnr-p50-{who}"] = None if fig[f"pnr-{who}"] is None else r.p50
            fig[f"pnr-p99-{who}"] = None if fig[f"pnr-{who}"] is None else r.p99

        # (b) ITI-43 1 MB / 20 MB: documents provided once, then retrieved in turn
        copies = 4
        expected: dict[str, tuple[str, int]] = {}
        for size in RETRIEVE_SIZES:
            data = document_bytes(size)
            provider = PnrFactory(url, data, mime="application/octet-stream")
            for k in range(copies):
                uid = retrieve_uid(size, k)
                provide(url, provider, patients[0], uid)
                expected[uid] = (hashlib.sha1(data).hexdigest(), size)
            del data, provider
        for size in RETRIEVE_SIZES:
            label = f"{size // MB} MB"
            cf = crypto_floor(size, min(rduration, 3.0))
            fig[f"crypto-{size}"] = cf
            log(f"ITI-43 {label}: crypto floor (AES-GCM 64 KiB segments + SHA-1, 1 thread): {cf:.0f} MB/s")
            for clients in sorted({1, opts.retrieve_clients}):
                for who, target_url in (("floor", floor_url), ("carnet", url)):
                    log(f"ITI-43 {label}, {clients} client(s), {who} …")
                    counter = iter(range(10**9))
                    lock = threading.Lock()

                    def body(i: int, target_url=target_url, size=size) -> bytes:
                        with lock:
                            k = next(counter) % copies
                        return retrieve_request(target_url, repo_uid, [retrieve_uid(size, k)])

                    r = load(f"ITI-43 {label}", who, run_load(
                        target_url, body, check=check_retrieve(expected), clients=clients,
                        duration=rduration, warmup=2))
                    fig[f"ret-{size}-{clients}-{who}"] = throughput(r, size / MB)
        if not srv.alive():
            failures.append(f"Carnet exited during the run:\n{srv.log_tail()}")
    except Exception as exc:  # noqa: BLE001 - report, then the table with what was measured
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for s in reversed(servers):
            s.stop()

    g = fig.get
    rows = [
        Row(f"ITI-41 provide 30 KB CDA, {opts.clients} clients (SQLite+fs)", "/s", g("pnr-carnet"),
            g("pnr-floor"), "≥ 300/s", lambda v: v >= 300, True),
        Row(f"ITI-41 latency ({opts.clients} clients): p50", "ms", g("pnr-p50-carnet"), g("pnr-p50-floor"),
            "-", lambda v: True, False),
        Row(f"ITI-41 latency ({opts.clients} clients): p99", "ms", g("pnr-p99-carnet"), g("pnr-p99-floor"),
            "-", lambda v: True, False),
    ]
    for size in RETRIEVE_SIZES:
        label = f"{size // MB} MB"
        for clients in sorted({1, opts.retrieve_clients}):
            c = g(f"ret-{size}-{clients}-carnet")
            rows.append(Row(f"ITI-43 retrieve {label}, {clients} client(s)", "MB/s", c,
                            g(f"ret-{size}-{clients}-floor"), "≥ 300 MB/s", lambda v: v >= 300, True))
        rows.append(Row(f"  vs AES-GCM+SHA-1 in-process (1 thread), {label}", "MB/s",
                        g(f"ret-{size}-{opts.retrieve_clients}-carnet"), g(f"crypto-{size}"),
                        "-", lambda v: True, True))
    if not opts.skip_big:
        rows += [
            Row(f"ITI-41 {opts.big_mb} MB streamed: peak RSS growth", "MB", g("big41-rss-carnet"),
                g("big41-rss-floor"), f"≤ {RSS_LIMIT_MB} MB", lambda v: v <= RSS_LIMIT_MB, False),
            Row(f"ITI-41 {opts.big_mb} MB streamed: upload", "MB/s", g("big41-mbs-carnet"),
                g("big41-mbs-floor"), "-", lambda v: True, True),
            Row(f"ITI-43 {opts.big_mb} MB streamed back: throughput", "MB/s", g("big43-mbs"), None,
                "-", lambda v: True, True),
            Row(f"ITI-43 {opts.big_mb} MB streamed back: peak RSS growth", "MB", g("big43-rss"), None,
                "-", lambda v: True, False),
        ]
    if failures:
        log(f"repository bench logs kept in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.repository", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")
    fl = sub.add_parser("floor", help="run the bare Twisted MTOM echo (the floor process)")
    fl.add_argument("--port", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--retrieve-clients", type=int, default=4)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--big-mb", type=int, default=200)
    args = ap.parse_args(argv)
    if args.command == "floor":
        return run_floor(args.port)
    rows, failures = run(Options(args.quick, args.clients, args.retrieve_clients, args.duration, args.big_mb))
    print_report(rows, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
