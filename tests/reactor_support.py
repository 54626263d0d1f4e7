"""Run the global Twisted reactor in a background thread for tests that need real sockets.

The reactor starts once per test process (`installSignalHandlers=False`) on a daemon thread and is
stopped at interpreter exit. Tests stay plain blocking code: they schedule reactor work with
`call_in_reactor` (blockingCallFromThread) and talk to servers with any blocking HTTP client.

    from reactor_support import serve, thread_pool

    with thread_pool() as pool, serve(make_resource(pool)) as base_url:
        urllib.request.urlopen(base_url + "/registry?wsdl")

`serve` always stops its listening port, `thread_pool` always stops its pool (a pool never stopped
hangs the process at exit, DESIGN.md §7).
"""

from __future__ import annotations

import atexit
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_lock = threading.Lock()
_thread: threading.Thread | None = None


def reactor() -> Any:
    """The global reactor, running in its background thread."""
    global _thread
    from twisted.internet import reactor as global_reactor

    with _lock:
        if _thread is None:
            started = threading.Event()
            global_reactor.callWhenRunning(started.set)
            _thread = threading.Thread(
                target=global_reactor.run,
                kwargs={"installSignalHandlers": False},
                name="twisted-reactor",
                daemon=True,
            )
            _thread.start()
            if not started.wait(10):
                raise RuntimeError("the Twisted reactor did not start")
            atexit.register(stop_reactor)
    return global_reactor


def stop_reactor(timeout: float = 10.0) -> None:
    """Stop the reactor (registered at exit; the global reactor cannot be restarted afterwards)."""
    from twisted.internet import reactor as global_reactor

    if _thread is not None and _thread.is_alive():
        try:
            global_reactor.callFromThread(global_reactor.stop)
        except Exception:  # noqa: BLE001 - already stopping
            pass
        _thread.join(timeout)


def call_in_reactor(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `fn` on the reactor thread and wait for its result (a Deferred's result is awaited)."""
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(reactor(), fn, *args, **kwargs)


@contextmanager
def thread_pool(min_threads: int = 1, max_threads: int = 4, name: str = "test-pool") -> Iterator[Any]:
    """A started `twisted.python.threadpool.ThreadPool`, stopped on exit."""
    from twisted.python.threadpool import ThreadPool

    reactor()
    pool = ThreadPool(min_threads, max_threads, name=name)
    pool.start()
    try:
        yield pool
    finally:
        pool.stop()


@contextmanager
def listen(factory: Any, *, interface: str = "127.0.0.1", port: int = 0) -> Iterator[Any]:
    """Listen with any protocol factory on a free TCP port; yields the listening port
    (`.getHost().port`); always stops listening."""
    listening = call_in_reactor(lambda: reactor().listenTCP(port, factory, interface=interface))
    try:
        yield listening
    finally:
        call_in_reactor(listening.stopListening)


@contextmanager
def serve(resource: Any, *, interface: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve a `twisted.web` resource (or a ready `Site`) over HTTP; yields 'http://host:port'."""
    from twisted.web.server import Site

    site = resource if isinstance(resource, Site) else Site(resource)
    with listen(site, interface=interface, port=port) as listening:
        yield f"http://{interface}:{listening.getHost().port}"
