"""ITI-43 Retrieve Document Set, Document Repository audit (ITI TF-2b §3.43.6.1.2).

EventID 110106 Export, action R; Source = the repository (its endpoint URL, process id, not the
requestor), Destination = the Document Consumer (wsa:ReplyTo, its address, the requestor); Patient 0..1;
one Document per DocumentRequest: ID = documentUniqueId, ID type RFC 3881 "9", details
"Repository Unique Id" and "ihe:homeCommunityID".
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import (
    EVENT_EXPORT,
    ROLE_DESTINATION,
    ROLE_SOURCE,
    WSA_ANONYMOUS,
    AuditNode,
    document_object,
    event,
    human_requestors,
    local_participant,
    our_endpoint,
    patient_objects,
    peer_participant,
)
from registry.ports import AuditRecord

TRANSACTION = "ITI-43"


def repository(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    refs = record.document_refs or tuple((uid, None, None) for uid in record.document_unique_ids)
    documents = tuple(
        document_object(uid, repo or record.repository_unique_id, home or record.home_community_id)
        for uid, repo, home in refs
    )
    participants = (
        local_participant(
            record, node, role=ROLE_SOURCE, requestor=False, user_id=our_endpoint(record, node, TRANSACTION)
        ),
        *human_requestors(record),
        peer_participant(
            record,
            role=ROLE_DESTINATION,
            requestor=True,
            user_id=record.peer_user_id or record.context.reply_to or WSA_ANONYMOUS,
        ),
    )
    return (
        event(
            record, node, now,
            event_id=EVENT_EXPORT,
            action="R",
            participants=participants,
            objects=(*patient_objects(record.patient_ids), *documents),
        ),
    )
