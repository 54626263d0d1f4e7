"""A request body handed from the reactor to a worker thread while it arrives (issue 3: MTOM parts
stream through hash, encryption and the blob store *as they arrive*).

Twisted's HTTP server gives a resource the body only once it is complete. For the endpoints that
stream MTOM (`soap.edge.SoapSite`), the request puts a `BodyPipe` in place of its content file as
soon as the headers are in: the reactor thread `write`s each chunk as it comes off the socket, a
worker thread `read`s them (blocking) and feeds the MTOM reader, which feeds the intake.

Memory is bounded: past `high_water` bytes waiting, the pipe pauses the connection's transport
(TCP backpressure to the client); once the worker has taken the queue below `low_water` it resumes
it (through the reactor). The worker that stops before the end (an early fault) `discard`s: the
rest of the body is dropped as it arrives, so the connection stays in step for its next request.
A connection lost mid-body `fail`s the pipe: the worker's next read raises `BodyLost`.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024


class BodyLost(OSError):
    """The connection closed before the whole request body arrived."""


class BodyPipe:
    """Written by the reactor thread (`write`, `finish`, `fail`), read by one worker thread (`read`).
    `pause()` and `resume()` are called on the reactor thread (`resume` through `call_in_reactor`)."""

    def __init__(
        self,
        *,
        pause: Callable[[], None],
        resume: Callable[[], None],
        call_in_reactor: Callable[..., None],
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        self._pause, self._resume, self._call_in_reactor = pause, resume, call_in_reactor
        self._high, self._low = high_water, low_water
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._received = 0
        self._done = False
        self._error: BaseException | None = None
        self._discarding = False
        self._paused = False
        self._cond = threading.Condition()

    # --- reactor side -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            self._received += len(data)
            if self._discarding or self._error is not None:
                return
            self._chunks.append(bytes(data))
            self._buffered += len(data)
            self._cond.notify()
            pause = self._buffered > self._high and not self._paused
            if pause:
                self._paused = True
        if pause:
            self._pause()

    def finish(self) -> None:
        """The whole body has arrived."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, reason: object = None) -> None:
        """The connection was lost: the worker's next read raises BodyLost (unless it had it all)."""
        with self._cond:
            if not self._done and self._error is None:
                self._error = BodyLost(f"the connection closed before the request body was complete: {reason}")
            self._cond.notify_all()

    @property
    def received(self) -> int:
        """Bytes received so far (including those discarded)."""
        return self._received

    # Twisted's Request does `content.tell()` and `content.seek(0, 0)` once the body is complete, and
    # may close it.
    def tell(self) -> int:
        return self._received

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("a BodyPipe can only be rewound to where it is read from")
        return 0

    def close(self) -> None:
        self.discard()

    # --- worker side -----------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (at least one unless the body is complete: b""), waiting for them."""
        with self._cond:
            while not self._chunks and not self._done and self._error is None:
                self._cond.wait()
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                return b""
            out = []
            size = 0
            while self._chunks and (n < 0 or size < n):
                chunk = self._chunks.popleft()
                if n >= 0 and size + len(chunk) > n:
                    keep = n - size
                    self._chunks.appendleft(chunk[keep:])
                    chunk = chunk[:keep]
                out.append(chunk)
                size += len(chunk)
            self._buffered -= size
            resume = self._paused and self._buffered < self._low
            if resume:
                self._paused = False
        if resume:
            self._call_in_reactor(self._resume)
        return b"".join(out)

    def discard(self) -> None:
        """The reader stops: what is queued, and whatever arrives from now on, is dropped."""
        with self._cond:
            self._discarding = True
            self._chunks.clear()
            self._buffered = 0
            resume = self._paused
            self._paused = False
        if resume:
            self._call_in_reactor(self._resume)
