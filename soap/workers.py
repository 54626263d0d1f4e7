"""A fixed pool of worker threads for the blocking part of each request (database, handlers).

It offers what `twisted.internet.threads.deferToThreadPool` needs of a pool
(`callInThreadWithCallback`), plus `start`/`stop`, and nothing else: one `queue.SimpleQueue`,
N threads started at once. `twisted.python.threadpool.ThreadPool` does the same job with a
coordinator thread, per-call context copies and worker bookkeeping, which cost about 40 µs of
CPU per call here; under the GIL every microsecond of the edge is a microsecond less for the
handlers (an ITI-42 registration is ~1.5 ms of CPU in all). No Twisted import: the reactor
stays the caller's business (the callback given to `callInThreadWithCallback` is called on the
worker thread; `deferToThreadPool` passes one that hands the result to the reactor).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import sys
import threading
from typing import Any, Callable

log = logging.getLogger("carnet.workers")

_STOP = object()

# glibc's allocator hands out each block above its mmap threshold (128 KiB, raised only as such
# blocks are freed) as fresh pages, and gives the top of its heap back to the kernel above its trim
# threshold (128 KiB): a 1 MB document then costs a page fault per 4 KiB page at every copy along
# its way (blob read, decryption, MTOM body), about 0.5 ms of CPU per MB and copy on a VM, i.e.
# most of an ITI-43 retrieve. Above these thresholds, blocks of up to a few MB are reused from the
# heap instead. Memory kept after a burst: at most TRIM_THRESHOLD free bytes per malloc arena.
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_malloc_tuned = False


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process (see above); once per process,
    unless the environment already chose (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
    GLIBC_TUNABLES=glibc.malloc.*). False where there is no
    glibc (musl, macOS) or it refused: nothing changes then."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    chosen = "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    )
    if chosen or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    _malloc_tuned = ok
    return ok


class WorkerPool:
    """`size` worker threads named `name-k`, started by `start()`, drained and joined by
    `stop()` (calls queued before `stop()` still run). `start()` also applies `tune_malloc()`
    to the process (the pool's threads are where multi-MB buffers come and go), unless
    `malloc_tuning=False`."""

    def __init__(self, size: int, name: str = "workers", *, malloc_tuning: bool = True) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.size = size
        self.name = name
        self.malloc_tuning = malloc_tuning
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.started = False

    def start(self) -> None:
        with self._lock:
            if self.started:
                return
            self.started = True
            if self.malloc_tuning:
                tune_malloc()
            self._threads = [
                threading.Thread(target=self._work, name=f"{self.name}-{k}", daemon=True)
                for k in range(self.size)
            ]
            for t in self._threads:
                t.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            if not self.started:
                return
            self.started = False
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def callInThreadWithCallback(  # noqa: N802 - the name deferToThreadPool calls
        self, onResult: Callable[[bool, Any], None] | None, func: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        """Run `func(*args, **kw)` on a worker; then `onResult(True, result)` or
        `onResult(False, failure)` on that worker (a twisted Failure when Twisted is there,
        as `ThreadPool` does, else the exception)."""
        if not self.started:
            raise RuntimeError(f"worker pool {self.name} is not running")
        self._queue.put((onResult, func, args, kw))

    def callInThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:  # noqa: N802
        self.callInThreadWithCallback(None, func, *args, **kw)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            on_result, func, args, kw = item
            try:
                result = func(*args, **kw)
                ok = True
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, like ThreadPool
                ok, result = False, _failure(exc)
            if on_result is None:
                if not ok:
                    log.error("worker call failed: %r", result)
                continue
            try:
                on_result(ok, result)
            except BaseException:  # noqa: BLE001 - a broken callback must not kill the worker
                log.exception("worker pool callback failed")
            del item, func, args, kw, result


def _failure(exc: BaseException) -> Any:
    try:
        from twisted.python.failure import Failure
    except ImportError:  # pragma: no cover - Twisted is a dependency of the edge
        return exc
    return Failure(exc)
