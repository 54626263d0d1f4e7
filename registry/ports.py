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
    # Optional, for the ATNA human-requestor ActiveParticipant (ITI TF-2b §3.40.4.2, XUA): the
    # subject's name, its roles and the purposes of use, each code as (code, codeSystem, displayName).
    user_name: str | None = None
    user_roles: tuple[tuple[str, str, str], ...] = ()
    purposes_of_use: tuple[tuple[str, str, str], ...] = ()


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
    query_body: bytes | None = None  # ITI-18 AdhocQueryRequest; ITI-9 the QPD segment; ITI-45 queryByParameter
    error_codes: tuple[str, ...] = ()
    # --- Optional, for the ATNA audit message (issue 5, atna/events): every default keeps the
    # event buildable; atna.events documents which fields each (transaction, role) needs.
    role: str | None = None  # the actor Carnet played: "registry" | "repository" | "document-source"
    #   (the repository's own ITI-42) | "pix-manager"; None: the transaction's usual receiver/sender
    action: str | None = None  # EventActionCode C/R/U/D/E when the transaction decides it (ITI-8 A08: U)
    repository_unique_id: str | None = None
    home_community_id: str | None = None
    # ITI-43: (documentUniqueId, repositoryUniqueId, homeCommunityId) per document requested
    document_refs: tuple[tuple[str, str | None, str | None], ...] = ()
    hl7_message_id: str | None = None  # MSH-10 (HL7v2) or the HL7v3 message id (root^extension)
    merged_patient_ids: tuple[str, ...] = ()  # ITI-8 A40 MRG-1 / ITI-44 replacementOf: subsumed ids
    # The other party and ourselves as the audit ActiveParticipants name them (ITI TF-2a §3.x.5.1):
    peer_user_id: str | None = None  # HL7v2: its "facility|application"; outbound SOAP: its URL
    peer_address: str | None = None  # its host name or IP (default: context.remote_host)
    local_user_id: str | None = None  # HL7v2: our "facility|application" (default: our endpoint URL)
    alert_type: str | None = None  # security alerts: DCM code of CID 403 (default 110126)


class AuditSink(Protocol):
    def record(self, event: AuditRecord) -> None: ...


class MemoryAuditSink:
    """Default adapter until the ATNA issue: keeps events in memory (tests read them).
    `keep` bounds how many recent events a long-running server holds (None: all)."""

    def __init__(self, keep: int | None = None) -> None:
        self.events: collections.deque[AuditRecord] = collections.deque(maxlen=keep)

    def record(self, event: AuditRecord) -> None:
        self.events.append(event)


class NullAuditSink:
    """Keeps nothing (auditing switched off by configuration, or a benchmark's baseline)."""

    def record(self, event: AuditRecord) -> None:
        pass


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
