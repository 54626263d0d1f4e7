"""Child processes of the benchmarks: free ports, servers in their own process group (always
stopped), the `carnet` command, waiting until a server answers, and the PostgreSQL databases
the benchmarks create and drop."""

from __future__ import annotations

import os
import urllib.parse
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server child in its own process group; `stop()` always ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 stdout_pipe: bool = False, stdin_pipe: bool = False) -> None:
        self.name, self.log_path = name, log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE if stdin_pipe else None,
            stdout=subprocess.PIPE if stdout_pipe else self.log, stderr=self.log,
            start_new_session=True, env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.alive():
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def listening_port(srv: Process, what: str) -> int:
    """The port a child (a floor) announces on its first stdout line, `LISTENING <port>`; the child is
    stopped if it says anything else."""
    line = srv.proc.stdout.readline().decode().strip()
    if not line.startswith("LISTENING "):
        srv.stop()
        raise RuntimeError(f"{what} did not start: {line!r}\n{srv.log_tail()}")
    return int(line.split()[1])


def carnet_argv() -> list[str]:
    script = Path(sys.executable).parent / "carnet"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from config.cli import main; sys.exit(main())"]


def carnet_command(args: list[str], env: dict | None = None) -> str:
    done = subprocess.run(carnet_argv() + args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"carnet {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()


def wait_ready(url: str, srv: Process, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not srv.alive():
            raise RuntimeError(f"{srv.name} exited ({srv.proc.returncode}):\n{srv.log_tail()}")
        try:
            with urllib.request.urlopen(url + "?wsdl", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{srv.name} not ready after {timeout:.0f} s:\n{srv.log_tail()}")


def wait_for_line(log_path: Path, text: bytes, srv: "Process", timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_bytes():
        if not srv.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{srv.name}: no {text.decode()!r} in its log:\n{srv.log_tail()}")
        time.sleep(0.1)


def start_carnet_server(argv_tail: list[str], path: str, log_path: Path,
                        env: dict | None = None, name: str = "carnet") -> tuple[Process, str]:
    """`carnet serve` on 127.0.0.1 and a free port, ready when `path?wsdl` answers; returns the
    process and the endpoint URL (the process is stopped if it never becomes ready)."""
    port = free_port()
    argv = carnet_argv() + ["serve", "--host", "127.0.0.1", "--http-port", str(port), *argv_tail]
    srv = Process(name, argv, log_path, env=env)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        wait_ready(url, srv)
        workers = int((env or {}).get("CARNET_WORKERS") or os.environ.get("CARNET_WORKERS") or 1)
        if workers > 1:  # keep-alive clients stay where they land: wait until every process accepts
            wait_for_line(log_path, b"serving processes are accepting", srv)
    except BaseException:
        srv.stop()
        raise
    return srv, url


# Where Debian's and most builds' servers put their Unix socket (`.s.PGSQL.<port>`).
PG_SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")
PG_LOCAL_SOCKET = True  # `python -m bench --pg-tcp` sets it False


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url`. A server on this machine
    (127.0.0.1, localhost) is reached through its Unix socket when it has one, as a node would
    reach a PostgreSQL beside it: over TCP loopback, 2-3 % of the ITI-18 queries (1.27 MB of
    fragments each) waited 25-40 ms with PostgreSQL pausing in the middle of its answer, against
    none of 900 through the socket (tcpdump; `--pg-tcp` measures over TCP)."""
    from bench.dataset import libpq_url

    base = libpq_url(admin_url)
    parts = urllib.parse.urlsplit(base)
    if PG_LOCAL_SOCKET and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        port = parts.port or 5432
        for directory in PG_SOCKET_DIRS:
            if os.path.exists(os.path.join(directory, f".s.PGSQL.{port}")):
                user = urllib.parse.quote(parts.username or "")
                return f"postgresql://{user}@/{name}?host={urllib.parse.quote(directory)}&port={port}"
    return f"{base.rsplit('/', 1)[0]}/{name}"


def recreate_database(admin_url: str, name: str) -> str:
    """Drop and create the PostgreSQL database `name` (the admin database is only used for that);
    returns its URL."""
    import psycopg

    from bench.dataset import libpq_url

    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    from bench.dataset import libpq_url

    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
