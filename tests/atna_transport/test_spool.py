"""atna.spool: durable, bounded, per-destination cursors; atna.sender.SpoolingAuditSink fills it."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atna.sender import SpoolingAuditSink
from atna.spool import Spool, SpoolClosedError, SpoolFullError
from atna.syslog import AUDIT_MSGID, parse_message
from registry.ports import AuditRecord, TransactionContext

from atna_transport.transport_support import XML

ROOT = Path(__file__).resolve().parents[2]


def _builder(calls: list | None = None):
    def build(record, node, now):
        if calls is not None:
            calls.append((record, node, now))
        return XML.replace(b"Query", record.transaction.encode())

    return build


def _record(transaction: str = "ITI-18") -> AuditRecord:
    return AuditRecord(transaction=transaction, outcome="success", context=TransactionContext(transaction=transaction))


def test_append_read_acknowledge_and_purge(tmp_path):
    with Spool(tmp_path / "spool.db", clock=lambda: 1000.0) as spool:
        seqs = [spool.append(f"e{i}", f"message {i}".encode()) for i in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        spool.set_destinations(["arr", "siem"])
        events = spool.read_after(0, limit=3)
        assert [e.event_id for e in events] == ["e0", "e1", "e2"]
        assert events[0].payload == b"message 0" and events[0].created == 1000.0
        # one destination has them: nothing is removed until the other has them too
        spool.acknowledge("arr", events[-1].seq, 3)
        assert spool.metrics()["depth"] == 5
        spool.acknowledge("siem", seqs[1], 2)
        assert [e.event_id for e in spool.read_after(0)] == ["e2", "e3", "e4"]
        m = spool.metrics()
        assert (m["depth"], m["bytes"]) == (3, 3 * len(b"message 0"))
        assert m["delivered"] == {"arr": 3, "siem": 2}
        assert m["destinations"] == {"arr": seqs[2], "siem": seqs[1]}
        # a destination no longer configured no longer holds events back
        spool.set_destinations(["arr"])
        assert [e.event_id for e in spool.read_after(0)] == ["e3", "e4"]


def test_read_after_respects_byte_budget_but_returns_at_least_one(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        for i in range(3):
            spool.append(f"e{i}", b"x" * 100)
        assert len(spool.read_after(0, max_bytes=250)) == 2
        assert len(spool.read_after(0, max_bytes=10)) == 1


def test_events_survive_reopening(tmp_path):
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        spool.append("a", b"first")
        spool.append("b", b"second")
    with Spool(path) as spool:
        assert [(e.event_id, e.payload) for e in spool.read_after(0)] == [("a", b"first"), ("b", b"second")]
        assert spool.metrics()["depth"] == 2


def test_full_spool_refuses_new_events_and_keeps_old_ones(tmp_path, caplog):
    with Spool(tmp_path / "spool.db", max_events=3, max_bytes=10_000) as spool:
        for i in range(3):
            spool.append(f"e{i}", b"payload")
        with pytest.raises(SpoolFullError):
            spool.append("e3", b"payload")
        assert [e.event_id for e in spool.read_after(0)] == ["e0", "e1", "e2"]
        m = spool.metrics()
        assert (m["depth"], m["refused"], m["appended"]) == (3, 1, 3)
        assert any("SECURITY ALERT" in r.getMessage() for r in caplog.records)
        # once delivered, room again
        spool.set_destinations(["arr"])
        spool.acknowledge("arr", spool.read_after(0)[0].seq, 1)
        spool.append("e3", b"payload")
    with Spool(tmp_path / "bytes.db", max_events=100, max_bytes=20) as spool:
        spool.append("a", b"x" * 15)
        with pytest.raises(SpoolFullError):
            spool.append("b", b"x" * 6)


def test_concurrent_appends_are_all_kept_in_one_order(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        errors = []

        def work(t):
            try:
                for i in range(50):
                    spool.append(f"t{t}-{i}", b"m")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        events = spool.read_after(0, limit=1000)
        assert len(events) == 400 and len({e.event_id for e in events}) == 400
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        for t in range(8):  # each thread's events in the order it appended them
            mine = [e.event_id for e in events if e.event_id.startswith(f"t{t}-")]
            assert mine == [f"t{t}-{i}" for i in range(50)]


def test_close_during_concurrent_appends_never_hangs_or_loses_an_acknowledged_event(tmp_path):
    # every append either returned a seq (then the event is in the spool when reopened) or raised
    # SpoolClosedError; none is left waiting (the appending threads commit for each other)
    spool = Spool(tmp_path / "spool.db")
    acknowledged: list[tuple[str, int]] = []
    refused: list[str] = []
    unexpected: list[BaseException] = []
    started = threading.Barrier(7)

    def work(t):
        started.wait()
        for i in range(200):
            try:
                acknowledged.append((f"t{t}-{i}", spool.append(f"t{t}-{i}", b"m")))
            except SpoolClosedError:
                refused.append(f"t{t}-{i}")
            except BaseException as exc:  # noqa: BLE001
                unexpected.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    started.wait()
    while len(acknowledged) < 50:
        threading.Event().wait(0.001)
    spool.close()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not unexpected
    assert len(acknowledged) + len(refused) == 1200 and refused
    with Spool(tmp_path / "spool.db") as reopened:
        kept = {e.event_id: e.seq for e in reopened.read_after(0, limit=2000)}
    assert dict(acknowledged) == kept


def test_append_after_close_raises(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.close()
    with pytest.raises(SpoolClosedError):
        spool.append("x", b"y")


def test_sender_lease_is_exclusive_until_expiry_or_holder_gone(tmp_path):
    now = [100.0]
    with Spool(tmp_path / "spool.db", clock=lambda: now[0]) as spool:
        assert spool.try_lease("a", 10)
        assert not spool.try_lease("b", 10)
        assert spool.try_lease("a", 10)  # renewal
        assert spool.try_lease("b", 10, is_stale=lambda owner: owner == "a")
        now[0] += 11
        assert spool.try_lease("a", 10)
        spool.release_lease("a")
        assert spool.try_lease("b", 10)


def test_event_appended_survives_kill(tmp_path):
    """A child appends events and prints each id once `append` returned; it is SIGKILLed mid-way. Every
    printed event is in the spool afterwards."""
    path = tmp_path / "spool.db"
    code = (
        "import sys; sys.path[:0] = [%r]\n"
        "from atna.spool import Spool\n"
        "s = Spool(%r)\n"
        "i = 0\n"
        "while True:\n"
        "    s.append(f'ev{i}', b'x' * 2000); print(f'ev{i}', flush=True); i += 1\n"
    ) % (str(ROOT), str(path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    printed = []
    try:
        assert child.stdout is not None
        while len(printed) < 200:
            line = child.stdout.readline()
            assert line, "the child stopped"
            printed.append(line.decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    printed += [line.decode().strip() for line in child.stdout.read().splitlines()]
    with Spool(path) as spool:
        kept = {e.event_id for e in spool.read_after(0, limit=100_000, max_bytes=1 << 30)}
        assert set(printed) <= kept
        assert spool.metrics()["depth"] == len(kept)


def test_sink_spools_an_rfc5424_audit_message_with_its_event_id(tmp_path):
    calls = []
    when = dt.datetime(2026, 11, 23, 10, 15, 0, 250000, tzinfo=dt.timezone.utc)
    with Spool(tmp_path / "spool.db") as spool:
        woken = []
        sink = SpoolingAuditSink(
            spool, _builder(calls), node="the-node", clock=lambda: when,
            hostname="carnet.example.fr", procid="77", on_spooled=lambda: woken.append(1),
        )
        record = _record("ITI-42")
        sink.record(record)
        sink.record(_record("ITI-18"))
        events = spool.read_after(0)
    assert calls == [(record, "the-node", when), (_record("ITI-18"), "the-node", when)]
    assert len(woken) == 2
    first = parse_message(events[0].payload)
    assert (first.facility, first.severity, first.msgid) == (10, 5, AUDIT_MSGID)
    assert (first.timestamp, first.hostname, first.app_name, first.procid) == (
        "2026-11-23T10:15:00.250000Z", "carnet.example.fr", "carnet", "77"
    )
    assert first.sd_param("carnet@32473", "eventId") == events[0].event_id
    assert first.payload == XML.replace(b"Query", b"ITI-42")
    assert events[0].event_id != events[1].event_id


def test_sink_raises_when_the_spool_is_full(tmp_path):
    with Spool(tmp_path / "spool.db", max_events=1) as spool:
        sink = SpoolingAuditSink(spool, _builder(), hostname="h")
        sink.record(_record())
        with pytest.raises(SpoolFullError):
            sink.record(_record())
        assert spool.metrics()["refused"] == 1


def test_sink_spools_one_syslog_message_per_audit_message(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, lambda r, n, now: (b"<AuditMessage>1</AuditMessage>", b"<AuditMessage>2</AuditMessage>"), hostname="h")
        sink.record(_record("ITI-8"))
        events = spool.read_after(0)
    assert [parse_message(e.payload).payload for e in events] == [b"<AuditMessage>1</AuditMessage>", b"<AuditMessage>2</AuditMessage>"]
    assert len({e.event_id for e in events}) == 2


def test_sink_uses_the_event_builders_by_default(tmp_path):
    events_module = pytest.importorskip("atna.events")
    node = events_module.AuditNode(audit_source_id="carnet@test", host="carnet.test", process_id="1")
    record = AuditRecord(
        "ITI-18", "success", TransactionContext("ITI-18", remote_host="10.0.0.9", endpoint="http://carnet.test/registry"),
        patient_ids=("123^^^&1.2.250.1.213.1.4.8&ISO",), query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
        query_body=b"<AdhocQuery/>",
    )
    with Spool(tmp_path / "spool.db") as spool:
        SpoolingAuditSink(spool, node=node, hostname="carnet.test").record(record)
        (event,) = spool.read_after(0)
    message = parse_message(event.payload)
    assert message.msgid == AUDIT_MSGID
    assert b"<AuditMessage" in message.payload and b"carnet@test" in message.payload


def _wal_pages(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return (wal.stat().st_size - 32) // (4096 + 24) if wal.exists() else 0  # header, then frames


def test_appends_leave_checkpoints_to_the_senders_side(tmp_path):
    """An append's commit never copies the WAL back (that stalled requests 10–170 ms every few
    thousand events); the acknowledging side does, without holding up writers, and the WAL is then
    reused from its start instead of growing."""
    path = tmp_path / "spool.db"
    spool = Spool(path, synchronous="FULL")
    sender = Spool(path, synchronous="NORMAL")  # as in the audit sender process
    sender.set_destinations(["arr"])
    payload = b"x" * 3000
    for i in range(1500):  # ~1 500 pages: past SQLite's default autocheckpoint (1 000 pages)
        spool.append(f"a{i}", payload)
    assert _wal_pages(path) > 1500  # no append checkpointed: every commit's frames are still in the WAL

    events = sender.read_after(0, 2000, max_bytes=10**8)
    assert len(events) == 1500
    sender.acknowledge("arr", events[-1].seq, len(events))  # delivered, purged, checkpointed
    grown = _wal_pages(path)
    for i in range(1500):
        spool.append(f"b{i}", payload)
    assert _wal_pages(path) == grown  # the same appends again: written over the WAL from its start
    assert [e.event_id for e in sender.read_after(events[-1].seq, 5)] == [f"b{i}" for i in range(5)]
    spool.close()
    sender.close()
    reopened = Spool(path)
    assert reopened.metrics()["depth"] == 1500  # all there after reopening
    reopened.close()


def _hold_write_lock(spool: Spool, seconds: float) -> threading.Thread:
    """Another process's write transaction (here another Spool's connection), open for `seconds`."""
    started = threading.Event()

    def hold() -> None:
        def work(_conn) -> None:
            started.set()
            time.sleep(seconds)

        spool._write(work, durable=False)

    t = threading.Thread(target=hold)
    t.start()
    assert started.wait(5)
    return t


def test_an_append_waits_for_another_processs_write_lock_then_commits(tmp_path):
    path = tmp_path / "spool.db"
    serving, sender = Spool(path), Spool(path)
    holder = _hold_write_lock(sender, 0.3)
    assert serving.append("during", b"x") >= 1  # waited in short steps, then committed
    holder.join()
    assert [e.event_id for e in sender.read_after(0, 10)] == ["during"]
    serving.close()
    sender.close()


def test_an_append_gives_up_after_busy_timeout_and_keeps_nothing(tmp_path):
    path = tmp_path / "spool.db"
    serving, sender = Spool(path, busy_timeout=0.2), Spool(path)
    holder = _hold_write_lock(sender, 1.5)
    with pytest.raises(Exception, match="locked"):
        serving.append("refused", b"x")
    holder.join()
    assert sender.read_after(0, 10) == []
    assert serving.append("later", b"x") >= 1  # the spool works again once the lock is free
    serving.close()
    sender.close()
