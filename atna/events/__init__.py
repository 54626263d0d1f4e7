"""ATNA audit events: one pure builder per (transaction, role) Carnet plays (ITI TF-2a/2b §3.x.5.1).

`build_events(record, node, now)` is what an AuditSink calls: the DICOM audit message(s) for one
`AuditRecord`, as bytes, one per syslog message. Most records give one message; an identity merge
(ITI-8 A40, ITI-44 PRPA_IN201304UV02 — `merged_patient_ids` set) gives two (ITI TF-2a §3.8.5.2.2).
`audit_events` returns the same as `atna.dicom.AuditEvent` models.

Which (transaction, role) pairs exist, and the role used when `record.role` is None:

| transaction | roles (default first) | event |
|---|---|---|
| ITI-18 | registry | 110112 Query, E |
| ITI-41 | repository | 110107 Import, C |
| ITI-42 | registry; document-source (the repository's own ITI-42) | 110107 Import, C; 110106 Export, R |
| ITI-43 | repository | 110106 Export, R |
| ITI-8, ITI-44 | pix-manager; registry | 110110 Patient Record, C/U (merge: D + U) |
| ITI-9, ITI-45 | pix-manager | 110112 Query, E |
| ITI-10, ITI-46 | pix-manager (sender) | 110110 Patient Record, R |
| application-start / -stop | application | 110100 Application Activity, 110120/110121 |
| node-authentication-failure | security | 110113 Security Alert, 110126 |
| security-alert | security | 110113 Security Alert, `alert_type` (CID 403) |
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from atna.dicom import AuditEvent, audit_message
from atna.events import application, iti8, iti9, iti10, iti18, iti41, iti42, iti43, iti44, iti45, iti46, security
from atna.events.common import AuditNode, normalize_transaction
from registry.ports import AuditRecord

__all__ = ["AuditNode", "NoAuditBuilder", "audit_events", "build_event", "build_events", "BUILDERS", "DEFAULT_ROLES"]

Builder = Callable[..., tuple[AuditEvent, ...]]

BUILDERS: dict[tuple[str, str], Builder] = {
    ("ITI-18", "registry"): iti18.registry,
    ("ITI-41", "repository"): iti41.repository,
    ("ITI-42", "registry"): iti42.registry,
    ("ITI-42", "document-source"): iti42.document_source,
    ("ITI-43", "repository"): iti43.repository,
    ("ITI-8", "pix-manager"): iti8.receiver,
    ("ITI-8", "registry"): iti8.receiver,
    ("ITI-44", "pix-manager"): iti44.receiver,
    ("ITI-44", "registry"): iti44.receiver,
    ("ITI-9", "pix-manager"): iti9.pix_manager,
    ("ITI-45", "pix-manager"): iti45.pix_manager,
    ("ITI-10", "pix-manager"): iti10.pix_manager,
    ("ITI-46", "pix-manager"): iti46.pix_manager,
    (application.START, "application"): application.start,
    (application.STOP, "application"): application.stop,
    (security.NODE_AUTHENTICATION_FAILURE, "security"): security.node_authentication_failure,
    (security.SECURITY_ALERT, "security"): security.security_alert,
}

DEFAULT_ROLES = {
    "ITI-18": "registry",
    "ITI-41": "repository",
    "ITI-42": "registry",
    "ITI-43": "repository",
    "ITI-8": "pix-manager",
    "ITI-44": "pix-manager",
    "ITI-9": "pix-manager",
    "ITI-45": "pix-manager",
    "ITI-10": "pix-manager",
    "ITI-46": "pix-manager",
    application.START: "application",
    application.STOP: "application",
    security.NODE_AUTHENTICATION_FAILURE: "security",
    security.SECURITY_ALERT: "security",
}


class NoAuditBuilder(LookupError):
    """No audit event is defined for this (transaction, role): a wiring bug on our side."""


def audit_events(record: AuditRecord, node: AuditNode, now: datetime) -> tuple[AuditEvent, ...]:
    transaction = normalize_transaction(record.transaction)
    role = record.role or DEFAULT_ROLES.get(transaction)
    builder = BUILDERS.get((transaction, role or ""))
    if builder is None:
        raise NoAuditBuilder(f"no audit event for {record.transaction!r} in role {role!r}")
    return builder(record, node, now=now)


def build_events(record: AuditRecord, node: AuditNode, now: datetime) -> tuple[bytes, ...]:
    """The AuditMessage(s) of one record, each the MSG of one RFC 5424 syslog message."""
    return tuple(audit_message(e) for e in audit_events(record, node, now))


def build_event(record: AuditRecord, node: AuditNode, now: datetime) -> bytes:
    """The single AuditMessage of a record; raises ValueError for a merge, which needs `build_events`."""
    messages = build_events(record, node, now)
    if len(messages) != 1:
        raise ValueError(f"{record.transaction} gives {len(messages)} audit messages: use build_events")
    return messages[0]
