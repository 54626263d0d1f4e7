"""`make bench` / `python -m bench`: Carnet against the floor, on PostgreSQL (issue 2, "Speed").

(a) ITI-42 Register Document Set-b of one document, N concurrent keep-alive clients, ~10 s;
(b) ITI-18 FindDocuments (LeafClass, Approved) for random patients holding 200 entries each, in
    a registry of 1 M entries, sequential requests.
Then the repository benchmarks of issue 3 (bench/repository.py): ITI-41 of a 30 KB CDA, ITI-43 of
1 MB and 20 MB documents, ITI-41 of a 200 MB document with the server's peak RSS growth, on the
embedded defaults (SQLite + filesystem blobs); the PIX benchmarks of issue 4 (bench/pix.py: ITI-8
feeds and ITI-9 queries over one MLLP connection, against an MLLP echo); the ATNA benchmarks of
issue 5 (bench/atna.py: the ARR's syslog-over-TLS ingest against a framing-only receiver, ITI-18
with auditing against the null sink). `--only registry|repository|pix|atna` runs one part.
Carnet runs on its defaults, auditing included (CARNET_AUDIT=false in the environment turns it
off for a comparison).
Each figure is printed next to the floor's, measured in the same run. The exit code is 0 even
when a target is missed: this is a report, and MISSED says so.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import psycopg

from bench import dataset
from bench import messages as M
from bench import procs
from bench.procs import (
    Process, carnet_command, database_url, drop_database, listening_port, recreate_database, start_carnet_server, wait_ready,
)
from bench import repository as repository_bench
from bench import pix as pix_bench
from bench import atna as atna_bench
from bench.cpu import CpuMeter
from bench.load import LoadResult, check_query_response, check_registry_response, run_load
from bench.table import Row, print_outcome, print_table
from registry import constants as C

REGISTRY_PATH = "/xds/registry"


# --- processes -------------------------------------------------------------------------------------


def start_floor(workdir: Path) -> tuple[Process, str]:
    srv = Process("floor", [sys.executable, "-m", "bench.floor", "--port", "0"], workdir / "floor.log",
                  stdout_pipe=True)
    return srv, f"http://127.0.0.1:{listening_port(srv, 'floor')}{REGISTRY_PATH}"


def carnet(args: list[str], workdir: Path) -> str:
    return carnet_command(args)


def start_carnet(workdir: Path, db_url: str) -> tuple[Process, str]:
    return start_carnet_server(["--data-dir", str(workdir / "carnet"), "--database-url", db_url],
                               REGISTRY_PATH, workdir / "carnet.log")


# --- benchmarks ------------------------------------------------------------------------------------


def iti42(url: str, clients: int, duration: float, patients: list[str], server_pid: int | None = None) -> LoadResult:
    """`server_pid`: also measure where the CPU goes (`bench.cpu`)."""
    factories = [M.Iti42Factory(patients[i % len(patients)], url) for i in range(clients)]
    return run_load(
        url, lambda i: factories[i](), check=check_registry_response,
        clients=clients, duration=duration, warmup=10,
        meter=CpuMeter(server_pid) if server_pid is not None else None,
    )


PREWARM_EVERY = 100  # ITI-18 queries between two prewarms (see `prewarm`)


def in_warm_chunks(measure: Callable[[int, int, int], LoadResult], total: int, warm: Callable[[], str] | None,
                   chunk: int = PREWARM_EVERY) -> LoadResult:
    """`measure(n, seed, warmup)` in chunks of `chunk` requests, `warm()` before each (not timed);
    one LoadResult for the whole."""
    parts = []
    for k, start in enumerate(range(0, total, chunk)):
        if warm is not None:
            warm()
        parts.append(measure(min(chunk, total - start), 2 + k, 20 if k == 0 else 0))
    first = next((p.first_failure for p in parts if p.first_failure), None)
    return LoadResult(sum(p.requests for p in parts), sum(p.failures for p in parts), sum(p.seconds for p in parts),
                      [x for p in parts for x in p.latencies], first)


def iti18(url: str, queries: int, patients: list[str], seed: int = 2, warmup: int = 20) -> LoadResult:
    rng = random.Random(seed)
    return run_load(
        url,
        lambda _i: M.find_documents_request(rng.choice(patients), url),
        check=check_query_response(dataset.ENTRIES_PER_PATIENT),
        clients=1, duration=600.0, max_requests=queries, warmup=warmup,
    )


def sql_only(db_url: str, queries: int, patients: list[str], seed: int = 2, *, binary: bool = True) -> LoadResult:
    """Diagnostic: the FindDocuments rows fetched straight with psycopg (no HTTP, no XML), to
    show how much of Carnet's ITI-18 latency is the database. Same statement as Carnet's
    (`registry.queries.selects.documents()` projection, `status IN`, LIMIT max_results + 1) and,
    by default, the same result format: binary. Fetched whole, prepared, fragments left packed:
    Carnet streams the rows and unpacks them as they come (`registry.store.read`), so part of
    this time overlaps Carnet's own work. In the text format PostgreSQL hex-encodes every bytea
    fragment and psycopg decodes it: ~2.5× the time, which is not what Carnet pays
    (`binary=False` shows it)."""
    rng = random.Random(seed)
    latencies = []
    sql = (
        "SELECT id, patient_id, status, home, xml, object_type, unique_id, lid FROM document_entry"
        " WHERE patient_id = %s AND status IN (%s) LIMIT %s"
    )
    with psycopg.connect(dataset.libpq_url(db_url), autocommit=True) as conn:
        conn.execute("SELECT 1")
        t_all = time.perf_counter()
        for _ in range(queries):
            pid = rng.choice(patients)
            t0 = time.perf_counter()
            cur = conn.cursor(binary=binary)
            rows = cur.execute(sql, (pid, C.STATUS_APPROVED, 10_001), prepare=True).fetchall()
            latencies.append(time.perf_counter() - t0)
            if len(rows) != dataset.ENTRIES_PER_PATIENT:
                raise RuntimeError(f"{pid}: {len(rows)} rows, expected {dataset.ENTRIES_PER_PATIENT}")
        return LoadResult(len(latencies), 0, time.perf_counter() - t_all, latencies)


def prewarm(db_url: str, *, heap: tuple[str, ...] = ("document_entry",)) -> str:
    """Read every index of the registry, and the tables in `heap`, into memory just before a
    measurement. This VM's kernel pages out page-cache pages unused for 60 s (DAMON reclaim:
    `/sys/kernel/mm/damon`), and PostgreSQL keeps only 128 MB itself (its default shared_buffers):
    without this, ITI-18 on patients loaded minutes earlier, and ITI-42's index insertions,
    measure this disk (SQL alone 10–50 ms, ITI-42 p99 230 ms, seen), not Carnet. A registry in
    service keeps its hot set cached. Eviction resumes within seconds (SQL alone: p99 9 ms just
    after a prewarm, 47 ms 5 s later, seen), so ITI-18 runs in chunks of `PREWARM_EVERY` queries
    with a prewarm before each (`in_warm_chunks`), for Carnet and the SQL-only diagnostic alike."""
    t = time.perf_counter()
    with psycopg.connect(dataset.libpq_url(db_url), autocommit=True) as conn:
        relations = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND (c.relkind = 'i' OR c.relname = ANY(%s))", (list(heap),))]
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            pages = sum(conn.execute("SELECT pg_prewarm(%s, 'read')", (r,)).fetchone()[0] for r in relations)
            how = f"pg_prewarm read {pages * 8 // 1024} MB ({len(relations)} relations)"
        except psycopg.Error:  # no pg_prewarm (or no right to create it): scan what can be scanned
            for table in heap:
                conn.execute(f"SELECT count(*) FROM {table}")
            how = f"sequential scan of {', '.join(heap)}"
    return f"{how} in {time.perf_counter() - t:.1f} s"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def cpu_gauge() -> float:
    """ms for a fixed loop of 10**6 Python additions, best of 3: how fast this VM's CPU runs now.
    The figures of one run compare with its floors; the gauge tells runs of different hours apart
    (this project's VMs were seen to vary by a factor of 3 to 4 between hours)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def memory_gauge(entries: int = 4_000_000, reads: int = 1_000_000) -> float:
    """ms for 10**6 Python reads at random places of a list of 4 M ints (about 150 MB with the
    ints: past every cache and TLB), best of 3. `cpu_gauge` runs in the CPU's caches and was seen
    to read as fast in hours whose floors ran half as fast: this one pays the memory's latency,
    which the servers and the floors pay too."""
    data = [3 * i for i in range(entries)]
    places = random.Random(7).sample(range(entries), reads)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in places:
            total += data[i]
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def print_gauges(when: str = "") -> None:
    print(f"CPU gauge{when}: {cpu_gauge():.0f} ms for 10**6 Python additions; memory gauge: "
          f"{memory_gauge():.0f} ms for 10**6 random reads of a 150 MB list (lower is faster)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 000 entries, short runs: checks the harness")
    ap.add_argument("--entries", type=int, help="registry size for ITI-18 (default 1 000 000)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent ITI-42 clients")
    ap.add_argument("--duration", type=float, help="seconds of ITI-42 load (default 10)")
    ap.add_argument("--queries", type=int, help="ITI-18 requests (default 500)")
    ap.add_argument("--admin-url", default=os.environ.get("CARNET_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                    help="PostgreSQL database used only to CREATE/DROP the bench database")
    ap.add_argument("--database", default="carnet_bench", help="bench database name (dropped and recreated)")
    ap.add_argument("--keep-db", action="store_true", help="leave the bench database for inspection")
    ap.add_argument("--reuse-db", action="store_true",
                    help="use the bench database left by --keep-db if it holds the data set (no reload); kept")
    ap.add_argument("--floor-only", action="store_true", help="measure only the floor (no Carnet)")
    ap.add_argument("--only", choices=("registry", "repository", "pix", "atna"),
                    help="run only the registry (issue 2), repository (issue 3), PIX MLLP (issue 4) or ATNA (issue 5) benchmarks")
    ap.add_argument("--retrieve-clients", type=int, default=4, help="concurrent ITI-43 clients (repository)")
    ap.add_argument("--big-mb", type=int, default=200, help="size of the streamed ITI-41 document (repository)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="Carnet serving processes (carnet serve --workers): one per core by default "
                         "(Python runs one thread at a time per process)")
    ap.add_argument("--pg-tcp", action="store_true",
                    help="reach a PostgreSQL on this machine over TCP, not through its Unix socket")
    args = ap.parse_args(argv)
    procs.PG_LOCAL_SOCKET = not args.pg_tcp
    os.environ["CARNET_WORKERS"] = str(args.workers)  # read by every `carnet serve` the bench starts
    run_registry = args.only in (None, "registry")
    run_repository = args.only in (None, "repository") and not args.floor_only
    run_pix = args.only in (None, "pix") and not args.floor_only
    run_atna = args.only in (None, "atna") and not args.floor_only
    entries = args.entries or (20_000 if args.quick else 1_000_000)
    duration = args.duration or (3.0 if args.quick else 10.0)
    queries = args.queries or (100 if args.quick else 500)
    if args.database in ("test", "postgres", "template0", "template1"):
        ap.error(f"refusing to use database {args.database!r} for the bench")

    t_start = time.perf_counter()
    print(f"Carnet bench — {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}")
    print(f"machine: {machine()} (nproc {os.cpu_count()})")
    print_gauges()
    print(f"Carnet: carnet serve --workers {args.workers} (serving processes; --workers to change)")
    print(f"PostgreSQL: {database_url(args.admin_url, '<db>')} (--pg-tcp for TCP to a local server)")
    if run_registry:
        print(f"registry: {entries} entries, ITI-42: {args.clients} clients × {duration:.0f} s, ITI-18: {queries} queries")

    workdir = Path(tempfile.mkdtemp(prefix="carnet-bench-"))
    servers: list[Process] = []
    results: dict[str, dict[str, LoadResult | None]] = {"iti42": {}, "iti18": {}, "sql": {}}
    failures: list[str] = []
    db_created = False
    if run_registry:
        try:
            floor, floor_url = start_floor(workdir)
            servers.append(floor)
            wait_ready(floor_url, floor)

            query_patients = dataset.patients_with_entries(entries)
            writer_patients = [M.bench_patient(9_000_000 + k) for k in range(args.clients)]

            db_url = None
            reused = False
            if not args.floor_only and args.reuse_db:
                candidate = database_url(args.admin_url, args.database)
                reused = dataset.holds_data_set(candidate, entries)
                if reused:
                    db_url = candidate
                    print(f"database: {args.database} (reused: {entries} entries, plus the ITI-42 rows of earlier runs)")
            if not args.floor_only and not reused:
                db_url = recreate_database(args.admin_url, args.database)
                db_created = not args.reuse_db  # --reuse-db keeps what it loads, for the next run
                print(f"database: {args.database} (recreated)")
                t = time.perf_counter()
                carnet(["db", "upgrade", "--data-dir", str(workdir / "carnet"), "--database-url", db_url], workdir)
                print(f"schema: carnet db upgrade in {time.perf_counter() - t:.1f} s")
                print(f"loading {entries} entries …")
                info = dataset.load(db_url, entries, log=print)
                print(
                    f"data set: {info['entries']} entries, {info['patients']} patients in {info['total_s']:.1f} s"
                    f" (COPY {info['copy_s']:.1f} s, indexes {info['index_s']:.1f} s, VACUUM ANALYZE + CHECKPOINT {info['vacuum_s']:.1f} s)"
                )
            if db_url is not None:
                (workdir / "patients.txt").write_text("\n".join(writer_patients) + "\n")
                out = carnet(
                    ["patients", "import", str(workdir / "patients.txt"), "--data-dir", str(workdir / "carnet"),
                     "--database-url", db_url],
                    workdir,
                )
                print(f"ITI-42 patients: {out.splitlines()[-1] if out else 'imported'}")

            # ITI-18 first, on the freshly loaded registry; then ITI-42 (other patients).
            print("ITI-18 floor …", flush=True)
            results["iti18"]["floor"] = in_warm_chunks(
                lambda n, seed, warmup: iti18(floor_url, n, query_patients, seed, warmup), queries, None)
            print(f"  floor:  {results['iti18']['floor'].summary()}")
            print("ITI-42 floor …", flush=True)
            results["iti42"]["floor"] = iti42(floor_url, args.clients, duration, writer_patients, floor.pid)
            print(f"  floor:  {results['iti42']['floor'].summary()}")
            print(f"          {results['iti42']['floor'].cpu.summary()}")

            if db_url is not None:
                print(f"  prewarm: {prewarm(db_url)}, again every {PREWARM_EVERY} queries")
                warm = lambda: prewarm(db_url)  # noqa: E731
                results["sql"] = {"carnet": in_warm_chunks(
                    lambda n, seed, _warmup: sql_only(db_url, n, query_patients, seed), queries, warm)}
                print(f"  SQL only (psycopg, same statement, binary results like Carnet): {results['sql']['carnet'].summary()}")
                text = in_warm_chunks(
                    lambda n, seed, _warmup: sql_only(db_url, n, query_patients, seed, binary=False), queries, warm)
                print(f"  SQL only, text results (not what Carnet uses; bytea hex-encoded): {text.summary()}")
                srv, url = start_carnet(workdir, db_url)
                servers.append(srv)
                print(f"Carnet at {url}")
                print(f"ITI-18 Carnet … (prewarm every {PREWARM_EVERY} queries)", flush=True)
                results["iti18"]["carnet"] = in_warm_chunks(
                    lambda n, seed, warmup: iti18(url, n, query_patients, seed, warmup), queries, warm)
                print(f"  carnet: {results['iti18']['carnet'].summary()}")
                print(f"ITI-42 Carnet … (prewarm: {prewarm(db_url, heap=())})", flush=True)
                results["iti42"]["carnet"] = iti42(url, args.clients, duration, writer_patients, srv.pid)
                print(f"  carnet: {results['iti42']['carnet'].summary()}")
                print(f"          {results['iti42']['carnet'].cpu.summary()}")
                if not srv.alive():
                    failures.append(f"Carnet exited during the run:\n{srv.log_tail()}")
        except Exception as exc:  # noqa: BLE001 - report, then the table with what was measured
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            for s in reversed(servers):
                s.stop()
            if db_created and not args.keep_db:
                try:
                    drop_database(args.admin_url, args.database)
                except psycopg.Error as exc:
                    failures.append(f"could not drop {args.database}: {exc}")

    for bench_name, by in results.items():
        for who, r in by.items():
            if r is not None and r.failures:
                failures.append(f"{bench_name} {who}: {r.failures} failed requests; first:\n{r.first_failure}")

    def fig(bench_name: str, who: str, attr: str) -> float | None:
        r = results[bench_name].get(who)
        if r is None or r.requests == 0 or r.failures:
            return None  # a figure measured with errors is not a figure
        return getattr(r, attr)

    def _sum(*figures: float | None) -> float | None:
        return None if any(f is None for f in figures) else sum(figures)

    repo_rows: list[Row] = []
    if run_repository:
        print()
        specs, repo_failures = repository_bench.run(repository_bench.Options(
            quick=args.quick, clients=args.clients, retrieve_clients=args.retrieve_clients,
            duration=args.duration, big_mb=args.big_mb,
        ))
        failures += [f"repository: {f}" for f in repo_failures]
        repo_rows = specs

    pix_rows: list[Row] = []
    if run_pix:
        print()
        specs, pix_failures = pix_bench.run(pix_bench.Options(quick=args.quick, admin_url=args.admin_url))
        failures += [f"pix: {f}" for f in pix_failures]
        pix_rows = specs

    atna_rows: list[Row] = []
    if run_atna:
        print()
        specs, atna_failures = atna_bench.run(atna_bench.Options(quick=args.quick, admin_url=args.admin_url))
        failures += [f"atna: {f}" for f in atna_failures]
        atna_rows = specs

    print()
    label18 = f"ITI-18 FindDocuments, 200 of {entries} entries"
    rows = [] if not run_registry else [
        Row(f"ITI-42 register 1 doc, {args.clients} clients", "/s", fig("iti42", "carnet", "throughput"),
            fig("iti42", "floor", "throughput"), "≥ 500/s", lambda v: v >= 500, True),
        Row(f"{label18}: p50", "ms", fig("iti18", "carnet", "p50"), fig("iti18", "floor", "p50"),
            "≤ 5 ms", lambda v: v <= 5, False),
        Row(f"{label18}: p99", "ms", fig("iti18", "carnet", "p99"), fig("iti18", "floor", "p99"),
            "≤ 20 ms", lambda v: v <= 20, False),
        Row("  of which SQL only (psycopg, binary): p50", "ms", fig("sql", "carnet", "p50"), None, "-", lambda v: True, False),
        Row("  of which SQL only (psycopg, binary): p99", "ms", fig("sql", "carnet", "p99"), None, "-", lambda v: True, False),
        # Carnet parses what the floor parses and runs the select the SQL-only client runs: their
        # medians added are about the least its p50 can be in this run.
        Row("  floor p50 + SQL only p50 (Carnet's least)", "ms", _sum(fig("iti18", "floor", "p50"), fig("sql", "carnet", "p50")),
            None, "-", lambda v: True, False),
        Row(f"ITI-42 latency ({args.clients} clients): p50", "ms", fig("iti42", "carnet", "p50"), fig("iti42", "floor", "p50"),
            "-", lambda v: True, False),
        Row(f"ITI-42 latency ({args.clients} clients): p99", "ms", fig("iti42", "carnet", "p99"), fig("iti42", "floor", "p99"),
            "-", lambda v: True, False),
    ]
    rows += repo_rows
    rows += pix_rows
    rows += atna_rows
    print_table(rows)
    if run_registry and entries != 1_000_000:
        print(f"note: registry of {entries} entries, not the 1 M of the target (ITI-18 verdicts are indicative)")
    print_outcome(rows, failures)
    print_gauges(" at the end")
    print(f"total runtime {time.perf_counter() - t_start:.1f} s")
    if failures:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
