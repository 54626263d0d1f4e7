"""BatchedIngest: batches, the bounded queue pausing stream connections, retry after a failed
batch (nothing lost), UDP drops counted when full. A fake store and a fake pool hold the batches
so the test decides when each one finishes (no sockets, no sleeps)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from atna.arr.receiver import BatchedIngest, SyslogDatagramProtocol, SyslogStreamProtocol
from atna.arr.store import IngestResult
from atna.syslog import octet_frame


class FakeReactor(Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class HeldPool:
    """A thread pool that runs each job only when the test says so."""

    def __init__(self):
        self.jobs = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.jobs.append((on_result, f, args, kwargs))

    def run_next(self):
        on_result, f, args, kwargs = self.jobs.pop(0)
        try:
            result = f(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the Deferred like a real pool
            on_result(False, Failure(exc))
        else:
            on_result(True, result)


class FakeStore:
    def __init__(self, fail_first: int = 0):
        self.batches: list[list[bytes]] = []
        self.fail_first = fail_first

    def ingest(self, raws, *, peers=None):
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("database down")
        self.batches.append(list(raws))
        return IngestResult(stored=len(raws))


class FakeTransport:
    def __init__(self):
        self.paused = 0
        self.resumed = 0
        self.closed = False

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.resumed += 1

    def loseConnection(self):
        self.closed = True

    def getPeer(self):
        class Peer:
            host = "192.0.2.7"

        return Peer()


def _connection(ingest):
    proto = SyslogStreamProtocol(ingest, 1024)
    proto.transport = FakeTransport()
    proto.connectionMade()
    return proto


def test_a_full_queue_pauses_the_connection_until_batches_are_stored():
    reactor, pool, store = FakeReactor(), HeldPool(), FakeStore()
    ingest = BatchedIngest(store, reactor=reactor, threadpool=pool, max_batch=2, max_in_flight=1, high_water=4,
                           low_water=1)
    conn = _connection(ingest)
    conn.dataReceived(b"".join(octet_frame(b"<13>1 - - - - - - m%d" % i) for i in range(5)))
    assert conn.transport.paused == 1 and ingest.backlog == 5
    assert len(pool.jobs) == 1  # one batch in flight, the others wait
    pool.run_next()
    assert conn.transport.resumed == 0  # 3 still waiting > low water
    pool.run_next()
    assert conn.transport.resumed == 1  # 1 left: at the low-water mark, reading resumes
    reactor.advance(1)  # the last, partial batch (flushed at once or by its timer)
    pool.run_next()
    assert conn.transport.resumed == 1 and not pool.jobs
    assert [len(b) for b in store.batches] == [2, 2, 1]
    assert ingest.counters.stored == 5 and ingest.backlog == 0


def test_a_failed_batch_is_retried_and_nothing_is_lost():
    reactor, pool, store = FakeReactor(), HeldPool(), FakeStore(fail_first=2)
    ingest = BatchedIngest(store, reactor=reactor, threadpool=pool, max_batch=10, retry_delays=(1.0, 5.0))
    conn = _connection(ingest)
    conn.dataReceived(b"".join(octet_frame(b"<13>1 - - - - - - m%d" % i) for i in range(3)))
    reactor.advance(0.1)
    pool.run_next()  # fails
    assert ingest.counters.failed_batches == 1 and not pool.jobs
    reactor.advance(1.0)
    pool.run_next()  # fails again
    reactor.advance(1.0)
    assert not pool.jobs  # the second delay is longer
    reactor.advance(4.0)
    pool.run_next()
    assert store.batches == [[b"<13>1 - - - - - - m0", b"<13>1 - - - - - - m1", b"<13>1 - - - - - - m2"]]
    assert ingest.counters.stored == 3


def test_udp_datagrams_over_the_bound_are_dropped_and_counted():
    reactor, pool, store = FakeReactor(), HeldPool(), FakeStore()
    ingest = BatchedIngest(store, reactor=reactor, threadpool=pool, max_batch=100, high_water=2)
    udp = SyslogDatagramProtocol(ingest)
    for i in range(4):
        udp.datagramReceived(b"<13>1 - - - - - - m%d\n" % i, ("192.0.2.8", 514))
    assert (ingest.counters.received, ingest.counters.dropped) == (2, 2)
    reactor.advance(1)
    pool.run_next()
    assert store.batches == [[b"<13>1 - - - - - - m0", b"<13>1 - - - - - - m1"]]


def test_a_broken_frame_length_closes_only_that_connection():
    reactor, pool, store = FakeReactor(), HeldPool(), FakeStore()
    ingest = BatchedIngest(store, reactor=reactor, threadpool=pool)
    bad, good = _connection(ingest), _connection(ingest)
    bad.dataReceived(b"abc <13>1")
    good.dataReceived(octet_frame(b"<13>1 - - - - - - ok"))
    assert bad.transport.closed and not good.transport.closed
    assert ingest.counters.framing_errors == 1 and ingest.counters.received == 1
