"""Child processes of the benchmarks: free ports, servers in their own process group (always
stopped), the `carnet` command, and waiting until a server answers."""

from __future__ import annotations

import os
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
                 stdout_pipe: bool = False) -> None:
        self.name, self.log_path = name, log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE if stdout_pipe else self.log, stderr=self.log,
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


def start_carnet_server(argv_tail: list[str], path: str, log_path: Path,
                        env: dict | None = None) -> tuple[Process, str]:
    """`carnet serve` on 127.0.0.1 and a free port, ready when `path?wsdl` answers; returns the
    process and the endpoint URL (the process is stopped if it never becomes ready)."""
    port = free_port()
    argv = carnet_argv() + ["serve", "--host", "127.0.0.1", "--http-port", str(port), *argv_tail]
    srv = Process("carnet", argv, log_path, env=env)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        wait_ready(url, srv)
    except BaseException:
        srv.stop()
        raise
    return srv, url
