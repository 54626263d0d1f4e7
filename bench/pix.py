"""PIX Manager over MLLP (issue 4, "Speed"): ITI-8 feeds and ITI-9 queries from ONE client
connection, next to the raw MLLP echo floor measured in the same run.

- Carnet: `carnet serve` on embedded defaults (SQLite in a temp data dir) — and on PostgreSQL
  when one is reachable — with a free MLLP port (CARNET_MLLP_PORT), the bench's IPP domain
  (CARNET_PIX_DOMAINS) and INS-NIR-TEST (CARNET_INS_OIDS). If that `carnet serve` does not
  listen on MLLP (the listener not wired yet), an equivalent child process is used instead
  (`python -m bench.pix serve`: the same SqlCrossReferences + Hl7v2Service + MllpFactory) and
  the report says so.
- Floor: `python -m bench.pix echo`, a child process running MllpFactory on a thread pool with a
  handler that answers a canned ACK (MSH-10 spliced into MSA-2 by a byte search, so the client
  checks the floor's answers as it checks Carnet's).
- Client (this process): ONE TCP connection; ITI-8: N ADT^A01 feeds of distinct new patients (an
  IPP each; every other one also a valid INS-NIR-TEST with PID-32 VALI), pipelined with a window
  of W outstanding messages; every ACK must be AA with MSA-2 = the request's MSH-10, in order.
  Then ITI-9: M QBP^Q23 for fed patients holding an INS (half by IPP expecting the INS, half by
  INS expecting the IPP); every answer must be AA, QAK-2 OK, and carry the expected id.

Throughput is messages answered per second of wall time, client included: the client runs on
the same machine (2 CPUs here, shared), so a figure is comparable to its floor only within one
run. `python -m bench.pix` runs this part alone; `python -m bench --only pix` from the suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.procs import (
    Process, carnet_command, drop_database, free_port, listening_port, recreate_database, start_carnet_server,
)
from bench.table import Row, print_report
from pix.ins import INS_NIR_TEST, with_key
from pix.mllp import MllpDecoder, frame

IPP_OID = "1.2.250.1.999.77.1"  # the bench's IPP domain (a hospital's local ids)
IPP_NS = "BENCH"
QBP_PROFILE = "IHE PIX Query"
HTTP_PROBE_PATH = "/xds/registry"
TARGET = 1000.0

# --- messages --------------------------------------------------------------------------------


def nir(i: int) -> str:
    """A distinct valid NIR for each i < 12 * 99 * 999 (year, month, commune vary)."""
    month = 1 + i % 12
    commune = 1 + (i // 12) % 999
    year = (i // 11988) % 100
    return with_key(f"1{year:02d}{month:02d}75{commune:03d}{1 + i % 997:03d}")


def ipp(i: int, run: str) -> str:
    return f"B{run}{i:07d}"


def has_ins(i: int) -> bool:
    return i % 2 == 0


def feed_message(i: int, run: str) -> tuple[bytes, str]:
    """ADT^A01 of patient i (new), and its MSH-10."""
    control = f"F{run}{i}"
    pid3 = f"{ipp(i, run)}^^^{IPP_NS}&{IPP_OID}&ISO^PI"
    pid32 = ""
    if has_ins(i):
        pid3 += f"~{nir(i)}^^^ASIP-SANTE-INS-NIR-TEST&{INS_NIR_TEST}&ISO^INS"
        pid32 = "|" * 24 + "VALI"  # PID-8 → PID-32
    msg = (
        f"MSH|^~\\&|BENCH|HOSP|CARNET|CARNET|20240101120000||ADT^A01^ADT_A01|{control}|P|2.5|||||FRA|UNICODE UTF-8\r"
        "EVN||20240101120000\r"
        f"PID|||{pid3}||DUPONT^JEAN^^^^^L||19800101|M{pid32}\r"
        "PV1||I\r"
    )
    return msg.encode(), control


def query_message(k: int, i: int, run: str) -> tuple[bytes, str, str]:
    """QBP^Q23 for fed patient i (who holds an INS), its MSH-10, and the id expected in PID-3."""
    control = f"Q{run}{k}"
    if k % 2 == 0:
        qpd3, expected = f"{ipp(i, run)}^^^{IPP_NS}&{IPP_OID}&ISO", nir(i)
    else:
        qpd3, expected = f"{nir(i)}^^^&{INS_NIR_TEST}&ISO", ipp(i, run)
    msg = (
        f"MSH|^~\\&|BENCH|HOSP|CARNET|CARNET|20240101120000||QBP^Q23^QBP_Q21|{control}|P|2.5\r"
        f"QPD|IHE PIX Query|T{control}|{qpd3}\r"
        "RCP|I\r"
    )
    return msg.encode(), control, expected


# --- checks (cheap: the client shares the CPUs with the server) ------------------------------


def _segments(answer: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for seg in answer.decode("utf-8", "replace").split("\r"):
        if seg[:3] not in out:
            out[seg[:3]] = seg.split("|")
    return out


def check_ack(answer: bytes, control: str) -> str | None:
    s = _segments(answer)
    msa = s.get("MSA")
    if msa is None or len(msa) < 3:
        return "no MSA"
    if msa[1] != "AA":
        return f"MSA-1 {msa[1]}: {answer!r}"
    if msa[2] != control:
        return f"MSA-2 {msa[2]!r}, expected {control!r} (out of order?)"
    return None


def check_rsp(answer: bytes, control: str, expected: str) -> str | None:
    problem = check_ack(answer, control)
    if problem:
        return problem
    s = _segments(answer)
    qak, pid = s.get("QAK"), s.get("PID")
    if qak is None or len(qak) < 3 or qak[2] != "OK":
        return f"QAK-2 not OK: {answer!r}"
    if pid is None or len(pid) < 4 or expected not in [r.split("^")[0] for r in pid[3].split("~")]:
        return f"PID-3 lacks {expected!r}: {answer!r}"
    return None


# --- the client --------------------------------------------------------------------------------


@dataclass
class MllpResult:
    messages: int
    failures: int
    seconds: float
    first_failure: str | None = None

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        s = f"{self.messages} messages in {self.seconds:.2f} s = {self.throughput:.0f}/s"
        if self.failures:
            s += f", {self.failures} FAILED (first: {self.first_failure})"
        return s


def pipelined(port: int, items: list[tuple[bytes, Callable[[bytes], str | None]]], window: int,
              timeout: float = 120.0) -> MllpResult:
    """Send `items` (message, check of its answer) over ONE connection with at most `window`
    unanswered; answers are matched in order (MLLP: one answer per message, in order)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    slots = threading.Semaphore(window)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            for message, _check in items:
                slots.acquire()
                sock.sendall(frame(message))
        except BaseException as exc:  # noqa: BLE001 - reported by the receiver
            errors.append(exc)

    decoder = MllpDecoder(1 << 24)
    failures, first = 0, None
    done = 0
    t0 = time.perf_counter()
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    try:
        while done < len(items):
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"closed by the server after {done} answers")
            for event in decoder.feed(data):
                if not isinstance(event, bytes):
                    continue
                problem = items[done][1](event)
                if problem:
                    failures += 1
                    first = first or problem
                done += 1
                slots.release()
        seconds = time.perf_counter() - t0
    finally:
        sock.close()
        th.join(5)
    if errors:
        raise errors[0]
    return MllpResult(done, failures, seconds, first)


def feeds(port: int, patients: range, run: str, window: int) -> MllpResult:
    items = []
    for i in patients:
        message, control = feed_message(i, run)
        items.append((message, lambda a, c=control: check_ack(a, c)))
    return pipelined(port, items, window)


def queries(port: int, m: int, n_fed: int, run: str, window: int) -> MllpResult:
    with_ins = [i for i in range(n_fed) if has_ins(i)]
    items = []
    for k in range(m):
        i = with_ins[(k * 7919) % len(with_ins)]
        message, control, expected = query_message(k, i, run)
        items.append((message, lambda a, c=control, e=expected: check_rsp(a, c, e)))
    return pipelined(port, items, window)


def floor_run(port: int, n: int, window: int, make: Callable[[int], tuple[bytes, str]]) -> MllpResult:
    items = []
    for i in range(n):
        message, control = make(i)
        items.append((message, lambda a, c=control: check_ack(a, c)))
    return pipelined(port, items, window)


# --- child processes ---------------------------------------------------------------------------


def _wait_mllp(port: int, srv: Process, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not srv.alive():
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def start_echo(workdir: Path) -> tuple[Process, int]:
    srv = Process("mllp-floor", [sys.executable, "-m", "bench.pix", "echo", "--port", "0"],
                  workdir / "mllp-floor.log", stdout_pipe=True)
    return srv, listening_port(srv, "MLLP floor")


def pix_env(mllp_port: int) -> dict[str, str]:
    return {
        "CARNET_MLLP_PORT": str(mllp_port),
        "CARNET_PIX_DOMAINS": IPP_OID,
        "CARNET_INS_OIDS": INS_NIR_TEST,
    }


def start_carnet_pix(workdir: Path, db_url: str | None, label: str) -> tuple[Process, int, str]:
    """`carnet serve` with its MLLP listener; the fallback child when it has none.
    Returns (process, MLLP port, what runs)."""
    data_dir = workdir / f"carnet-{label}"
    tail = ["--data-dir", str(data_dir)] + (["--database-url", db_url] if db_url else [])
    if db_url:
        carnet_command(["db", "upgrade", *tail])
    mllp = free_port()
    srv, _ = start_carnet_server(tail, HTTP_PROBE_PATH, workdir / f"carnet-{label}.log", env=pix_env(mllp),
                                 name=f"carnet-{label}")
    if _wait_mllp(mllp, srv, timeout=5):
        return srv, mllp, "carnet serve"
    srv.stop()
    # the MLLP listener is not wired into `carnet serve` (yet): the same parts in a child
    url = db_url or f"sqlite:///{data_dir / 'carnet.db'}"
    mllp = free_port()
    srv = Process(f"pix-{label}", [sys.executable, "-m", "bench.pix", "serve", "--port", str(mllp),
                                   "--database-url", url], workdir / f"pix-{label}.log")
    if not _wait_mllp(mllp, srv, timeout=60):
        tail_log = srv.log_tail()
        srv.stop()
        raise RuntimeError(f"PIX child did not listen:\n{tail_log}")
    return srv, mllp, "bench.pix serve (carnet serve has no MLLP listener yet)"


def _run_reactor_with(make_factory, port: int, threads: int) -> None:
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(1, threads, name="mllp-bench")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    listening = reactor.listenTCP(port, make_factory(reactor, pool), interface="127.0.0.1")
    print(f"LISTENING {listening.getHost().port}", flush=True)
    reactor.run()


def serve_echo(port: int) -> None:
    from pix.mllp_edge import MllpFactory

    canned_head = (b"MSH|^~\\&|CARNET|CARNET|BENCH|HOSP|20240101120000||ACK^A01^ACK|CARNET1|P|2.5\r"
                   b"MSA|AA|")

    def echo(data: bytes) -> bytes:  # the cheapest well-formed answer: MSH-10 → MSA-2
        msh = data[: data.find(b"\r")]
        return canned_head + msh.split(b"|", 10)[9] + b"\r"

    _run_reactor_with(lambda reactor, pool: MllpFactory(echo, reactor=reactor, threadpool=pool), port, 4)


def serve_pix(port: int, database_url: str) -> None:
    """What `carnet serve` wires for MLLP: SqlCrossReferences on the registry database,
    Hl7v2Service, MllpFactory on a thread pool (8 threads, pool of 8 connections)."""
    from pix import er7
    from pix.hl7v2_service import Hl7v2Service
    from pix.identities import SqlCrossReferences
    from pix.ins import InsPolicy
    from pix.mllp_edge import MllpFactory
    from registry.db import create_schema, make_engine

    engine = make_engine(database_url, pool_size=8)
    create_schema(engine)
    xref = SqlCrossReferences(engine, [IPP_OID], InsPolicy(accepted_oids=frozenset({INS_NIR_TEST})))
    service = Hl7v2Service(xref, authorities=er7.AuthorityTable([er7.AssigningAuthority(IPP_OID, IPP_NS)]))
    _run_reactor_with(lambda reactor, pool: MllpFactory(service, reactor=reactor, threadpool=pool), port, 8)


# --- the benchmark -----------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool = False
    feeds: int | None = None
    queries: int | None = None
    window: int = 100
    admin_url: str | None = None  # PostgreSQL admin database (CREATE/DROP); None: SQLite only
    database: str = "carnet_bench_pix"


def _pg_database(admin_url: str, name: str) -> str | None:
    try:
        return recreate_database(admin_url, name)
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL: SQLite only, said in the report
        print(f"PostgreSQL not available ({type(exc).__name__}: {exc}); SQLite only")
        return None


def run(opts: Options) -> tuple[list[Row], list[str]]:
    n = opts.feeds or (2000 if opts.quick else 10_000)
    m = opts.queries or (2000 if opts.quick else 10_000)
    print(f"PIX over MLLP: {n} ITI-8 feeds then {m} ITI-9 queries, one connection, window {opts.window}")
    workdir = Path(tempfile.mkdtemp(prefix="carnet-bench-pix-"))
    failures: list[str] = []
    rows: list[Row] = []
    servers: list[Process] = []
    floor_feed = floor_query = None
    pg_url = None
    try:
        echo, echo_port = start_echo(workdir)
        servers.append(echo)
        floor_run(echo_port, min(n, 2000), opts.window, lambda i: feed_message(i, "W"))  # warm-up
        floor_feed = floor_run(echo_port, n, opts.window, lambda i: feed_message(i, "E"))
        print(f"  floor (ADT^A01 echo): {floor_feed.summary()}")
        floor_query = floor_run(echo_port, m, opts.window, lambda k: query_message(k, 0, "E")[:2])
        print(f"  floor (QBP^Q23 echo): {floor_query.summary()}")
        for r in (floor_feed, floor_query):
            if r.failures:
                failures.append(f"floor: {r.failures} bad answers; first: {r.first_failure}")
        echo.stop()
        servers.remove(echo)

        backends: list[tuple[str, str | None]] = [("SQLite", None)]
        if opts.admin_url:
            pg_url = _pg_database(opts.admin_url, opts.database)
            if pg_url:
                backends.append(("PostgreSQL", pg_url))
        for label, db_url in backends:
            srv, port, what = start_carnet_pix(workdir, db_url, label.lower())
            servers.append(srv)
            print(f"Carnet on {label} ({what})")
            run_id = f"{os.getpid() % 1000}{label[0]}"
            warm = feeds(port, range(n, n + min(500, n)), run_id, opts.window)  # warm-up: other patients
            if warm.failures:
                failures.append(f"{label} warm-up: {warm.first_failure}")
            fr = feeds(port, range(n), run_id, opts.window)
            print(f"  ITI-8 feeds:   {fr.summary()}")
            qr = queries(port, m, n, run_id, opts.window)
            print(f"  ITI-9 queries: {qr.summary()}")
            for name, r in (("ITI-8", fr), ("ITI-9", qr)):
                if r.failures:
                    failures.append(f"{label} {name}: {r.failures} bad answers; first: {r.first_failure}")
            if not srv.alive():
                failures.append(f"{label}: the server exited during the run:\n{srv.log_tail()}")
            srv.stop()
            servers.remove(srv)
            note = "" if what == "carnet serve" else " (child)"
            rows.append(Row(f"ITI-8 feed over MLLP, 1 connection, {label}{note}", "/s",
                            None if fr.failures else fr.throughput, floor_feed.throughput,
                            "≥ 1000/s", lambda v: v >= TARGET))
            rows.append(Row(f"ITI-9 query over MLLP, 1 connection, {label}{note}", "/s",
                            None if qr.failures else qr.throughput, floor_query.throughput,
                            "≥ 1000/s", lambda v: v >= TARGET))
    except Exception as exc:  # noqa: BLE001 - report what was measured
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for s in reversed(servers):
            s.stop()
        if pg_url:
            try:
                drop_database(opts.admin_url, opts.database)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"could not drop {opts.database}: {exc}")
    if failures:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pix", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    e = sub.add_parser("echo", help="(child) the MLLP echo floor")
    e.add_argument("--port", type=int, default=0)
    s = sub.add_parser("serve", help="(child) the PIX MLLP listener alone")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--database-url", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--feeds", type=int)
    ap.add_argument("--queries", type=int)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--admin-url", default=os.environ.get("CARNET_BENCH_ADMIN_URL",
                                                          "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--sqlite-only", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "echo":
        serve_echo(args.port)
        return 0
    if args.cmd == "serve":
        serve_pix(args.port, args.database_url)
        return 0
    rows, failures = run(Options(quick=args.quick, feeds=args.feeds, queries=args.queries,
                                 window=args.window, admin_url=None if args.sqlite_only else args.admin_url))
    print_report(rows, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
