"""ITI-46 PIX V3 Update Notification, PIX Manager audit (ITI TF-2b §3.46.5.1.1).

EventID 110110 Patient Record, action R; Source = us (wsa:ReplyTo, process id, our address),
Destination = the PIX Consumer (its endpoint URL and address); one Patient per identifier notified,
each with detail `II` = the message id.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import EVENT_PATIENT_RECORD, AuditNode, event, outbound, patient_objects
from registry.ports import AuditRecord

TRANSACTION = "ITI-46"


def pix_manager(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    details = (("II", record.hl7_message_id.encode()),) if record.hl7_message_id else ()
    return (
        event(
            record, node, now,
            event_id=EVENT_PATIENT_RECORD,
            action="R",
            participants=outbound(record, node, TRANSACTION, soap=True),
            objects=patient_objects(record.patient_ids, details),
        ),
    )
