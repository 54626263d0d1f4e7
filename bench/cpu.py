"""Where a benchmark's CPU goes: CPU seconds (user + system) of each process taking part, over one
measured load, divided by the requests served.

On the bench's 2-core machine the load generator, the server and PostgreSQL share the cores, and
the VM's speed changes two- to threefold within minutes, so that a throughput alone does not say
whether the server got slower or the machine did. The split does: it shows which process spends
what per request in the same minutes (`psutil`, the processes' own counters; nothing is sampled).

    result = run_load(..., meter=CpuMeter(server_pid))   # started and stopped around the measured requests
    print(result.cpu.summary())
"""

from __future__ import annotations

import os
import time

import attrs
import psutil

# How the roles are told apart: `carnet serve --workers N` starts its serving processes and, with
# auditing on, one audit delivery process (`--audit-sender`, config.cli) as its descendants.
SENDER_FLAG = "--audit-sender"


@attrs.frozen
class CpuSplit:
    """CPU ms per request of each role, and how busy the machine's cores were meanwhile."""

    requests: int
    seconds: float
    ms_per_request: dict[str, float]  # role → CPU ms per request
    cores_busy: float  # all processes of the machine, 0..1 of every core
    processes: dict[str, int]  # role → number of processes seen

    @property
    def total_ms(self) -> float:
        return sum(self.ms_per_request.values())

    def summary(self) -> str:
        parts = ", ".join(
            f"{role} {ms:.2f}" + (f" ({self.processes[role]} processes)" if role == "server" and self.processes[role] > 1 else "")
            for role, ms in self.ms_per_request.items()
        )
        return (f"CPU ms per request: {parts}; all {self.total_ms:.2f} ms;"
                f" the cores {self.cores_busy * 100:.0f} % busy")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _role_of(proc: psutil.Process, server_pid: int | None) -> str | None:
    """'server', 'audit sender', 'PostgreSQL', 'load generator' or None (not part of the run)."""
    if proc.pid == os.getpid():
        return "load generator"
    try:
        name = proc.name()
        if name.startswith("postgres"):
            return "PostgreSQL"
        if server_pid is None:
            return None
        if proc.pid == server_pid or server_pid in {p.pid for p in proc.parents()}:
            return "audit sender" if SENDER_FLAG in proc.cmdline() else "server"
    except psutil.Error:
        return None
    return None


class CpuMeter:
    """CPU of the server (the process `server_pid` and its descendants), of PostgreSQL's processes and
    of this process (the load generator's threads) between `start()` and `stop(requests)`."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._before: dict[int, float] = {}  # pid → CPU seconds at start()
        self._t0 = 0.0
        self._machine0 = 0.0

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        out = {}
        for proc in psutil.process_iter():
            role = _role_of(proc, self.server_pid)
            if role is None:
                continue
            try:
                out[proc.pid] = (role, _cpu(proc))
            except psutil.Error:  # ended meanwhile
                continue
        return out

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)

    def start(self) -> None:
        self._before = {pid: cpu for pid, (_role, cpu) in self._snapshot().items()}
        self._machine0 = self._machine()
        self._t0 = time.perf_counter()

    def stop(self, requests: int) -> CpuSplit:
        seconds = time.perf_counter() - self._t0
        machine = self._machine() - self._machine0
        after = self._snapshot()
        spent: dict[str, float] = {}
        counts: dict[str, int] = {}
        for pid, (role, cpu) in after.items():
            # a process that started during the load counts from zero
            spent[role] = spent.get(role, 0.0) + max(0.0, cpu - self._before.get(pid, 0.0))
            counts[role] = counts.get(role, 0) + 1
        order = ("server", "audit sender", "PostgreSQL", "load generator")
        per = {role: spent[role] * 1000 / requests for role in order if role in spent and requests}
        cores = psutil.cpu_count() or 1
        return CpuSplit(requests, seconds, per, machine / (seconds * cores) if seconds else 0.0,
                        {role: counts[role] for role in per})
