"""The durable audit spool (DESIGN.md rule 9: events reach the disk before the network, lose nothing).

Choice: one SQLite file (default `data_dir/audit-spool.db`) in WAL mode with `synchronous=FULL`, so that a
committed event has been fsync'd and survives a process kill and a power cut. Append-only files were the
other candidate; SQLite gives, for no code of ours, atomic appends of whole events (no torn records to
repair after a crash), deletion of delivered events without compaction, several processes appending to one
spool (`carnet serve --workers N`), and the per-destination cursors in the same transaction.

Cost: an fsync per commit (~0.3 ms on this machine). Appends are *group-committed*: callers (worker
threads) queue their event and wait until the transaction that holds it is committed;
concurrent callers share one fsync (the first caller to find the writer free commits everything queued
meanwhile, its own event included). `append` returns only once the event is durable.

Durability of the sender's side: cursor moves, purges of delivered events and the sender lease commit with
`synchronous=NORMAL` (no fsync of their own; SQLite §"WAL mode": such a commit survives a process kill, and
a power cut may undo the last ones). Undoing an acknowledgement only makes its events be sent again, which
at-least-once delivery allows (receivers dedupe on eventId); it can never lose an appended event. Nor can it
weaken an append: the WAL is one file written in order, so the fsync of an append's commit also makes every
earlier frame durable. This halves the fsyncs of a busy node (one per append group, none per delivery).

Delivery is at-least-once: each destination has a cursor (`acked_seq`); an event is removed once every
configured destination's cursor has passed it. Events carry a unique id (`event_id`, a UUID) that the sender
puts into STRUCTURED-DATA, `[carnet@32473 eventId="…"]`, so that a receiver can drop duplicates
(atna.arr does).

Bounds: `max_events` and `max_bytes`. When full, the spool REFUSES new events (`SpoolFullError`), counts
them (`refused`) and logs a security alert; it never drops events already spooled, which are the older,
undelivered evidence. A sender lease (`try_lease`) lets one process of several drain the spool.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import attrs

log = logging.getLogger("carnet.atna.spool")

EVENT_ID_SD = "carnet@32473"  # RFC 5424 §7.2.2: SD-ID name@<private enterprise number>, as RFC 5424's examples
EVENT_ID_PARAM = "eventId"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spooled_event (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        size INTEGER NOT NULL,
        payload BLOB NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS spool_stats (id INTEGER PRIMARY KEY CHECK (id = 1), depth INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO spool_stats (id, depth, bytes) VALUES (1, 0, 0)",
    "CREATE TABLE IF NOT EXISTS destination_cursor (destination TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sender_lease (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, expires REAL NOT NULL)",
)


class SpoolError(Exception):
    """The spool could not take or give an event (infrastructure failure, not the peer's fault)."""


class SpoolFullError(SpoolError):
    """The spool is at `max_events` or `max_bytes`: the event was refused (and counted)."""


class SpoolClosedError(SpoolError):
    pass


@attrs.frozen
class SpooledEvent:
    seq: int  # the spool's order; per-destination delivery follows it
    event_id: str
    created: float  # epoch seconds when spooled
    payload: bytes  # the complete RFC 5424 message


@attrs.define
class _Append:
    event_id: str
    payload: bytes
    created: float
    done: threading.Event = attrs.field(factory=threading.Event)
    seq: int | None = None
    error: BaseException | None = None



class Spool:
    """A bounded, durable FIFO of syslog messages, shared by appending threads (and processes) and one sender.

    Thread-safe. `append` blocks until the event is durable. After `close()`, appends raise `SpoolClosedError`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 100_000,
        max_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        synchronous: str = "FULL",
        batch_limit: int = 512,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.path = Path(path)
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.clock = clock
        self._synchronous = synchronous
        self._batch_limit = batch_limit
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn_lock = threading.Lock()  # guards `_conn` (reads, cursors, acks) across threads
        # The sender's side (cursors, purges, the lease) commits without its own fsync: see "Durability"
        # in the module docstring. The appends (`_write_conn`) keep `synchronous`.
        self._conn = self._connect("NORMAL")
        with self._conn_lock:
            for ddl in _SCHEMA:
                self._retry(lambda ddl=ddl: self._conn.execute(ddl))
        # counters since this process opened the spool
        self._counters_lock = threading.Lock()
        self._counters = {"appended": 0, "refused": 0}
        self._delivered: dict[str, int] = {}
        self._failed_attempts: dict[str, int] = {}
        self._failed_events: dict[str, int] = {}
        self._last_alert = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        # Group commit, leader style: the appending thread that gets `_write_lock` commits every event
        # queued so far (its own and the ones that arrived during the previous commit's fsync); the others
        # find theirs done. No writer thread: an append costs no thread hand-off, only the commit it shares.
        self._write_lock = threading.Lock()
        self._write_conn: sqlite3.Connection | None = self._connect()

    # -------------------------------------------------------------------------------------------
    # connections

    def _connect(self, synchronous: str | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous or self._synchronous}")  # FULL: fsync at every commit
        conn.execute("PRAGMA busy_timeout=30000")  # several processes share the file (DESIGN.md §7)
        return conn

    @staticmethod
    def _retry(fn):
        for attempt in range(50):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        return None

    # -------------------------------------------------------------------------------------------
    # appending (group commit)

    def append(self, event_id: str, payload: bytes) -> int:
        """Spool one event; returns its `seq` once it is committed to disk. Raises `SpoolFullError` when the
        spool is at its bounds, `SpoolClosedError` after `close()`, `SpoolError` on a storage failure."""
        if self._closed:
            raise SpoolClosedError("the audit spool is closed")
        item = _Append(event_id, bytes(payload), self.clock())
        self._queue.put(item)
        while not item.done.is_set():
            with self._write_lock:  # waits while another thread commits (its fsync may carry our event)
                if item.done.is_set():
                    break
                if self._write_conn is None:  # closed while we were queueing: never hang
                    item.error = SpoolClosedError("the audit spool is closed")
                    break
                batch: list[_Append] = []
                while len(batch) < self._batch_limit:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if batch:
                    self._commit_batch(self._write_conn, batch)
        if item.error is not None:
            raise item.error
        assert item.seq is not None
        return item.seq

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Append]) -> None:
        refused = 0
        try:
            self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                depth, nbytes = conn.execute("SELECT depth, bytes FROM spool_stats WHERE id = 1").fetchone()
                added_n = added_bytes = 0
                for item in batch:
                    size = len(item.payload)
                    if depth + added_n + 1 > self.max_events or nbytes + added_bytes + size > self.max_bytes:
                        item.error = SpoolFullError(
                            f"audit spool full ({depth + added_n} events, {nbytes + added_bytes} bytes; "
                            f"limits {self.max_events} / {self.max_bytes})"
                        )
                        refused += 1
                        continue
                    cur = conn.execute(
                        "INSERT INTO spooled_event (event_id, created, size, payload) VALUES (?, ?, ?, ?)",
                        (item.event_id, item.created, size, item.payload),
                    )
                    item.seq = cur.lastrowid
                    added_n += 1
                    added_bytes += size
                conn.execute(
                    "UPDATE spool_stats SET depth = depth + ?, bytes = bytes + ? WHERE id = 1", (added_n, added_bytes)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # noqa: BLE001 - every waiting caller learns of the storage failure
            log.exception("audit spool: could not commit %d event(s)", len(batch))
            for item in batch:
                item.seq = None
                item.error = SpoolError(f"audit spool write failed: {exc}")
            refused = 0
        with self._counters_lock:
            self._counters["appended"] += sum(1 for i in batch if i.seq is not None)
            self._counters["refused"] += refused
        if refused:
            self._alert_full(refused)
        for item in batch:
            item.done.set()

    def _alert_full(self, refused: int) -> None:
        now = time.monotonic()
        if now - self._last_alert >= 10 or self._last_alert == 0:  # one alert per 10 s, the counter counts all
            self._last_alert = now
            log.critical(
                "SECURITY ALERT: audit spool %s is full (max %d events / %d bytes); %d event(s) refused, "
                "%d refused since start: the audit record repository is unreachable or too slow",
                self.path, self.max_events, self.max_bytes, refused, self._counters["refused"],
            )

    # -------------------------------------------------------------------------------------------
    # the sender's side

    def set_destinations(self, names: Iterable[str]) -> None:
        """The destinations every event must reach before it is removed. A new one starts at the oldest
        spooled event; one no longer listed is forgotten (else the spool would never drain)."""
        names = list(dict.fromkeys(names))

        def work():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                known = {r[0] for r in conn.execute("SELECT destination FROM destination_cursor")}
                for gone in known - set(names):
                    conn.execute("DELETE FROM destination_cursor WHERE destination = ?", (gone,))
                for name in names:
                    if name not in known:
                        conn.execute("INSERT INTO destination_cursor (destination, acked_seq) VALUES (?, 0)", (name,))
                self._purge(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        with self._conn_lock:
            self._retry(work)

    def acked_seq(self, destination: str) -> int:
        with self._conn_lock:
            row = self._conn.execute(
                "SELECT acked_seq FROM destination_cursor WHERE destination = ?", (destination,)
            ).fetchone()
        return row[0] if row else 0

    def read_after(self, seq: int, limit: int = 100, max_bytes: int = 1024 * 1024) -> list[SpooledEvent]:
        """Up to `limit` events (and about `max_bytes`, at least one) with a seq above `seq`, in order."""
        with self._conn_lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, created, payload FROM spooled_event WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        out: list[SpooledEvent] = []
        total = 0
        for row in rows:
            if out and total + len(row[3]) > max_bytes:
                break
            out.append(SpooledEvent(row[0], row[1], row[2], bytes(row[3])))
            total += len(row[3])
        return out

    def acknowledge(self, destination: str, seq: int, count: int) -> None:
        """`destination` has received every event up to `seq` (`count` of them in this step); events every
        destination has received are removed."""

        def work():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "UPDATE destination_cursor SET acked_seq = MAX(acked_seq, ?) WHERE destination = ?",
                    (seq, destination),
                )
                self._purge(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        with self._conn_lock:
            self._retry(work)
        with self._counters_lock:
            self._delivered[destination] = self._delivered.get(destination, 0) + count

    def _purge(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT MIN(acked_seq), COUNT(*) FROM destination_cursor").fetchone()
        if not row[1]:
            return  # no destination configured yet: keep everything
        upto = row[0]
        n, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spooled_event WHERE seq <= ?", (upto,)
        ).fetchone()
        if n:
            conn.execute("DELETE FROM spooled_event WHERE seq <= ?", (upto,))
            conn.execute("UPDATE spool_stats SET depth = depth - ?, bytes = bytes - ? WHERE id = 1", (n, size))

    def note_failure(self, destination: str) -> None:
        """A delivery attempt to `destination` failed (connection refused, lost, TLS handshake failed...)."""
        with self._counters_lock:
            self._failed_attempts[destination] = self._failed_attempts.get(destination, 0) + 1

    def note_undeliverable(self, destination: str, count: int = 1) -> None:
        """`count` events can never reach `destination` (e.g. over UDP's 65 507 octets, RFC 5426 §3.2) and
        were skipped for it; they are still delivered to the other destinations."""
        with self._counters_lock:
            self._failed_events[destination] = self._failed_events.get(destination, 0) + count

    def try_lease(self, owner: str, ttl: float, is_stale: Callable[[str], bool] | None = None) -> bool:
        """Take or renew the sender lease (one process of several drains the spool). True if `owner` holds it.
        A lease past its expiry, or whose holder `is_stale` says is gone, is taken over."""
        now = self.clock()

        def work():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT owner, expires FROM sender_lease WHERE id = 1").fetchone()
                if row is None or row[0] == owner or row[1] < now or (is_stale is not None and is_stale(row[0])):
                    conn.execute(
                        "INSERT OR REPLACE INTO sender_lease (id, owner, expires) VALUES (1, ?, ?)", (owner, now + ttl)
                    )
                    held = True
                else:
                    held = False
                conn.execute("COMMIT")
                return held
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        with self._conn_lock:
            return self._retry(work)

    def release_lease(self, owner: str) -> None:
        with self._conn_lock:
            self._retry(lambda: self._conn.execute("DELETE FROM sender_lease WHERE id = 1 AND owner = ?", (owner,)))

    # -------------------------------------------------------------------------------------------
    # metrics and lifecycle

    def metrics(self) -> dict:
        """depth, bytes, oldest_age_seconds (spool-wide, all processes); appended, refused, delivered,
        failed_attempts (connections that failed) and failed_events (events skipped because that destination
        cannot carry them), both per destination, are counted by this process since it opened the spool."""
        with self._conn_lock:
            depth, nbytes = self._conn.execute("SELECT depth, bytes FROM spool_stats WHERE id = 1").fetchone()
            oldest = self._conn.execute("SELECT MIN(created) FROM spooled_event").fetchone()[0]
            cursors = dict(self._conn.execute("SELECT destination, acked_seq FROM destination_cursor").fetchall())
        with self._counters_lock:
            return {
                "depth": depth,
                "bytes": nbytes,
                "max_events": self.max_events,
                "max_bytes": self.max_bytes,
                "oldest_age_seconds": max(0.0, self.clock() - oldest) if oldest is not None else 0.0,
                "appended": self._counters["appended"],
                "refused": self._counters["refused"],
                "delivered": dict(self._delivered),
                "failed_attempts": dict(self._failed_attempts),
                "failed_events": dict(self._failed_events),
                "destinations": cursors,
            }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:  # after the commit in progress, if any
            conn, self._write_conn = self._write_conn, None
            if conn is not None:
                conn.close()
            # events queued and not committed: their appending threads get SpoolClosedError
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                left.error = SpoolClosedError("the audit spool is closed")
                left.done.set()
        with self._conn_lock:
            self._conn.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
