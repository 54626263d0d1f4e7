"""Even spreading of HTTP connections over the serving processes of `carnet serve --workers N`.

The processes accept on one shared listening socket. The kernel wakes whichever process it likes,
and Twisted accepts up to dozens of connections per wake-up, so a burst of keep-alive clients lands
unevenly and stays where it landed. Measured with the bench's 8 ITI-42 clients on two processes:
506 registrations/s when the clients happened to split 4/4, 399/s in the next run on the same
build, when they did not (one process saturated its core, the other half idle).

Least connections, without a balancer process: each serving process counts its open HTTP
connections in a small table shared by all of them (`ConnectionTable`, one slot per process: its
open connections and a heartbeat), accepts one connection per wake-up, and stops accepting while
it holds more connections than the least loaded live process (`AcceptBalancer`). So two processes
never differ by more than one connection, whatever order the connections come in: 8 clients on
two processes are 4 and 4. A process whose heartbeat is older than `STALE_MS` (exited, or stuck)
is left out of the comparison, so it can never stop the others from accepting.

The table is an unlinked temporary file the first process creates and passes to the others as a
file descriptor (`--balance-fd`); each process writes only its own slot.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
from typing import Any, Callable

SLOT_WORDS = 2  # per process: open connections, heartbeat (ms on CLOCK_MONOTONIC, system-wide)
_WORD = struct.calcsize("q")
STALE_MS = 1000  # a slot not refreshed for this long belongs to no live process
POLL_S = 0.005  # how often a process refreshes its heartbeat and looks at the others


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class ConnectionTable:
    """`slots` slots of (open connections, heartbeat) in shared memory, readable by every process."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd = fd
        self.slots = slots
        self._map = mmap.mmap(fd, slots * SLOT_WORDS * _WORD)
        self._words = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, slots: int) -> "ConnectionTable":
        """A new zeroed table in an unlinked file: nothing to clean up, gone with the last process."""
        f = tempfile.TemporaryFile(prefix="carnet-connections-")
        fd = os.dup(f.fileno())
        f.close()
        os.ftruncate(fd, slots * SLOT_WORDS * _WORD)
        return cls(fd, slots)

    @classmethod
    def attach(cls, fd: int) -> "ConnectionTable":
        """The table another process created (`create`), from its inherited descriptor."""
        return cls(fd, os.fstat(fd).st_size // (SLOT_WORDS * _WORD))

    def set(self, slot: int, connections: int, heartbeat_ms: int) -> None:
        base = slot * SLOT_WORDS
        self._words[base] = connections
        self._words[base + 1] = heartbeat_ms

    def connections(self, slot: int) -> int:
        return self._words[slot * SLOT_WORDS]

    def least_live(self, now_ms: int) -> int | None:
        """The fewest open connections of any process that refreshed its slot within STALE_MS."""
        words = self._words
        live = [
            words[k * SLOT_WORDS] for k in range(self.slots)
            if now_ms - words[k * SLOT_WORDS + 1] <= STALE_MS
        ]
        return min(live) if live else None

    def close(self) -> None:
        self._words.release()
        self._map.close()


class AcceptBalancer:
    """Gates one process's listening `port` by its share of the open connections (module docstring).

    `install(factory)` makes the factory count the connections it builds; `start()` begins gating
    (and refreshing the heartbeat every `POLL_S`); `stop()` ends it and leaves the port accepting."""

    def __init__(self, reactor: Any, port: Any, table: ConnectionTable, slot: int,
                 clock: Callable[[], int] = _now_ms) -> None:
        self.reactor = reactor
        self.port = port
        self.table = table
        self.slot = slot
        self.clock = clock
        self.open = 0
        self.accepting: bool | None = True  # None: not known (set by the next check)
        self._gating = False
        self._loop: Any = None
        # One accept per wake-up: Twisted accepts up to `numberAccepts` connections in a row (and grows
        # that number under load), before this process could see that it has its share.
        do_read = port.doRead

        def doRead() -> Any:  # noqa: N802 - Twisted's name
            port.numberAccepts = 1
            return do_read()

        port.doRead = doRead

    def install(self, factory: Any) -> Any:
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:  # noqa: N802 - Twisted's name
            protocol = build(addr)
            if protocol is None:
                return None
            lost = protocol.connectionLost

            def connectionLost(reason: Any) -> Any:  # noqa: N802
                try:
                    return lost(reason)
                finally:
                    self.open -= 1
                    self.check()

            protocol.connectionLost = connectionLost
            self.open += 1
            self.check()
            return protocol

        factory.buildProtocol = buildProtocol
        return factory

    def start(self) -> None:
        """Gate from now on; the port's reading state is set by the first check, whatever it was."""
        from twisted.internet.task import LoopingCall

        self._gating = True
        self.accepting = None
        self.check()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(POLL_S, now=False)

    def stop(self) -> None:
        self._gating = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._set_accepting(True)

    def check(self) -> None:
        """Publish this process's count and heartbeat; accept only while no live process has fewer."""
        now = self.clock()
        self.table.set(self.slot, self.open, now)
        if self._gating:
            least = self.table.least_live(now)
            self._set_accepting(least is None or self.open <= least)

    def _set_accepting(self, accepting: bool) -> None:
        if accepting is self.accepting:
            return
        self.accepting = accepting
        if accepting:
            self.port.startReading()
        else:
            self.port.stopReading()
