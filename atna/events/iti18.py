"""ITI-18 Registry Stored Query, Document Registry audit (ITI TF-2a §3.18.5.1.2).

EventID 110112 Query, action E; Source = the Document Consumer (wsa:ReplyTo, its address), Destination =
the registry (endpoint URL, process id); Patient 0..n; Query Parameters: ID = the stored query UUID,
ParticipantObjectQuery = the AdhocQueryRequest, details QueryEncoding and, when known,
urn:ihe:iti:xca:2010:homeCommunityId.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import EVENT_QUERY, AuditNode, event, inbound, patient_objects, query_object
from registry.ports import AuditRecord

TRANSACTION = "ITI-18"


def registry(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    details = [("QueryEncoding", b"UTF-8")]
    if record.home_community_id:
        details.append(("urn:ihe:iti:xca:2010:homeCommunityId", record.home_community_id.encode()))
    return (
        event(
            record, node, now,
            event_id=EVENT_QUERY,
            action="E",
            participants=inbound(record, node, TRANSACTION),
            objects=(
                *patient_objects(record.patient_ids),
                query_object(TRANSACTION, record.query_id, record.query_body, tuple(details)),
            ),
        ),
    )
