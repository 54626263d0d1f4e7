"""ITI-45 PIX V3 Query, PIX Manager audit (ITI TF-2b §3.45.5.1.2).

EventID 110112 Query, action E; Source = the PIX Consumer (wsa:ReplyTo, its address), Destination = us
(endpoint URL, process id); Patient 0..n; Query Parameters: ID = the query's message id,
ParticipantObjectQuery = the queryByParameter element.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import EVENT_QUERY, AuditNode, event, inbound, patient_objects, query_object
from registry.ports import AuditRecord

TRANSACTION = "ITI-45"


def pix_manager(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return (
        event(
            record, node, now,
            event_id=EVENT_QUERY,
            action="E",
            participants=inbound(record, node, TRANSACTION),
            objects=(
                *patient_objects(record.patient_ids),
                query_object(TRANSACTION, record.hl7_message_id or record.query_id, record.query_body),
            ),
        ),
    )
