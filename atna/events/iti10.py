"""ITI-10 PIX Update Notification, PIX Manager audit (ITI TF-2a §3.10.5.1.1).

EventID 110110 Patient Record, action R; Source = us (sending facility|application, process id, our
address), Destination = the PIX Consumer (receiving facility|application, its address); one Patient
per identifier notified, each with detail MSH-10.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import EVENT_PATIENT_RECORD, AuditNode, event, outbound, patient_objects
from registry.ports import AuditRecord

TRANSACTION = "ITI-10"


def pix_manager(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    details = (("MSH-10", record.hl7_message_id.encode()),) if record.hl7_message_id else ()
    return (
        event(
            record, node, now,
            event_id=EVENT_PATIENT_RECORD,
            action="R",
            participants=outbound(record, node, TRANSACTION, soap=False),
            objects=patient_objects(record.patient_ids, details),
        ),
    )
