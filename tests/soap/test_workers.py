"""soap.workers.WorkerPool: what deferToThreadPool needs of a pool, and a clean stop."""

from __future__ import annotations

import threading

import pytest
from twisted.python.failure import Failure

from reactor_support import call_in_reactor, reactor
from soap.workers import WorkerPool


def test_calls_run_on_the_workers_and_report_their_outcome():
    pool = WorkerPool(3, name="t")
    pool.start()
    try:
        results: list = []
        done = threading.Semaphore(0)

        def on_result(ok, value):
            results.append((ok, value, threading.current_thread().name))
            done.release()

        pool.callInThreadWithCallback(on_result, lambda a, b=0: a + b, 2, b=3)
        pool.callInThreadWithCallback(on_result, lambda: 1 / 0)
        assert done.acquire(timeout=5) and done.acquire(timeout=5)
    finally:
        pool.stop()
    by_ok = {ok: (value, name) for ok, value, name in results}
    assert by_ok[True][0] == 5 and by_ok[True][1].startswith("t-")
    failure = by_ok[False][0]
    assert isinstance(failure, Failure) and failure.check(ZeroDivisionError)


def test_stop_runs_what_was_queued_then_joins_every_thread():
    pool = WorkerPool(2, name="drain")
    pool.start()
    seen: list[int] = []
    gate = threading.Event()
    pool.callInThread(gate.wait, 5)
    pool.callInThread(gate.wait, 5)
    for k in range(5):
        pool.callInThread(seen.append, k)
    gate.set()
    pool.stop(timeout=5)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert not [t for t in threading.enumerate() if t.name.startswith("drain-")]
    with pytest.raises(RuntimeError):
        pool.callInThread(seen.append, 9)


def test_a_broken_callback_does_not_kill_the_worker():
    pool = WorkerPool(1, name="cb")
    pool.start()
    try:
        done = threading.Event()
        pool.callInThreadWithCallback(lambda ok, v: 1 / 0, lambda: None)
        pool.callInThread(done.set)
        assert done.wait(5)
    finally:
        pool.stop()


def test_defer_to_thread_pool_delivers_the_result_on_the_reactor():
    from twisted.internet.threads import deferToThreadPool

    pool = WorkerPool(2, name="defer")
    pool.start()
    try:
        value = call_in_reactor(lambda: deferToThreadPool(reactor(), pool, lambda: threading.current_thread().name))
        assert value.startswith("defer-")
    finally:
        pool.stop()


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        WorkerPool(0)


def test_tune_malloc_is_idempotent_and_optional(monkeypatch):
    import sys

    from soap import workers

    first = workers.tune_malloc()
    assert workers.tune_malloc() is first  # once per process, same answer
    if sys.platform.startswith("linux") and first:
        assert workers._malloc_tuned
    called = []
    monkeypatch.setattr(workers, "tune_malloc", lambda: called.append(1))
    pool = WorkerPool(1, name="no-tuning", malloc_tuning=False)
    pool.start()
    pool.stop()
    assert called == []
    pool = WorkerPool(1, name="tuning")
    pool.start()
    pool.stop()
    assert called == [1]
