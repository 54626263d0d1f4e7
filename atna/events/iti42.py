"""ITI-42 Register Document Set-b: the Document Registry's audit (ITI TF-2b §3.42.7.1.2: EventID 110107
Import, action C; Source = the repository, Destination = the registry) and the Document Repository's own,
when it registers its documents (§3.42.7.1.1: EventID 110106 Export, action R; Source = the repository
with its wsa:ReplyTo and process id, Destination = the registry's endpoint URL). Patient 0..1,
SubmissionSet 1 in both.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import (
    EVENT_EXPORT,
    EVENT_IMPORT,
    AuditNode,
    event,
    inbound,
    outbound,
    patient_objects,
    submission_set_object,
)
from registry.ports import AuditRecord

TRANSACTION = "ITI-42"


def _objects(record: AuditRecord) -> tuple:
    return (*patient_objects(record.patient_ids), submission_set_object(record.submission_set_unique_id))


def registry(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return (
        event(
            record, node, now,
            event_id=EVENT_IMPORT,
            action="C",
            participants=inbound(record, node, TRANSACTION),
            objects=_objects(record),
        ),
    )


def document_source(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return (
        event(
            record, node, now,
            event_id=EVENT_EXPORT,
            action="R",
            participants=outbound(record, node, TRANSACTION, soap=True),
            objects=_objects(record),
        ),
    )
