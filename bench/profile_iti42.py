"""In-process profile of ITI-42 Register Document Set-b: CPU ms per registration, by phase.

    python -m bench.profile_iti42 [--database-url URL] [--requests N] [--threads N] [--cprofile]

Drives `soap.edge.SoapEndpoint.process` (what a worker thread runs for each HTTP POST: SOAP
decode, the ITI-42 handler, the SOAP encode) of a Carnet built by `config.site.build`, with the
bench's own requests (`bench.messages.Iti42Factory`), against PostgreSQL. The database named
in `--database-url` (default `carnet_prof`) is dropped and recreated through `--admin-url`,
migrated with Alembic like `carnet serve`, and dropped at the end.

Printed per registration: CPU ms of this process by phase (exclusive: a phase nested in
another is not counted twice), wall ms by phase, SQL round trips (statements, commits, pool
pings) and the CPU ms the PostgreSQL backends spent. Phases are measured by wrapping the
functions named in `PHASES`; whatever is not in a phase is "other" (the handler's own
checks, id assignment, audit, …). No HTTP: the Twisted edge (reading the body, writing the
answer) is not measured here, `python -m bench` measures the whole.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib
import io
import os
import pstats
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from sqlalchemy import event

from bench import messages as M
from bench.load import check_registry_response

# (phase, module, attribute path): wrapped if present, so the profiler survives refactoring.
PHASES: tuple[tuple[str, str, str], ...] = (
    ("SOAP parse", "soap.edge", "parse_soap"),
    ("SOAP parse", "soap.envelope", "parse_soap"),
    ("ebRIM parse", "registry.ebrim", "parse_submit_objects_request"),
    ("validation", "registry.validate", "validate_submission"),
    ("validation", "registry.validate.rules", "validate_submission"),
    ("validation", "registry.iti42_register", "validate_submission"),
    ("look-ups", "registry.store", "RegistryStore.is_known"),
    ("look-ups", "registry.store", "RegistryStore.is_known_patient"),
    ("look-ups", "registry.store", "RegistryStore.objects_by_id"),
    ("look-ups", "registry.store", "RegistryStore.documents_by_unique_id"),
    ("look-ups", "registry.store", "RegistryStore.existing_submission_set_unique_ids"),
    ("look-ups", "registry.store", "RegistryStore.existing_folder_unique_ids"),
    ("look-ups", "registry.store", "RegistryStore.folders_containing"),
    ("look-ups", "registry.store", "RegistryStore.approved_children"),
    ("look-ups", "registry.store", "RegistryStore.registration_lookups"),
    ("look-ups", "registry.store.write", "RegistrationSession.registration_lookups"),
    ("look-ups", "registry.store.write", "RegistrationSession.is_known"),
    ("look-ups", "registry.store.write", "RegistrationSession.objects_by_id"),
    ("look-ups", "registry.store.write", "RegistrationSession.documents_by_unique_id"),
    ("look-ups", "registry.store.write", "RegistrationSession.folders_containing"),
    ("look-ups", "registry.store.write", "RegistrationSession.approved_children"),
    ("plan build", "registry.iti42_register", "_build_plan"),
    ("serialisation", "registry.store.write", "plan_rows"),
    ("serialisation", "registry.ebrim", "registry_response"),
    ("serialisation", "registry.ebrim", "registry_response_bytes"),
    ("serialisation", "soap.edge", "build_response"),
    ("commit", "registry.store", "RegistryStore.commit"),
    ("commit", "registry.store.write", "RegistrationSession.commit"),
    ("audit: build", "atna.sender", "SpoolingAuditSink._build"),
    ("audit: syslog", "atna.sender", "SpoolingAuditSink._message"),
    ("audit: spool", "atna.spool", "Spool.append_many"),
)


class PhaseClock:
    """Exclusive CPU (thread_time) and wall time per phase, per thread (phases may nest)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, phase: str, fn):
        clock = self

        @functools.wraps(fn)
        def timed(*a, **kw):
            stack = getattr(clock._local, "stack", None)
            if stack is None:
                stack = clock._local.stack = []
            if stack and stack[-1][0] == phase:  # same phase nested (an alias): count once
                return fn(*a, **kw)
            frame = [phase, 0.0, 0.0]  # phase, child cpu, child wall
            stack.append(frame)
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                dc, dw = time.thread_time() - c0, time.perf_counter() - w0
                stack.pop()
                with clock._lock:
                    clock.cpu[phase] += dc - frame[1]
                    clock.wall[phase] += dw - frame[2]
                    clock.calls[phase] += 1
                if stack:
                    stack[-1][1] += dc
                    stack[-1][2] += dw

        timed.__profile_wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def reset(self) -> None:
        self.cpu.clear()
        self.wall.clear()
        self.calls.clear()


def install(clock: PhaseClock) -> list[str]:
    """Wrap every function of PHASES that exists; returns what was wrapped."""
    done = []
    for phase, module_name, path in PHASES:
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            continue
        *parents, attr = path.split(".")
        for p in parents:
            owner = getattr(owner, p, None)
            if owner is None:
                break
        if owner is None:
            continue
        # class attribute: only wrap what the class itself (or its bases) defines, once
        fn = getattr(owner, attr, None)
        if fn is None or getattr(fn, "__profile_wrapped__", None) is not None:
            continue
        setattr(owner, attr, clock.wrap(phase, fn))
        done.append(f"{module_name}.{path}")
    return done


class SqlCounter:
    """Round trips seen by SQLAlchemy: statements (an executemany counts once), commits, pings."""

    def __init__(self, engine) -> None:
        self.statements = 0
        self.commits = 0
        self.rollbacks = 0
        self.checkouts = 0
        self.pings = 0
        self.texts: dict[str, int] = defaultdict(int)
        event.listen(engine, "before_cursor_execute", self._execute)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        event.listen(engine.pool, "checkout", self._checkout)
        dialect = engine.dialect
        ping = dialect.do_ping

        def counted_ping(dbapi_connection):
            self.pings += 1
            return ping(dbapi_connection)

        dialect.do_ping = counted_ping
        try:  # statements sent straight to the driver (registry.store.write._driver_execute)
            from registry.store import write

            direct = write._driver_execute

            def counted_direct(c, sql, params, **kw):
                self.statements += 1
                self.texts[sql.split("(")[0].split(" WHERE")[0][:70]] += 1
                return direct(c, sql, params, **kw)

            write._driver_execute = counted_direct
        except (ImportError, AttributeError):
            pass

    def _execute(self, conn, cursor, statement, parameters, context, executemany):
        self.statements += 1
        self.texts[statement.split("(")[0].split(" WHERE")[0][:70]] += 1

    def _commit(self, conn):
        self.commits += 1

    def _rollback(self, conn):
        self.rollbacks += 1

    def _checkout(self, dbapi_conn, record, proxy):
        self.checkouts += 1

    def reset(self) -> None:
        self.statements = self.commits = self.rollbacks = self.checkouts = self.pings = 0
        self.texts.clear()


def backend_cpu_s(pids) -> float:
    """user+system CPU seconds of the PostgreSQL backends (same machine: /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def backend_pids(admin_url: str, url: str) -> set[int]:
    """PIDs of the PostgreSQL backends connected to the profiled database (the pool's)."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("select pid from pg_stat_activity where datname = %s", (name,)).fetchall()
    return {r[0] for r in rows}


def recreate(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    if name in ("test", "postgres", "template0", "template1", "carnet_bench"):
        raise SystemExit(f"refusing to drop database {name!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def analyze(url: str) -> None:
    """ANALYZE the profiled database once the warm-up has filled it. Where autovacuum is off (as
    on this project's machines) its tables would otherwise keep no statistics, and PostgreSQL
    plans the registration's look-up anew at each call (2 ms of backend CPU instead of 0.3)."""
    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute("ANALYZE")


def drop(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _NoReactor:
    """Stands in for the reactor, which this profile does not run: the audit events are
    spooled as in `carnet serve` (their cost is measured), and the wake-up of the sender,
    which is not started here, is dropped."""

    def callFromThread(self, f, *args, **kwargs) -> None:  # noqa: N802 - Twisted's name
        pass

    def callWhenRunning(self, f, *args, **kwargs) -> None:  # noqa: N802
        pass

    def addSystemEventTrigger(self, *args, **kwargs) -> None:  # noqa: N802
        pass


def build_carnet(url: str, threads: int, data_dir: Path):
    from config.settings import Settings
    from config.site import build

    settings = Settings(data_dir=data_dir, database_url=url, threads=threads, audit=os.environ.get("CARNET_AUDIT", "true") != "false")
    carnet = build(settings, reactor=_NoReactor())
    carnet.threadpool.stop()  # we drive `process` ourselves
    return carnet


def endpoint_of(carnet):
    res = carnet.site.resource.children[b"xds"].children[b"registry"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_iti42", description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/carnet_prof")
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--requests", type=int, default=2000, help="measured registrations")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="concurrent callers of process()")
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--cprofile", action="store_true", help="print the top functions (1 thread)")
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--sql", action="store_true", help="print the statements seen")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--switch-interval", type=float, help="sys.setswitchinterval for the run (s)")
    args = ap.parse_args(argv)

    from soap.edge import HttpRequestInfo

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    recreate(args.admin_url, args.database_url)
    try:
        from registry.migrate import upgrade

        upgrade(args.database_url)
        data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "carnet-prof"
        carnet = build_carnet(args.database_url, max(args.threads, 1), data_dir)
        store = carnet.registry.store
        patients = [M.bench_patient(9_100_000 + k) for k in range(args.patients)]
        store.import_patients(patients)
        endpoint = endpoint_of(carnet)
        to = "http://127.0.0.1:8080/xds/registry"
        factories = [M.Iti42Factory(p, to) for p in patients]
        info = HttpRequestInfo(
            method="POST", uri="/xds/registry", path="/xds/registry",
            headers={"content-type": M.SOAP12_CONTENT_TYPE, "host": "127.0.0.1:8080"},
            client_host="127.0.0.1", client_port=40000, host="127.0.0.1:8080", is_secure=False,
        )

        bodies: list[bytes] = []
        answers: list = []

        def one(k: int) -> None:
            body = bodies[k]
            answers.append(endpoint.process(info, io.BytesIO(body), len(body)))

        def check_answers() -> None:
            for answer in answers:
                problem = check_registry_response(answer.status, answer.body)
                if problem:
                    raise RuntimeError(f"registration failed: {problem}\n{answer.body[:2000]!r}")
            answers.clear()

        clock = PhaseClock()
        wrapped = install(clock)
        carnet.engine.connect = clock.wrap("checkout", carnet.engine.connect)  # pool checkout + ping
        sql = SqlCounter(carnet.engine)

        n = args.requests
        # Requests are made before and answers checked after the measured loop.
        bodies.extend(factories[k % len(factories)]() for k in range(args.warmup + n))
        for k in range(args.warmup):
            one(k)
        check_answers()
        del bodies[: args.warmup]
        analyze(args.database_url)
        clock.reset()
        sql.reset()
        pids = backend_pids(args.admin_url, args.database_url)
        pg0 = backend_cpu_s(pids)
        c0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
        prof = cProfile.Profile() if args.cprofile else None
        if args.threads <= 1:
            if prof:
                prof.enable()
            for k in range(n):
                one(k)
            if prof:
                prof.disable()
        else:
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(one, range(n)))
        wall = time.perf_counter() - w0
        driver_cpu = time.thread_time() - c0
        proc_cpu = time.process_time() - p0
        pg_cpu = backend_cpu_s(pids) - pg0
        check_answers()

        print(f"ITI-42 in-process profile: {n} registrations of 1 document, {args.threads} thread(s), "
              f"PostgreSQL {args.database_url.rsplit('@', 1)[-1]}")
        print(f"wrapped: {len(wrapped)} functions")
        total_cpu_ms = proc_cpu / n * 1000
        print(f"\n{'phase':<16}{'CPU ms/reg':>11}{'wall ms/reg':>13}{'calls/reg':>11}")
        order = ["SOAP parse", "ebRIM parse", "validation", "checkout", "look-ups", "plan build",
                 "serialisation", "commit", "audit: build", "audit: syslog", "audit: spool"]
        phased = 0.0
        for ph in order:
            phased += clock.cpu.get(ph, 0.0)
            print(f"{ph:<16}{clock.cpu.get(ph, 0.0) / n * 1000:>11.3f}{clock.wall.get(ph, 0.0) / n * 1000:>13.3f}"
                  f"{clock.calls.get(ph, 0) / n:>11.2f}")
        if args.threads <= 1:
            other = driver_cpu - phased  # driver thread: glue, audit, answer
            print(f"{'other':<16}{other / n * 1000:>11.3f}")
        print(f"{'TOTAL (process)':<16}{total_cpu_ms:>11.3f}{wall / n * 1000:>13.3f}")
        print(f"\nthroughput (in-process, no HTTP): {n / wall:.0f}/s; process CPU {total_cpu_ms:.2f} ms/reg;"
              f" PostgreSQL backends CPU {pg_cpu / n * 1000:.2f} ms/reg")
        print(f"SQL per registration: {sql.statements / n:.2f} statements, {sql.commits / n:.2f} commits, "
              f"{sql.rollbacks / n:.2f} rollbacks, {sql.checkouts / n:.2f} pool checkouts, {sql.pings / n:.2f} pings")
        if args.sql:
            for text, count in sorted(sql.texts.items(), key=lambda kv: -kv[1]):
                print(f"  {count / n:6.2f}  {text}")
        if prof:
            s = io.StringIO()
            st = pstats.Stats(prof, stream=s)
            st.sort_stats("tottime").print_stats(args.top)
            st.sort_stats("cumulative").print_stats(args.top)
            print(s.getvalue())
        carnet.engine.dispose()
    finally:
        if not args.keep_db:
            drop(args.admin_url, args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
