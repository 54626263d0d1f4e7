"""Write-ahead audit: held events in atna.spool, SpoolingAuditSink.ahead/settle (atna/spool.py "Held events")."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from atna.sender import SpoolingAuditSink
from atna.spool import Spool, SpoolFullError
from atna.syslog import parse_message
from registry.ports import AuditRecord, TransactionContext


def _builder(record, node, now):
    return f'<AuditMessage transaction="{record.transaction}" outcome="{record.outcome}"/>'.encode()


def _record(outcome: str = "success") -> AuditRecord:
    return AuditRecord(transaction="ITI-18", outcome=outcome, context=TransactionContext(transaction="ITI-18"))


def _ids(spool: Spool) -> list[str]:
    return [e.event_id for e in spool.read_after(0)]


def test_a_held_event_stops_delivery_until_it_is_released(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        spool.append("before", b"1")
        (held,) = spool.append_many([("held", b"2")], held=True)
        spool.append("after", b"3")
        # delivery follows seq: the event after the held one waits too
        assert _ids(spool) == ["before"]
        assert spool.settle([held]) == [held]
        assert _ids(spool) == ["before", "held", "after"]
        assert spool.read_after(0)[1].payload == b"2"
        m = spool.metrics()
        assert (m["depth"], m["bytes"]) == (3, 3)


def test_settle_puts_other_events_in_place_of_the_held_ones(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        seqs = spool.append_many([("a", b"expected")], held=True)
        spool.append("later", b"x")
        new = spool.settle(seqs, [("a", b"actual outcome"), ("b", b"second")])
        assert len(new) == 2
        events = spool.read_after(0)
        assert [(e.event_id, e.payload) for e in events] == [("later", b"x"), ("a", b"actual outcome"), ("b", b"second")]
        m = spool.metrics()
        assert (m["depth"], m["bytes"]) == (3, len(b"x") + len(b"actual outcome") + len(b"second"))
        # an empty replacement drops them
        dropped = spool.append_many([("c", b"never")], held=True)
        assert spool.settle(dropped, []) == []
        assert "c" not in _ids(spool)
        assert spool.metrics()["depth"] == 3


def test_a_held_event_older_than_the_hold_timeout_is_delivered_as_it_was_spooled(tmp_path):
    now = [1000.0]
    with Spool(tmp_path / "spool.db", clock=lambda: now[0], hold_timeout=30.0) as spool:
        spool.append_many([("orphan", b"expected")], held=True)  # its process died before settling it
        spool.append("next", b"n")
        now[0] += 29.0
        assert _ids(spool) == []
        now[0] += 2.0
        assert _ids(spool) == ["orphan", "next"]


def test_a_spool_written_before_held_events_existed_is_upgraded_at_open(tmp_path):
    path = tmp_path / "spool.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE spooled_event (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
               created REAL NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);
           CREATE TABLE spool_stats (id INTEGER PRIMARY KEY CHECK (id = 1), depth INTEGER NOT NULL, bytes INTEGER NOT NULL);
           INSERT INTO spool_stats VALUES (1, 1, 3);
           INSERT INTO spooled_event (event_id, created, size, payload) VALUES ('old', 1.0, 3, x'6f6c64');"""
    )
    conn.close()
    with Spool(path) as spool:
        spool.append("new", b"new")
        assert _ids(spool) == ["old", "new"]
        assert spool.metrics()["depth"] == 2


def test_ahead_then_settle_with_the_expected_outcome_spools_one_released_event(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        woken = []
        sink = SpoolingAuditSink(spool, _builder, hostname="h", on_spooled=lambda: woken.append(1))
        ticket = sink.ahead(_record())
        ticket.appended.result(timeout=10)  # spooled while "the transaction runs": held meanwhile
        assert _ids(spool) == []
        sink.settle(ticket, _record())
        (event,) = spool.read_after(0)
        assert parse_message(event.payload).payload == b'<AuditMessage transaction="ITI-18" outcome="success"/>'
        assert parse_message(event.payload).sd_param("carnet@32473", "eventId") == event.event_id
        assert woken == [1]


def test_settle_with_another_outcome_spools_that_outcome_instead(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="h")
        ticket = sink.ahead(_record())
        sink.settle(ticket, _record("serious failure"))
        (event,) = spool.read_after(0)
        assert parse_message(event.payload).payload == b'<AuditMessage transaction="ITI-18" outcome="serious failure"/>'
        assert spool.metrics()["depth"] == 1


def test_settle_returns_only_once_the_event_is_on_disk(tmp_path):
    """The answer must not leave before its event is durable: settle waits for the held append."""
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="h")
        gate = threading.Event()
        appended = []
        original = spool.append_many

        def slow_append(items, *, held=False):
            gate.wait(10)
            appended.append(held)
            return original(items, held=held)

        spool.append_many = slow_append
        ticket = sink.ahead(_record())
        done = threading.Event()
        t = threading.Thread(target=lambda: (sink.settle(ticket, _record()), done.set()))
        t.start()
        assert not done.wait(0.3)
        gate.set()
        assert done.wait(10)
        t.join()
        assert appended == [True] and len(_ids(spool)) == 1


def test_abandon_drops_the_held_event(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="h")
        sink.abandon(sink.ahead(_record()))
        spool.append("next", b"n")
        assert _ids(spool) == ["next"]


def test_inside_batched_ahead_defers_to_the_batch(tmp_path):
    with Spool(tmp_path / "spool.db") as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="h")
        with sink.batched():
            ticket = sink.ahead(_record())
            assert ticket is None
            sink.settle(ticket, _record("minor failure"))
            assert _ids(spool) == []
        (event,) = spool.read_after(0)
        assert b'outcome="minor failure"' in parse_message(event.payload).payload


def test_settle_when_the_spool_was_full_raises_as_record_does(tmp_path):
    with Spool(tmp_path / "spool.db", max_events=1) as spool:
        sink = SpoolingAuditSink(spool, _builder, hostname="h")
        sink.record(_record())
        ticket = sink.ahead(_record())
        with pytest.raises(SpoolFullError):
            sink.settle(ticket, _record())
        assert spool.metrics()["depth"] == 1
