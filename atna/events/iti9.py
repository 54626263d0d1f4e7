"""ITI-9 PIX Query, PIX Manager audit (ITI TF-2a §3.9.5.1.2).

EventID 110112 Query, action E; Source = the PIX Consumer (sending facility|application, its
address), Destination = us (receiving facility|application, process id); Patient 0..n; Query
Parameters: ParticipantObjectQuery = the QPD segment, detail MSH-10.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import EVENT_QUERY, AuditNode, event, inbound, patient_objects, query_object
from registry.ports import AuditRecord

TRANSACTION = "ITI-9"


def pix_manager(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    details = (("MSH-10", record.hl7_message_id.encode()),) if record.hl7_message_id else ()
    return (
        event(
            record, node, now,
            event_id=EVENT_QUERY,
            action="E",
            participants=inbound(record, node, TRANSACTION),
            objects=(
                *patient_objects(record.patient_ids),
                query_object(TRANSACTION, record.query_id or record.hl7_message_id, record.query_body, details),
            ),
        ),
    )
