"""atna.spool: one write connection per Spool (appends and the sender's writes never wait for SQLite's lock
within a process), `append_many` (one transaction, bounds event by event), counters exact across processes
(two Spool objects on one file stand for two processes: each has its own connections), and
`SpoolingAuditSink.record_many`."""

from __future__ import annotations

import threading
import uuid

import pytest

from atna.sender import AuditSender, Backoff, Destination, SpoolingAuditSink
from atna.spool import Spool, SpoolError, SpoolFullError
from atna.syslog import parse_message
from reactor_support import call_in_reactor, reactor
from registry.ports import AuditRecord, TransactionContext
from support import wait_until

from atna_transport.transport_support import XML


def _record(transaction: str) -> AuditRecord:
    return AuditRecord(transaction, "success", TransactionContext(transaction))


def _builder(record, node, now):
    if record.transaction == "broken":
        raise ValueError("this builder cannot audit that")
    if record.transaction == "merge":  # two messages, as an ITI-8 merge
        return (XML.replace(b"Query", b"merge-D"), XML.replace(b"Query", b"merge-U"))
    return XML.replace(b"Query", record.transaction.encode())


def _payloads(spool: Spool) -> list[bytes]:
    return [parse_message(e.payload).payload for e in spool.read_after(0, limit=10_000, max_bytes=1 << 30)]


# ---------------------------------------------------------------------------------------------------
# one writer per Spool


def test_appends_and_a_draining_sender_never_wait_for_sqlite_locks(tmp_path):
    """busy_timeout=0: any write of this process that had to wait for SQLite's write lock would fail with
    "database is locked" at once. Eight threads append while the sender reads, delivers and acknowledges
    (purging) concurrently: nothing fails, every event arrives once, in each thread's order."""
    received: list[bytes] = []
    batches: list[int] = []
    lock = threading.Lock()

    def deliver(batch: list[bytes]) -> None:
        with lock:
            received.extend(batch)
            batches.append(len(batch))

    errors: list[BaseException] = []
    with Spool(tmp_path / "spool.db", busy_timeout=0) as spool:
        sender = AuditSender(reactor(), spool, [Destination("arr", "local", deliver=deliver)],
                             backoff=Backoff(0.05, 2.0, 0.5), poll_interval=0.01, linger=0, batch_size=20)
        call_in_reactor(sender.start)
        try:
            def work(t: int) -> None:
                try:
                    for i in range(150):
                        spool.append(f"t{t}-{i}", f"t{t}-{i}".encode())
                        sender.wake_threadsafe()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            wait_until(lambda: spool.metrics()["depth"] == 0, what="the spool to drain")
        finally:
            call_in_reactor(sender.stop)
        m = spool.metrics()
    assert not errors
    assert m["appended"] == 1200 and m["delivered"] == {"arr": 1200} and m["failed_attempts"] == {}
    assert len(batches) > 1  # the sender acknowledged (and purged) several times while appends went on
    assert sorted(received) == sorted(f"t{t}-{i}".encode() for t in range(8) for i in range(150))
    for t in range(8):
        mine = [r for r in received if r.startswith(f"t{t}-".encode())]
        assert mine == [f"t{t}-{i}".encode() for i in range(150)]


def test_concurrent_appends_share_commits(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        start = threading.Barrier(8)

        def work(t: int) -> None:
            start.wait()
            for i in range(40):
                spool.append(f"t{t}-{i}", b"m")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        m = spool.metrics()
    assert m["appended"] == 320 and m["depth"] == 320
    assert 1 <= m["append_commits"] <= 320


# ---------------------------------------------------------------------------------------------------
# append_many


def test_append_many_commits_its_events_together_in_order(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        first = spool.append("before", b"0")
        seqs = spool.append_many([(f"e{i}", f"payload {i}".encode()) for i in range(600)])  # > one INSERT
        assert spool.append_many([]) == []
        m = spool.metrics()
        events = spool.read_after(first, limit=1000, max_bytes=1 << 30)
    assert seqs == [e.seq for e in events] and seqs == list(range(first + 1, first + 601))
    assert [(e.event_id, e.payload) for e in events] == [(f"e{i}", f"payload {i}".encode()) for i in range(600)]
    assert (m["appended"], m["append_commits"], m["depth"]) == (601, 2, 601)
    assert m["bytes"] == 1 + sum(len(f"payload {i}") for i in range(600))


def test_append_many_is_all_or_nothing_on_a_storage_failure(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        spool.append("a", b"x")
        with pytest.raises(SpoolError) as raised:
            spool.append_many([("b", b"yy"), ("c", b"zzz"), ("a", b"duplicate event id")])
        assert not isinstance(raised.value, SpoolFullError)
        assert [e.event_id for e in spool.read_after(0)] == ["a"]
        assert (spool.metrics()["depth"], spool.metrics()["bytes"]) == (1, 1)
        # the spool goes on, its counters exact
        spool.append_many([("b", b"yy"), ("c", b"zzz")])
        assert [e.event_id for e in spool.read_after(0)] == ["a", "b", "c"]
        assert (spool.metrics()["depth"], spool.metrics()["bytes"]) == (3, 6)


def test_append_many_appends_what_fits_then_raises(tmp_path, caplog):
    with Spool(tmp_path / "events.db", max_events=5) as spool:
        spool.append_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
        with pytest.raises(SpoolFullError) as raised:
            spool.append_many([("d", b"4"), ("e", b"5"), ("f", b"6"), ("g", b"7")])
        kept = spool.read_after(0)
        assert [e.event_id for e in kept] == ["a", "b", "c", "d", "e"]
        assert raised.value.seqs == [kept[3].seq, kept[4].seq, None, None]
        m = spool.metrics()
        assert (m["depth"], m["appended"], m["refused"]) == (5, 5, 2)
        assert any("SECURITY ALERT" in r.getMessage() for r in caplog.records)
    # bytes: an event too big for the room left is refused, a smaller one after it still fits
    with Spool(tmp_path / "bytes.db", max_bytes=10) as spool:
        with pytest.raises(SpoolFullError) as raised:
            spool.append_many([("a", b"x" * 4), ("b", b"x" * 7), ("c", b"x" * 6)])
        assert [e.event_id for e in spool.read_after(0)] == ["a", "c"]
        assert raised.value.seqs[1] is None and None not in (raised.value.seqs[0], raised.value.seqs[2])
        assert spool.metrics()["bytes"] == 10


def test_single_append_refused_carries_no_seq(tmp_path):
    with Spool(tmp_path / "spool.db", max_events=1) as spool:
        spool.append("a", b"1")
        with pytest.raises(SpoolFullError) as raised:
            spool.append("b", b"2")
        assert raised.value.seqs == [None]


# ---------------------------------------------------------------------------------------------------
# bounds exact across processes


def test_bounds_are_exact_across_processes(tmp_path):
    path = tmp_path / "spool.db"
    with Spool(path, max_events=5) as one, Spool(path, max_events=5) as other:
        one.append_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
        # `other` last saw an empty spool: it must count the three events `one` appended
        with pytest.raises(SpoolFullError) as raised:
            other.append_many([("d", b"4"), ("e", b"5"), ("f", b"6")])
        assert raised.value.seqs[2] is None
        assert one.metrics()["depth"] == other.metrics()["depth"] == 5
        with pytest.raises(SpoolFullError):
            one.append("g", b"7")
        # `one` delivers and purges three; `other` last saw a full spool: it must see the room
        one.set_destinations(["arr"])
        one.acknowledge("arr", one.read_after(0)[2].seq, 3)
        assert other.append_many([("h", b"8"), ("i", b"9"), ("j", b"10")])
        with pytest.raises(SpoolFullError):
            one.append("k", b"11")
        assert [e.event_id for e in other.read_after(0)] == ["d", "e", "h", "i", "j"]
        m = one.metrics()
        assert (m["depth"], m["bytes"]) == (5, 1 + 1 + 1 + 1 + 2)
    with Spool(path, max_events=5) as reopened:
        assert (reopened.metrics()["depth"], reopened.metrics()["bytes"]) == (5, 6)


# ---------------------------------------------------------------------------------------------------
# SpoolingAuditSink.record_many


def test_record_many_spools_every_event_in_one_transaction(tmp_path):
    woken: list[int] = []
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test", on_spooled=lambda: woken.append(1))
        sink.record_many([_record("ITI-8"), _record("merge"), _record("ITI-9")])
        m = spool.metrics()
        events = spool.read_after(0)
        assert _payloads(spool) == [
            XML.replace(b"Query", x) for x in (b"ITI-8", b"merge-D", b"merge-U", b"ITI-9")
        ]
    assert (m["appended"], m["append_commits"]) == (4, 1)
    assert len({e.event_id for e in events}) == 4
    assert all(parse_message(e.payload).sd_param("carnet@32473", "eventId") == e.event_id for e in events)
    # time-ordered ids (registry.uuid7): the spool's and the ARR's unique indexes stay local
    assert all(uuid.UUID(e.event_id).version == 7 and str(uuid.UUID(e.event_id)) == e.event_id for e in events)
    assert woken == [1]
    sink.record_many([])  # nothing to spool: no transaction, no wake-up
    assert woken == [1]


def test_record_many_spools_the_others_when_one_builder_fails(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test")
        with pytest.raises(ValueError, match="cannot audit"):
            sink.record_many([_record("ITI-8"), _record("broken"), _record("ITI-9")])
        assert _payloads(spool) == [XML.replace(b"Query", b"ITI-8"), XML.replace(b"Query", b"ITI-9")]


def test_record_many_on_a_full_spool_keeps_what_fits_and_raises(tmp_path):
    woken: list[int] = []
    with Spool(tmp_path / "spool.db", max_events=2) as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test", on_spooled=lambda: woken.append(1))
        with pytest.raises(SpoolFullError) as raised:
            sink.record_many([_record("ITI-8"), _record("ITI-9"), _record("ITI-10")])
        assert raised.value.seqs[2] is None
        assert _payloads(spool) == [XML.replace(b"Query", b"ITI-8"), XML.replace(b"Query", b"ITI-9")]
        assert spool.metrics()["refused"] == 1
    assert woken == [1]  # the two that fit go out


def test_record_of_a_merge_is_one_transaction(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        SpoolingAuditSink(spool, _builder, hostname="carnet.test").record(_record("merge"))
        m = spool.metrics()
    assert (m["appended"], m["append_commits"]) == (2, 1)


def test_appends_commit_with_full_synchronous_after_the_senders_writes(tmp_path):
    """The sender's writes share the connection with `synchronous=NORMAL`; an append after them is committed
    with the configured FULL again (the durability contract of `append`)."""
    with Spool(tmp_path / "spool.db") as spool:
        spool.append("a", b"1")
        spool.set_destinations(["arr"])
        spool.try_lease("me", 10)
        spool.acknowledge("arr", spool.read_after(0)[0].seq, 1)
        spool.append("b", b"2")
        assert spool._write_conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert [e.event_id for e in spool.read_after(0)] == ["b"]


# ---------------------------------------------------------------------------------------------------
# SpoolingAuditSink.batched: one transaction for the events a request records


def test_batched_spools_a_requests_events_together_when_the_block_ends(tmp_path):
    woken: list[int] = []
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test", on_spooled=lambda: woken.append(1))
        with sink.batched():
            sink.record(_record("ITI-41"))
            with sink.batched():  # nested: joins the outer block
                sink.record(_record("ITI-42"))
            # another thread (another request) is not part of this block: spooled at once
            other = threading.Thread(target=sink.record, args=(_record("ITI-18"),))
            other.start()
            other.join()
            sink.record_many([_record("merge")])
            assert _payloads(spool) == [XML.replace(b"Query", b"ITI-18")]
        assert _payloads(spool) == [
            XML.replace(b"Query", x) for x in (b"ITI-18", b"ITI-41", b"ITI-42", b"merge-D", b"merge-U")
        ]
        m = spool.metrics()
    assert (m["appended"], m["append_commits"]) == (5, 2)
    assert woken == [1, 1]


def test_batched_spools_the_events_of_a_failing_block_then_raises(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test")
        with pytest.raises(RuntimeError, match="handler failed"):
            with sink.batched():
                sink.record(_record("ITI-41"))
                raise RuntimeError("handler failed")
        assert _payloads(spool) == [XML.replace(b"Query", b"ITI-41")]
        # the thread is out of the block: the next record is spooled at once
        sink.record(_record("ITI-43"))
        assert len(_payloads(spool)) == 2


def test_batched_raises_spool_full_when_the_block_ends(tmp_path):
    with Spool(tmp_path / "spool.db", max_events=1) as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="carnet.test")
        with pytest.raises(SpoolFullError):
            with sink.batched():
                sink.record(_record("ITI-41"))
                sink.record(_record("ITI-42"))  # does not raise here: spooled at the block's end
        assert _payloads(spool) == [XML.replace(b"Query", b"ITI-41")]
