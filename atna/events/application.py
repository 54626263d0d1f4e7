"""Application Activity: Carnet started or stopped (DICOM PS3.15 A.5.3.1; ITI TF-2a §3.20.4.1.1.1
"Actor-start-stop").

EventID 110100, EventTypeCode 110120 Application Start / 110121 Application Stop, action E;
ActiveParticipant: the application (process name, process id, our address, RoleIDCode 110150) and,
when `context.user` names who launched it, the Application Launcher (requestor, RoleIDCode 110151).
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import ActiveParticipant, AuditEvent
from atna.events.common import (
    EVENT_APPLICATION_ACTIVITY,
    ROLE_APPLICATION,
    ROLE_APPLICATION_LAUNCHER,
    TYPE_APPLICATION_START,
    TYPE_APPLICATION_STOP,
    AuditNode,
    event,
    local_participant,
)
from registry.ports import AuditRecord

START = "application-start"
STOP = "application-stop"


def _activity(record: AuditRecord, node: AuditNode, now: datetime, type_code) -> tuple[AuditEvent, ...]:
    participants: list[ActiveParticipant] = [
        local_participant(record, node, role=ROLE_APPLICATION, requestor=False, user_id=node.process_name)
    ]
    if record.context.user:
        participants.append(
            ActiveParticipant(user_id=record.context.user, user_is_requestor=True, role_id_codes=(ROLE_APPLICATION_LAUNCHER,))
        )
    return (
        event(
            record, node, now,
            event_id=EVENT_APPLICATION_ACTIVITY,
            action="E",
            participants=tuple(participants),
            type_codes=(type_code,),
        ),
    )


def start(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return _activity(record, node, now, TYPE_APPLICATION_START)


def stop(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return _activity(record, node, now, TYPE_APPLICATION_STOP)
