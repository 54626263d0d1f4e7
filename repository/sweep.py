"""The orphan sweep (DESIGN.md §3 rule 6: blobs are written first, a failed registry commit removes
them, and a periodic sweep removes what a crash left).

Two kinds of leftovers:
1. staged data never committed nor aborted (a process killed while receiving a document):
   `BlobStore.sweep_staged(older_than)` removes it;
2. committed blobs whose registration never completed (a kill between the blob commit and the
   registry's answer): each has a row in the pending journal (`repository.pending`), written before
   the blobs were committed. A row older than `older_than` is settled by asking the registry
   whether the document's uniqueId is registered: registered → the blob is kept, the row removed;
   not registered → the blob is deleted (only if it is still the one that submission wrote: its
   `intake-id` metadata matches), then the row removed.

`older_than` must exceed the longest a live submission can take between writing its rows and the
registry's answer (the registry client's timeout plus the blob writes), or the sweep could delete
the blobs of a submission still in flight: the default is an hour. When the registry cannot be
asked, nothing is decided: the rows wait for the next sweep.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import attrs

from repository.blobs import BlobNotFound
from repository.intake import META_INTAKE_ID
from repository.pending import PendingBlob, PendingJournal
from repository.registry_client import RegistryUnavailable
from repository.seal import SEAL_SUFFIX

log = logging.getLogger("carnet.repository")

DEFAULT_ORPHAN_AGE = 3600.0  # seconds

RegistryLookup = Callable[[Iterable[str]], set[str]]  # e.g. RegistryClient.known_document_unique_ids


@attrs.frozen
class SweepReport:
    staged_removed: int = 0
    orphans_deleted: tuple[str, ...] = ()  # object keys
    settled: int = 0  # pending rows whose document the registry knows
    deferred: int = 0  # pending rows left for the next sweep (registry not reachable)


def sweep_orphans(
    blobs,
    registry_lookup: RegistryLookup,
    older_than: float = DEFAULT_ORPHAN_AGE,
    *,
    pending: PendingJournal | None = None,
    batch: int = 1000,
) -> SweepReport:
    """One sweep (blocking: run it on a worker thread, e.g. from a Twisted LoopingCall)."""
    staged = blobs.sweep_staged(older_than)
    if pending is None:
        return SweepReport(staged_removed=staged)
    entries = pending.older_than(older_than, limit=batch)  # deletes the settled rows first
    if not entries:
        return SweepReport(staged_removed=staged)
    try:
        known = registry_lookup([e.document_unique_id for e in entries])
    except RegistryUnavailable as exc:
        log.warning("orphan sweep: registry not reachable, %d pending blobs deferred: %s", len(entries), exc)
        return SweepReport(staged_removed=staged, deferred=len(entries))
    deleted: list[str] = []
    settled: list[PendingBlob] = []
    for e in entries:
        if e.document_unique_id not in known:
            _delete_seal(blobs, e)
        if e.document_unique_id not in known and _owned(blobs, e):
            blobs.delete(e.object_key)
            deleted.append(e.object_key)
            log.info("orphan sweep: deleted blob %s (document %s never registered)", e.object_key,
                     e.document_unique_id)
        settled.append(e)
    pending.remove(settled)
    return SweepReport(staged_removed=staged, orphans_deleted=tuple(deleted),
                       settled=len(settled) - len(deleted))


def _delete_seal(blobs, entry: PendingBlob) -> None:
    """The repository's seal (repository.seal) the pending submission may have written before it died."""
    key = entry.object_key + SEAL_SUFFIX
    try:
        if blobs.read_metadata(key).get(META_INTAKE_ID) == entry.intake_id:
            blobs.delete(key)
    except BlobNotFound:
        pass


def _owned(blobs, entry: PendingBlob) -> bool:
    """The blob under the key is still the one the pending submission wrote."""
    try:
        return blobs.read_metadata(entry.object_key).get(META_INTAKE_ID) == entry.intake_id
    except BlobNotFound:
        return False


@attrs.define
class OrphanSweeper:
    """What the site schedules: `run_once()` every `interval` seconds on the thread pool."""

    blobs: object
    registry_lookup: RegistryLookup
    pending: PendingJournal | None
    older_than: float = DEFAULT_ORPHAN_AGE
    interval: float = 600.0

    def run_once(self) -> SweepReport:
        return sweep_orphans(self.blobs, self.registry_lookup, self.older_than, pending=self.pending)
