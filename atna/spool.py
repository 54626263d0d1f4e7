"""The durable audit spool (DESIGN.md rule 9: events reach the disk before the network, lose nothing).

Choice: one SQLite file (default `data_dir/audit-spool.db`) in WAL mode with `synchronous=FULL`, so that a
committed event has been fsync'd and survives a process kill and a power cut. Append-only files were the
other candidate; SQLite gives, for no code of ours, atomic appends of whole events (no torn records to
repair after a crash), deletion of delivered events without compaction, several processes appending to one
spool (`carnet serve --workers N`), and the per-destination cursors in the same transaction.

Cost: an fsync per commit (~0.3 ms on this machine when the disk is idle; 0.5–5 ms while other files are
being written, e.g. blobs of ITI-41: the virtual disk's flush waits for their writes too). Appends are *group-committed*: callers (worker
threads) queue their event and wait until the transaction that holds it is committed;
concurrent callers share one fsync (the first caller to find the writer free commits everything queued
meanwhile, its own event included). `append` returns only once the event is durable. `append_many` puts
several events (e.g. one per message of a pipelined HL7v2 batch) in ONE transaction.

One writer per Spool: every write of this process — appends, and the sender's acknowledgements, purges,
lease and destination changes — goes through ONE SQLite connection, serialized by a Python lock. A second
write connection in the same process would contend for SQLite's write lock, and SQLite resolves that with a
busy handler that sleeps 1, 2, 5, 10… ms between attempts (measured: appends waiting behind a draining
sender). With one connection there is no SQLite lock wait within a process: the sender's writes run
between two append batches, and appends that arrive meanwhile are committed together right after. Reads
(`read_after`, `acked_seq`, `metrics`) use their own connection: WAL readers never block the writer.
Several processes on one file (the serving processes, the audit sender) still contend for SQLite's write
lock. SQLite's own busy handler would sleep 1, 2, 5, 10, 15, 20, 25 … ms between attempts, so an append
that met the sender's acknowledgement waited 20–40 ms for a lock held for one: a write transaction
starts with `_begin_immediate`, which retries BEGIN IMMEDIATE itself every 0.2–2 ms (up to
`busy_timeout` in all, as before); once the lock is held, nothing in the transaction waits for it.

Durability of the sender's side: cursor moves, purges of delivered events and the sender lease commit with
`synchronous=NORMAL` (the shared connection is switched for those transactions: no fsync of their own;
SQLite §"WAL mode": such a commit survives a process kill, and a power cut may undo the last ones). Undoing
an acknowledgement only makes its events be sent again, which at-least-once delivery allows (receivers
dedupe on eventId); it can never lose an appended event. Nor can it weaken an append: the WAL is one file
written in order, so the fsync of an append's commit also makes every earlier frame durable. This halves the
fsyncs of a busy node (one per append group, none per delivery).

Checkpoints: SQLite copies the WAL back into the database file (and fsyncs it) in whichever connection
commits past `wal_autocheckpoint` pages (default 1 000): with appends, a request thread, every few thousand
events, for 10–170 ms (measured: append p99.9 83 ms, max 174 ms). So the write connection checkpoints by
itself only past `APPEND_CHECKPOINT_PAGES` (a bound on the WAL should no sender run), and the sender's
side runs a passive checkpoint after each acknowledgement, on the read connection: no writer waits for it
(append p99.9 13 ms, max 62 ms under the same load).

Held events (write-ahead audit): `append_many(..., held=True)` spools events that the sender must not
deliver yet, and `settle` later releases them as they are or with other events in their place. An actor
spools the event it expects (outcome: success) while the transaction runs, concurrently, and settles it
once the outcome is known: the fsync of the spool then overlaps the transaction's own work (a stored
query's SQL, a registration's commit) instead of following it, and the answer still leaves only once
its event is durable. Releasing an event as it was spooled costs a commit without fsync (a power cut
may undo it: the event is then released by age, below); putting other events in its place is a durable
commit, as an append. Delivery follows `seq`, so a destination stops at the first held event;
one held for more than `hold_timeout` seconds (its process died before settling it) is delivered as it
was spooled.

Delivery is at-least-once: each destination has a cursor (`acked_seq`); an event is removed once every
configured destination's cursor has passed it. Events carry a unique id (`event_id`, a UUID) that the sender
puts into STRUCTURED-DATA, `[carnet@32473 eventId="…"]`, so that a receiver can drop duplicates
(atna.arr does).

Bounds: `max_events` and `max_bytes`, exact across processes. The spool-wide depth and byte count live in
one row (`spool_stats`) that every write transaction updates; this process keeps its last value in memory
as a guess, so an append batch costs four statements whatever its size (BEGIN, one `UPDATE … RETURNING`
that both moves and reads the counters, one multi-row INSERT, COMMIT). If the returned counters show that
another process wrote since (the guess was wrong), the batch is re-planned against the true values and
the row corrected, still inside the same transaction (which holds SQLite's write lock). When full, the
spool REFUSES new events (`SpoolFullError`), counts them (`refused`) and logs a security alert; it never
drops events already spooled, which are the older, undelivered evidence. A sender lease (`try_lease`) lets
one process of several drain the spool.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import attrs

from registry.sqlite_wait import retry_while_locked

# WAL pages past which an append's commit checkpoints by itself (~64 MiB of 4 KiB pages): only when no
# sender acknowledges (see "Checkpoints" above).
APPEND_CHECKPOINT_PAGES = 16384

log = logging.getLogger("carnet.atna.spool")

EVENT_ID_SD = "carnet@32473"  # RFC 5424 §7.2.2: SD-ID name@<private enterprise number>, as RFC 5424's examples
EVENT_ID_PARAM = "eventId"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spooled_event (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        size INTEGER NOT NULL,
        payload BLOB NOT NULL,
        held INTEGER NOT NULL DEFAULT 0)""",
    "CREATE TABLE IF NOT EXISTS spool_stats (id INTEGER PRIMARY KEY CHECK (id = 1), depth INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO spool_stats (id, depth, bytes) VALUES (1, 0, 0)",
    "CREATE TABLE IF NOT EXISTS destination_cursor (destination TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sender_lease (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, expires REAL NOT NULL)",
)


class SpoolError(Exception):
    """The spool could not take or give an event (infrastructure failure, not the peer's fault)."""


class SpoolFullError(SpoolError):
    """The spool is at `max_events` or `max_bytes`: the event was refused (and counted).

    `seqs`: for each event of the call, in order, its seq if it was appended anyway, None if it was refused
    (`append_many` appends the events that fit and refuses the others; `append`: `[None]`)."""

    def __init__(self, message: str, seqs: Iterable[int | None] = ()) -> None:
        super().__init__(message)
        self.seqs: list[int | None] = list(seqs)


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
    """One `append`/`append_many` call waiting for its commit: its events always share one transaction."""

    items: list[tuple[str, bytes]]  # (event_id, payload)
    created: float
    held: bool = False
    done: threading.Event = attrs.field(factory=threading.Event)
    seqs: list[int | None] = attrs.field(factory=list)
    error: BaseException | None = None


# Rows per INSERT statement: 5 parameters each, well under SQLite's 32 766 host parameters.
_INSERT_ROWS = 256
_INSERT_SQL = "INSERT INTO spooled_event (event_id, created, size, payload, held) VALUES "
HOLD_TIMEOUT_S = 30.0  # a held event older than this is delivered as it was spooled (see "Held events")


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
        busy_timeout: float = 30.0,
        hold_timeout: float = HOLD_TIMEOUT_S,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.path = Path(path)
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.clock = clock
        self._synchronous = synchronous
        self._batch_limit = batch_limit
        self.hold_timeout = hold_timeout
        # seconds SQLite's busy handler waits for the write lock held by ANOTHER process (DESIGN.md §7);
        # within this process no write ever waits for it (one write connection)
        self._busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # counters since this process opened the spool
        self._counters_lock = threading.Lock()
        self._counters = {"appended": 0, "refused": 0, "append_commits": 0}
        self._delivered: dict[str, int] = {}
        self._failed_attempts: dict[str, int] = {}
        self._failed_events: dict[str, int] = {}
        self._last_alert = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        # The only write connection of this Spool (see "One writer per Spool" in the module docstring).
        # Group commit, leader style: the appending thread that gets `_write_lock` commits every event
        # queued so far (its own and the ones that arrived during the previous commit's fsync); the others
        # find theirs done. No writer thread: an append costs no thread hand-off, only the commit it shares.
        # The sender's writes take the same lock, between two append batches.
        self._write_lock = threading.Lock()
        self._write_conn: sqlite3.Connection | None = self._open_retrying(
            lambda: self._connect(synchronous, APPEND_CHECKPOINT_PAGES, busy_timeout=0))
        self._write_sync = synchronous  # the connection's current PRAGMA synchronous
        # (depth, bytes) as of this process's last write: a guess, checked in every write transaction
        self._stats: tuple[int, int] = (0, 0)

        def schema(conn: sqlite3.Connection) -> None:
            for ddl in _SCHEMA:
                conn.execute(ddl)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(spooled_event)")}
            if "held" not in columns:  # a spool written before held events existed
                conn.execute("ALTER TABLE spooled_event ADD COLUMN held INTEGER NOT NULL DEFAULT 0")
            self._stats = tuple(conn.execute("SELECT depth, bytes FROM spool_stats WHERE id = 1").fetchone())

        self._open_retrying(lambda: self._write(schema, durable=False))
        # Reads: their own connection (WAL readers never block the writer, nor the writer them).
        self._read_lock = threading.Lock()
        self._read_conn: sqlite3.Connection | None = self._open_retrying(lambda: self._connect("NORMAL"))

    # -------------------------------------------------------------------------------------------
    # connections

    def _connect(self, synchronous: str, autocheckpoint: int = 1000, busy_timeout: float | None = None) -> sqlite3.Connection:
        # timeout: SQLite's busy handler (the read connection; the write one waits in `_begin_immediate`)
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False,
            timeout=self._busy_timeout if busy_timeout is None else busy_timeout,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # FULL: fsync at every commit
        conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        return conn

    @staticmethod
    def _open_retrying(fn):
        """Only while opening: several processes (`--workers N`) creating one spool file at the same instant
        can see "database is locked" where no busy handler runs (the switch to WAL). Never on the request
        path, where SQLite's busy handler does the waiting."""
        for attempt in range(100):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.01)
        return None

    def _write(self, work: Callable[[sqlite3.Connection], Any], *, durable: bool) -> Any:
        """Run `work(conn)` in one write transaction on the spool's write connection (the sender's writes:
        between two append batches, never waiting for SQLite's lock within this process)."""
        with self._write_lock:
            conn = self._write_conn
            if conn is None:
                raise SpoolClosedError("the audit spool is closed")
            return self._transaction(conn, work, durable)

    def _transaction(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any], durable: bool) -> Any:
        """Caller holds `_write_lock`. `durable`: commit with the configured `synchronous` (appends);
        else NORMAL (the sender's side; see "Durability" in the module docstring)."""
        sync = self._synchronous if durable else "NORMAL"
        if sync != self._write_sync:
            conn.execute(f"PRAGMA synchronous={sync}")
            self._write_sync = sync
        self._begin_immediate(conn)
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("audit spool: rollback failed")
            raise
        return result

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write lock in short steps (see "One writer per
        Spool"; the write connection has no busy handler of SQLite's); `busy_timeout` in all, then
        SQLite's "database is locked" error as before."""
        retry_while_locked(lambda: conn.execute("BEGIN IMMEDIATE"), self._busy_timeout)

    def _read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._read_lock:
            conn = self._read_conn
            if conn is None:
                raise SpoolClosedError("the audit spool is closed")
            return work(conn)

    # -------------------------------------------------------------------------------------------
    # appending (group commit)

    def append(self, event_id: str, payload: bytes) -> int:
        """Spool one event; returns its `seq` once it is committed to disk. Raises `SpoolFullError` when the
        spool is at its bounds, `SpoolClosedError` after `close()`, `SpoolError` on a storage failure."""
        return self.append_many([(event_id, payload)])[0]  # type: ignore[return-value]

    def append_many(self, items: Iterable[tuple[str, bytes]], *, held: bool = False) -> list[int]:
        """Spool several events, `(event_id, payload)` pairs, in ONE transaction (one commit, one fsync,
        shared with concurrent appends); returns their seqs, in order, once committed.

        Bounds are checked event by event, in order: the events that fit are appended, and if any was
        refused, `SpoolFullError` is raised AFTER the others were committed (its `seqs` tells which: None
        for a refused event). A storage failure (`SpoolError`) commits none of them; `SpoolClosedError`
        after `close()`. `held`: not to be delivered until `settle` releases them (see "Held events")."""
        batch = [(str(event_id), bytes(payload)) for event_id, payload in items]
        if not batch:
            return []
        if self._closed:
            raise SpoolClosedError("the audit spool is closed")
        item = _Append(batch, self.clock(), held)
        self._queue.put(item)
        while not item.done.is_set():
            with self._write_lock:  # waits while another thread commits (its fsync may carry our events)
                if item.done.is_set():
                    break
                if self._write_conn is None:  # closed while we were queueing: never hang
                    item.error = SpoolClosedError("the audit spool is closed")
                    break
                groups: list[_Append] = []
                events = 0
                while events < self._batch_limit:  # whole calls only: a call's events share a transaction
                    try:
                        group = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    groups.append(group)
                    events += len(group.items)
                if groups:
                    self._commit_batch(self._write_conn, groups)
        if item.error is not None:
            raise item.error
        return item.seqs  # type: ignore[return-value]

    def _plan(self, groups: list[_Append], depth: int, nbytes: int) -> tuple[list[list[bool]], int, int]:
        """Which events fit, in order, from (depth, nbytes); and the events and bytes they add."""
        added_n = added_bytes = 0
        accepted: list[list[bool]] = []
        for group in groups:
            flags = []
            for _, payload in group.items:
                size = len(payload)
                fits = depth + added_n + 1 <= self.max_events and nbytes + added_bytes + size <= self.max_bytes
                if fits:
                    added_n += 1
                    added_bytes += size
                flags.append(fits)
            accepted.append(flags)
        return accepted, added_n, added_bytes

    def _commit_batch(self, conn: sqlite3.Connection, groups: list[_Append]) -> None:
        """Caller holds `_write_lock`. Four statements whatever the batch's size (see "Bounds")."""

        def work(conn: sqlite3.Connection) -> tuple[list[list[bool]], int, int]:
            depth, nbytes = self._stats
            accepted, n, size = self._plan(groups, depth, nbytes)
            upd = "UPDATE spool_stats SET depth = depth + ?, bytes = bytes + ? WHERE id = 1 RETURNING depth, bytes"
            new_depth, new_bytes = conn.execute(upd, (n, size)).fetchall()[0]
            if (new_depth - n, new_bytes - size) != (depth, nbytes):
                # another process appended or purged since our last write: plan again on the true counters
                depth, nbytes = new_depth - n, new_bytes - size
                accepted, n2, size2 = self._plan(groups, depth, nbytes)
                if (n2, size2) != (n, size):
                    new_depth, new_bytes = conn.execute(upd, (n2 - n, size2 - size)).fetchall()[0]
                n, size = n2, size2
            rows = [
                (event_id, group.created, len(payload), payload, int(group.held))
                for group, flags in zip(groups, accepted)
                for (event_id, payload), fits in zip(group.items, flags)
                if fits
            ]
            seqs: list[int] = []
            for start in range(0, len(rows), _INSERT_ROWS):
                chunk = rows[start:start + _INSERT_ROWS]
                cur = conn.execute(
                    _INSERT_SQL + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                    [value for row in chunk for value in row],
                )
                # this transaction holds the write lock: AUTOINCREMENT gives the rows consecutive seqs, in
                # VALUES order, the last one being `lastrowid`
                last = cur.lastrowid
                seqs.extend(range(last - len(chunk) + 1, last + 1))
            self._stats = (new_depth, new_bytes)
            it = iter(seqs)
            for group, flags in zip(groups, accepted):
                group.seqs = [next(it) if fits else None for fits in flags]
            return accepted, depth, nbytes

        refused = 0
        committed = False
        try:
            accepted, depth, nbytes = self._transaction(conn, work, durable=True)
            committed = True
        except Exception as exc:  # noqa: BLE001 - every waiting caller learns of the storage failure
            log.exception("audit spool: could not commit %d event(s)", sum(len(g.items) for g in groups))
            for group in groups:
                group.seqs = []
                group.error = SpoolError(f"audit spool write failed: {exc}")
        else:
            for group, flags in zip(groups, accepted):
                refused_here = flags.count(False)
                if refused_here:
                    refused += refused_here
                    group.error = SpoolFullError(
                        f"audit spool full: {refused_here} of {len(flags)} event(s) refused (spool at {depth} "
                        f"events, {nbytes} bytes before this commit; limits {self.max_events} / {self.max_bytes})",
                        group.seqs,
                    )
        with self._counters_lock:
            self._counters["appended"] += sum(1 for g in groups for s in g.seqs if s is not None)
            self._counters["refused"] += refused
            self._counters["append_commits"] += committed
        if refused:
            self._alert_full(refused)
        for group in groups:
            group.done.set()

    def settle(self, seqs: Iterable[int], replacements: Iterable[tuple[str, bytes]] | None = None) -> list[int]:
        """Release the held events `seqs` (see "Held events"): as they are, when `replacements` is None (a
        commit without fsync); else with the `(event_id, payload)` events of `replacements` in their place,
        durably, in one transaction (an empty `replacements` drops them). Returns the seqs of the events
        released. Replacements are not refused for the spool's bounds: the held events took their room."""
        seqs = list(seqs)
        if replacements is None:
            if seqs:
                marks = ", ".join("?" * len(seqs))
                self._write(lambda conn: conn.execute(
                    f"UPDATE spooled_event SET held = 0 WHERE held = 1 AND seq IN ({marks})", seqs), durable=False)
            return seqs
        new = [(str(event_id), bytes(payload)) for event_id, payload in replacements]

        def work(conn: sqlite3.Connection) -> list[int]:
            marks = ", ".join("?" * len(seqs))
            old = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spooled_event WHERE held = 1 AND seq IN ({marks})",
                seqs).fetchone() if seqs else (0, 0)
            if seqs:
                conn.execute(f"DELETE FROM spooled_event WHERE held = 1 AND seq IN ({marks})", seqs)
            out = []
            created = self.clock()
            for event_id, payload in new:
                cur = conn.execute(_INSERT_SQL + "(?, ?, ?, ?, 0)", (event_id, created, len(payload), payload))
                out.append(cur.lastrowid)
            self._stats = tuple(conn.execute(
                "UPDATE spool_stats SET depth = depth + ?, bytes = bytes + ? WHERE id = 1 RETURNING depth, bytes",
                (len(new) - old[0], sum(len(p) for _, p in new) - old[1]),
            ).fetchall()[0])
            return out

        released = self._write(work, durable=True)
        with self._counters_lock:
            self._counters["appended"] += len(released)
        return released

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

        def work(conn: sqlite3.Connection) -> None:
            known = {r[0] for r in conn.execute("SELECT destination FROM destination_cursor")}
            for gone in known - set(names):
                conn.execute("DELETE FROM destination_cursor WHERE destination = ?", (gone,))
            for name in names:
                if name not in known:
                    conn.execute("INSERT INTO destination_cursor (destination, acked_seq) VALUES (?, 0)", (name,))
            self._purge(conn)

        self._write(work, durable=False)

    def acked_seq(self, destination: str) -> int:
        row = self._read(lambda conn: conn.execute(
            "SELECT acked_seq FROM destination_cursor WHERE destination = ?", (destination,)
        ).fetchone())
        return row[0] if row else 0

    def read_after(self, seq: int, limit: int = 100, max_bytes: int = 1024 * 1024) -> list[SpooledEvent]:
        """Up to `limit` events (and about `max_bytes`, at least one) with a seq above `seq`, in order, up to
        the first held one (see "Held events"; one held for over `hold_timeout` is delivered as it is)."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT seq, event_id, created, payload, held FROM spooled_event WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall())
        out: list[SpooledEvent] = []
        total = 0
        stale = self.clock() - self.hold_timeout
        for row in rows:
            if row[4] and row[2] > stale:
                break
            if out and total + len(row[3]) > max_bytes:
                break
            out.append(SpooledEvent(row[0], row[1], row[2], bytes(row[3])))
            total += len(row[3])
        return out

    def acknowledge(self, destination: str, seq: int, count: int) -> None:
        """`destination` has received every event up to `seq` (`count` of them in this step); events every
        destination has received are removed."""

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE destination_cursor SET acked_seq = MAX(acked_seq, ?) WHERE destination = ?",
                (seq, destination),
            )
            self._purge(conn)

        self._write(work, durable=False)
        with self._counters_lock:
            self._delivered[destination] = self._delivered.get(destination, 0) + count
        self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without making any writer wait (PASSIVE), on the read
        connection: the sender's side calls it after each acknowledgement (see "Checkpoints")."""
        try:
            self._read(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        except sqlite3.Error as exc:  # a checkpoint that cannot run now runs at a later one
            log.warning("audit spool: checkpoint failed: %s", exc)

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
            self._stats = tuple(conn.execute(
                "UPDATE spool_stats SET depth = depth - ?, bytes = bytes - ? WHERE id = 1 RETURNING depth, bytes",
                (n, size),
            ).fetchall()[0])

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

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT owner, expires FROM sender_lease WHERE id = 1").fetchone()
            if row is None or row[0] == owner or row[1] < now or (is_stale is not None and is_stale(row[0])):
                conn.execute(
                    "INSERT OR REPLACE INTO sender_lease (id, owner, expires) VALUES (1, ?, ?)", (owner, now + ttl)
                )
                return True
            return False

        return self._write(work, durable=False)

    def release_lease(self, owner: str) -> None:
        self._write(
            lambda conn: conn.execute("DELETE FROM sender_lease WHERE id = 1 AND owner = ?", (owner,)),
            durable=False,
        )

    # -------------------------------------------------------------------------------------------
    # metrics and lifecycle

    def metrics(self) -> dict:
        """depth, bytes, oldest_age_seconds (spool-wide, all processes); appended, refused, append_commits
        (append transactions: appended / append_commits is the group commit's events per fsync), delivered,
        failed_attempts (connections that failed) and failed_events (events skipped because that destination
        cannot carry them), both per destination, are counted by this process since it opened the spool."""

        def work(conn: sqlite3.Connection):
            conn.execute("BEGIN")  # one snapshot for the three reads
            try:
                depth, nbytes = conn.execute("SELECT depth, bytes FROM spool_stats WHERE id = 1").fetchone()
                oldest = conn.execute("SELECT MIN(created) FROM spooled_event").fetchone()[0]
                cursors = dict(conn.execute("SELECT destination, acked_seq FROM destination_cursor").fetchall())
            finally:
                conn.execute("COMMIT")
            return depth, nbytes, oldest, cursors

        depth, nbytes, oldest, cursors = self._read(work)
        with self._counters_lock:
            return {
                "depth": depth,
                "bytes": nbytes,
                "max_events": self.max_events,
                "max_bytes": self.max_bytes,
                "oldest_age_seconds": max(0.0, self.clock() - oldest) if oldest is not None else 0.0,
                "appended": self._counters["appended"],
                "refused": self._counters["refused"],
                "append_commits": self._counters["append_commits"],
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
        with self._read_lock:
            conn, self._read_conn = self._read_conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
