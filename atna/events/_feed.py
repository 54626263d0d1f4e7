"""The Patient Record event shared by the identity feeds ITI-8 (HL7v2) and ITI-44 (HL7v3).

ITI TF-2a §3.8.5.1.2 / TF-2b §3.44.5.1.2: EventID 110110 Patient Record; action C for a new patient
(A01/A04/A05, PRPA_IN201301UV02), U for an update (A08, PRPA_IN201302UV02). A merge (A40,
PRPA_IN201304UV02; TF-2a §3.8.5.2.2) is audited twice: D for the subsumed patient, U for the
surviving one (as IPF does). Each Patient carries the message id as a ParticipantObjectDetail
(`MSH-10` for HL7v2, `II` for HL7v3).
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events.common import EVENT_PATIENT_RECORD, AuditNode, event, inbound, patient_objects
from registry.ports import AuditRecord


def feed_events(
    record: AuditRecord, node: AuditNode, now: datetime, *, transaction: str, detail_type: str
) -> tuple[AuditEvent, ...]:
    details = ((detail_type, record.hl7_message_id.encode()),) if record.hl7_message_id else ()
    participants = inbound(record, node, transaction)

    def one(action: str, ids: tuple[str, ...]) -> AuditEvent:
        return event(
            record, node, now,
            event_id=EVENT_PATIENT_RECORD,
            action=action,
            participants=participants,
            objects=patient_objects(ids, details),
        )

    if record.merged_patient_ids:
        return (one("D", record.merged_patient_ids), one("U", record.patient_ids))
    return (one(record.action or "C", record.patient_ids),)
