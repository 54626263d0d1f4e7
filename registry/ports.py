"""Ports: the small interfaces transaction handlers depend on (DESIGN.md §1).

Each has a simple default adapter here and a real adapter elsewhere; handlers only see these.
"""

from __future__ import annotations

import collections
from typing import Any, Protocol, Sequence

import attrs


@attrs.frozen
class TransactionContext:
    """What a handler knows about the caller, filled in by the edge."""

    transaction: str  # "ITI-42", "ITI-18", ...
    message_id: str | None = None
    remote_host: str | None = None
    endpoint: str | None = None
    reply_to: str | None = None
    user: str | None = None  # XUA subject, when one is sent


@attrs.frozen
class AuditRecord:
    """What the AuditSink receives for one transaction, success or failure (ITI TF-2a §3.20)."""

    transaction: str
    outcome: str  # "success" | "minor-failure" | "serious-failure"
    context: TransactionContext
    patient_ids: tuple[str, ...] = ()
    submission_set_unique_id: str | None = None
    document_unique_ids: tuple[str, ...] = ()
    query_id: str | None = None
    query_body: bytes | None = None
    error_codes: tuple[str, ...] = ()


class AuditSink(Protocol):
    def record(self, event: AuditRecord) -> None: ...


class MemoryAuditSink:
    """Default adapter until the ATNA issue: keeps events in memory (tests read them).
    `keep` bounds how many recent events a long-running server holds (None: all)."""

    def __init__(self, keep: int | None = None) -> None:
        self.events: collections.deque[AuditRecord] = collections.deque(maxlen=keep)

    def record(self, event: AuditRecord) -> None:
        self.events.append(event)


class AccessPolicy(Protocol):
    """Called on every stored query result before it is returned (DMP masking and the access
    matrix plug in here). `rows` are `registry.store.ResultRow`s; return those the caller may see."""

    def filter(self, context: TransactionContext, rows: Sequence[Any]) -> Sequence[Any]: ...


class AllowAllPolicy:
    def filter(self, context: TransactionContext, rows: Sequence[Any]) -> Sequence[Any]:
        return rows


class PatientIdentities(Protocol):
    """The registry accepts only patients it knows (ITI TF-2a §3.8, fed by PIX later)."""

    def is_known(self, patient_id: str) -> bool: ...
