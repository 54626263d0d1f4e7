"""ITI-41 Provide and Register Document Set-b, Document Repository audit (ITI TF-2b §3.41.7.1.2).

EventID 110107 Import, action C; Source = the Document Source (wsa:ReplyTo, its address), Destination =
the repository (endpoint URL, process id); Patient 1; SubmissionSet 1 (its uniqueId).
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import (
    EVENT_IMPORT,
    AuditNode,
    event,
    inbound,
    patient_objects,
    submission_set_object,
)
from registry.ports import AuditRecord

TRANSACTION = "ITI-41"


def repository(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return (
        event(
            record, node, now,
            event_id=EVENT_IMPORT,
            action="C",
            participants=inbound(record, node, TRANSACTION),
            objects=(*patient_objects(record.patient_ids), submission_set_object(record.submission_set_unique_id)),
        ),
    )
