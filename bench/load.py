"""Load generator: N concurrent keep-alive HTTP/1.1 clients on loopback, bounded in count and time.

Each client is a thread with its own `http.client` connection (the server under test is another
process, so the GIL here is only the clients'). Every response is checked — HTTP 200 and a
SOAP body whose registry response says Success — and failures are counted and the first one
kept verbatim: a benchmark that measures errors is worthless.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from lxml import etree

from bench import messages as M
from registry import constants as C

Check = Callable[[int, bytes], "str | None"]  # (HTTP status, body) → None if fine, else why
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


@dataclass
class LoadResult:
    requests: int
    failures: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)  # seconds, successful requests
    first_failure: str | None = None
    cpu: Any = None  # bench.cpu.CpuSplit of the measured requests, when a meter was given

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        k = min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))
        return xs[k] * 1000

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def summary(self) -> str:
        return (
            f"{self.requests} ok, {self.failures} failed in {self.seconds:.1f} s: {self.throughput:.0f}/s,"
            f" p50 {self.p50:.2f} ms, p90 {self.p90:.2f} ms, p99 {self.p99:.2f} ms"
        )


def _soap_body_child(body: bytes) -> etree._Element:
    env = etree.fromstring(body, _PARSER)
    soap_body = env.find(f"{{{M.NS_SOAP12}}}Body")
    if soap_body is None or len(soap_body) == 0:
        raise ValueError("no SOAP 1.2 Body content")
    return soap_body[0]


def check_registry_response(status: int, body: bytes) -> str | None:
    """ITI-42: HTTP 200, rs:RegistryResponse status Success (ITI TF-2b §3.42.4.2)."""
    if status != 200:
        return f"HTTP {status}"
    try:
        el = _soap_body_child(body)
    except Exception as exc:  # noqa: BLE001 - any parse problem is a failed response
        return f"unparsable response: {exc}"
    if el.tag != f"{{{C.NS_RS}}}RegistryResponse":
        return f"unexpected {el.tag}"
    if el.get("status") != C.RESPONSE_SUCCESS:
        return f"status {el.get('status')}"
    return None


def check_query_response(expected_objects: int | None = None) -> Check:
    """ITI-18: HTTP 200, AdhocQueryResponse Success, and (if given) that many ExtrinsicObjects."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        try:
            el = _soap_body_child(body)
        except Exception as exc:  # noqa: BLE001
            return f"unparsable response: {exc}"
        if el.tag != f"{{{C.NS_QUERY}}}AdhocQueryResponse" or el.get("status") != C.RESPONSE_SUCCESS:
            return f"{el.tag} status {el.get('status')}"
        if expected_objects is not None:
            n = len(el.findall(f"{{{C.NS_RIM}}}RegistryObjectList/{{{C.NS_RIM}}}ExtrinsicObject"))
            if n != expected_objects:
                return f"{n} ExtrinsicObjects, expected {expected_objects}"
        return None

    return check


class _Client(threading.Thread):
    def __init__(self, run: "_Run", index: int) -> None:
        super().__init__(name=f"bench-client-{index}", daemon=True)
        self.run_ = run
        self.index = index
        self.latencies: list[float] = []
        self.failures = 0
        self.first_failure: str | None = None
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.run_.host, self.run_.port, timeout=60)
        return self.conn

    def _one(self, record: bool) -> None:
        r = self.run_
        body = r.body(self.index)
        try:
            conn = self._connection()
            t0 = time.perf_counter()
            conn.request("POST", r.path, body, r.headers)
            resp = conn.getresponse()
            data = resp.read()
            dt = time.perf_counter() - t0
            why = r.check(resp.status, data)
            if why is not None:
                why = f"{why}\n--- HTTP {resp.status} response ---\n{data[:4000].decode('utf-8', 'replace')}"
        except (OSError, http.client.HTTPException) as exc:
            why, dt = f"{type(exc).__name__}: {exc}", 0.0
            if self.conn is not None:
                self.conn.close()
            self.conn = None
        if not record:
            return
        if why is None:
            self.latencies.append(dt)
        else:
            self.failures += 1
            self.first_failure = self.first_failure or why

    def run(self) -> None:
        r = self.run_
        try:
            for _ in range(r.warmup):
                self._one(record=False)
            r.barrier.wait()
            while not r.stop.is_set():
                if r.take_ticket() is None:
                    break
                self._one(record=True)
                if time.perf_counter() >= r.deadline:
                    break
        finally:
            if self.conn is not None:
                self.conn.close()


class _Run:
    def __init__(self, url, body, check, clients, duration, max_requests, warmup, content_type):
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the load generator only targets loopback, not {parts.hostname}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.body, self.check, self.warmup = body, check, warmup
        self.duration, self.max_requests = duration, max_requests
        self.headers = {"Content-Type": content_type, "Connection": "keep-alive"}
        self.barrier = threading.Barrier(clients + 1)
        self.stop = threading.Event()
        self.deadline = float("inf")
        self._lock = threading.Lock()
        self._issued = 0

    def take_ticket(self) -> int | None:
        with self._lock:
            if self.max_requests is not None and self._issued >= self.max_requests:
                return None
            self._issued += 1
            return self._issued


def run_load(
    url: str,
    body: Callable[[int], bytes],
    *,
    check: Check = check_registry_response,
    clients: int = 8,
    duration: float = 10.0,
    max_requests: int | None = None,
    warmup: int = 20,
    content_type: str = M.SOAP12_CONTENT_TYPE,
    meter: Any = None,
) -> LoadResult:
    """POST `body(client_index)` from `clients` keep-alive connections until `duration` seconds
    or `max_requests` requests (whichever first), after `warmup` unrecorded requests per client.
    `meter` (a `bench.cpu.CpuMeter`): the processes' CPU over the recorded requests only."""
    run = _Run(url, body, check, clients, duration, max_requests, warmup, content_type)
    threads = [_Client(run, i) for i in range(clients)]
    for t in threads:
        t.start()
    run.barrier.wait(timeout=max(60.0, warmup * 5.0))
    if meter is not None:
        meter.start()
    t0 = time.perf_counter()
    run.deadline = t0 + duration
    try:
        for t in threads:
            t.join(timeout=max(0.0, run.deadline - time.perf_counter()) + 120)
    finally:
        run.stop.set()
    seconds = time.perf_counter() - t0
    latencies = [x for t in threads for x in t.latencies]
    failures = sum(t.failures for t in threads)
    first = next((t.first_failure for t in threads if t.first_failure), None)
    cpu = meter.stop(len(latencies) + failures) if meter is not None else None
    return LoadResult(len(latencies), failures, seconds, latencies, first, cpu)
