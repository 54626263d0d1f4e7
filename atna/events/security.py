"""Security Alert (DICOM PS3.15 A.5.3.11), and its most common form, node authentication failure
(ITI TF-2a §3.19.6 / §3.20.4.1.1.1 "Node-Authentication-failure": EventTypeCode 110126).

EventID 110113, action E, EventTypeCode from DICOM CID 403 (`record.alert_type`, default 110126);
ActiveParticipants: the reporting process, us (requestor, process id, our address; UserID the port
or endpoint that saw it) and the performing party, the peer (its certificate subject or name in
`peer_user_id`, its address); ParticipantObject: the alert subject (type 2, role 13 "Security
Resource", ID type RFC 3881 "12" URI: the peer), with detail "Alert Description" = the reason
(`error_codes`, e.g. the TLS verification error).
"""

from __future__ import annotations

from datetime import datetime

import attrs

from atna.dicom import AuditEvent, Code, ParticipantObject
from atna.events.common import (
    DCM,
    EVENT_SECURITY_ALERT,
    ID_URI,
    NODE_AUTHENTICATION,
    SECURITY_ALERT_TYPES,
    AuditNode,
    event,
    local_participant,
    our_endpoint,
    peer_participant,
)
from registry.ports import AuditRecord

NODE_AUTHENTICATION_FAILURE = "node-authentication-failure"
SECURITY_ALERT = "security-alert"

ROLE_SECURITY_RESOURCE = "13"  # RFC 3881 §5.5.3 ParticipantObjectTypeCodeRole


def alert_type_code(code: str) -> Code:
    if code not in SECURITY_ALERT_TYPES:
        raise ValueError(f"{code!r} is not a DICOM CID 403 security alert type")
    return Code(code, DCM, SECURITY_ALERT_TYPES[code])


def security_alert(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    type_code = alert_type_code(record.alert_type or NODE_AUTHENTICATION)
    peer_id = record.peer_user_id or record.peer_address or record.context.remote_host or ""
    objects: tuple[ParticipantObject, ...] = ()
    if peer_id:
        description = " ".join(record.error_codes)
        objects = (
            ParticipantObject(
                id_type_code=ID_URI,
                object_id=peer_id,
                type_code="2",
                type_code_role=ROLE_SECURITY_RESOURCE,
                details=(("Alert Description", description.encode()),) if description else (),
            ),
        )
    # DICOM A.5.3.11: the reporting process (requestor) and the performing party; no RoleIDCode.
    participants = (
        attrs.evolve(
            local_participant(
                record, node, role=type_code, requestor=True, user_id=our_endpoint(record, node, record.transaction)
            ),
            role_id_codes=(),
        ),
        attrs.evolve(peer_participant(record, role=type_code, requestor=False, user_id=peer_id), role_id_codes=()),
    )
    return (
        event(
            record, node, now,
            event_id=EVENT_SECURITY_ALERT,
            action="E",
            participants=participants,
            objects=objects,
            type_codes=(type_code,),
        ),
    )


def node_authentication_failure(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    if record.alert_type not in (None, NODE_AUTHENTICATION):
        raise ValueError("a node authentication failure is alert type 110126")
    return security_alert(record, node, now=now)
