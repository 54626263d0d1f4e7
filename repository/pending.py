"""The pending-blob journal: blobs committed to the store whose registry commit is not yet known.

DESIGN.md §3 rule 6: never a registry entry whose document cannot be retrieved, and orphans are
swept. ITI-41 writes blobs first and registers them after (ITI TF-2b §3.41.4.1.3), so a crash (or
a lost connection to a remote registry) between the two may leave blobs no registry entry points to.
To find them without listing a bucket (DESIGN.md §3 rule 7), the handler writes one row per new blob
here *before* committing the blobs, and deletes the rows once the registry has answered (and the
blobs of a failed registration are deleted).

A successful submission's rows are not deleted in a transaction of their own: `settle()` queues the
submission in memory and the deletion rides along with the next `record()`'s transaction (or
`flush()`, which the sweep calls, or a full queue). A crash loses only the queue: those rows stay
and the sweep settles them as any other (the registry knows their documents: the blobs are kept). A row that outlives `older_than` therefore marks a blob
whose submission died midway: `repository.sweep.sweep_orphans` asks the registry whether the
document's uniqueId is registered; if it is, the row goes, else the blob and the row go.

The table is in `registry.schema` (Alembic revision 0002); `create_schema(engine)` makes the
whole Carnet schema for tests.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

import attrs
from sqlalchemy import Engine, and_, delete, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from registry.schema import metadata, repository_pending  # one Carnet schema


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


class PendingJournalError(Exception):
    """The journal's database failed (infrastructure: XDSRepositoryError)."""


@attrs.frozen
class PendingBlob:
    intake_id: str
    object_key: str
    repository_unique_id: str
    document_unique_id: str
    created_at: float


class PendingJournal:
    """`repository_pending` over an Engine (the repository's database)."""

    def __init__(
        self, engine: Engine, *, clock: Callable[[], float] = time.time, piggyback: int = 32, settle_batch: int = 1024
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.piggyback = piggyback  # settled submissions a record() deletes along, once that many wait
        self.settle_batch = settle_batch  # settled submissions that make settle() flush by itself
        self._settled: list[str] = []  # intake ids whose rows may go (registered)
        self._lock = threading.Lock()

    def record(self, intake_id: str, blobs: Iterable[tuple[str, str, str]]) -> None:
        """Mark (object_key, repositoryUniqueId, documentUniqueId) blobs pending, durably (and, in
        the same transaction, delete the rows of the submissions settled since the last one)."""
        now = self.clock()
        rows = [
            dict(intake_id=intake_id, object_key=k, repository_unique_id=r, document_unique_id=d, created_at=now)
            for k, r, d in blobs
        ]
        if not rows:
            return
        settled = self._take_settled(self.piggyback)
        try:
            with self.engine.begin() as c:
                c.execute(insert(repository_pending), rows)
                self._delete_settled(c, settled)
        except SQLAlchemyError as exc:
            self._requeue(settled)
            raise PendingJournalError(f"pending journal write failed: {exc}") from exc

    def settle(self, intake_id: str) -> None:
        """The submission's registration is complete: its rows may go, lazily (module docstring)."""
        with self._lock:
            self._settled.append(intake_id)
            full = len(self._settled) >= self.settle_batch
        if full:
            self.flush()

    def flush(self) -> None:
        """Delete the rows of every settled submission now."""
        settled = self._take_settled()
        if not settled:
            return
        try:
            with self.engine.begin() as c:
                self._delete_settled(c, settled)
        except SQLAlchemyError as exc:
            self._requeue(settled)
            raise PendingJournalError(f"pending journal clear failed: {exc}") from exc

    def _take_settled(self, at_least: int = 1) -> list[str]:
        with self._lock:
            if len(self._settled) < at_least:
                return []
            settled, self._settled = self._settled, []
        return settled

    def _requeue(self, settled: list[str]) -> None:
        if settled:
            with self._lock:
                self._settled[:0] = settled

    @staticmethod
    def _delete_settled(c, settled: list[str]) -> None:
        t = repository_pending
        for i in range(0, len(settled), 500):  # bounded IN lists
            c.execute(delete(t).where(t.c.intake_id.in_(settled[i : i + 500])))

    def clear(self, intake_id: str, keys: Iterable[str] | None = None) -> None:
        t = repository_pending
        cond = t.c.intake_id == intake_id
        if keys is not None:
            keys = list(keys)
            if not keys:
                return
            cond = and_(cond, t.c.object_key.in_(keys))
        try:
            with self.engine.begin() as c:
                c.execute(delete(t).where(cond))
        except SQLAlchemyError as exc:
            raise PendingJournalError(f"pending journal clear failed: {exc}") from exc

    def older_than(self, seconds: float, limit: int = 1000) -> list[PendingBlob]:
        """Rows older than `seconds` (after deleting the settled ones)."""
        self.flush()
        t = repository_pending
        limit_time = self.clock() - seconds
        with self.engine.connect() as c:
            rows = c.execute(
                select(t).where(t.c.created_at <= limit_time).order_by(t.c.created_at).limit(limit)
            ).all()
        return [PendingBlob(r.intake_id, r.object_key, r.repository_unique_id, r.document_unique_id, r.created_at)
                for r in rows]

    def remove(self, entries: Iterable[PendingBlob]) -> None:
        t = repository_pending
        pairs = [and_(t.c.intake_id == e.intake_id, t.c.object_key == e.object_key) for e in entries]
        if pairs:
            with self.engine.begin() as c:
                c.execute(delete(t).where(or_(*pairs)))

    def all(self) -> list[PendingBlob]:
        return self.older_than(-1e18, limit=1_000_000)
