"""The patient's access history (DESIGN.md §4 "History": every access and action on the dossier is
traced and visible to the patient), built from stored audit messages (sans-I/O).

One entry per audit event that names the patient (ParticipantObject type 1 role 1), newest first:

- `time`: EventDateTime; `transaction`: the EventTypeCode (ITI-18, ITI-41, …) with its text;
  `event`: EventID (110112 Query, 110106 Export, 110107 Import, 110110 Patient Record, …);
- `action`: EventActionCode in words (create, read, update, delete, execute); `outcome`:
  EventOutcomeIndicator in words (success, minor-failure, serious-failure, major-failure);
- `access_mode`: the PurposeOfUse of the DMP's access modes (code system 1.2.250.1.213.1.1.4.248:
  `normal`, `bris_de_glace`, `centre_15`) when the event carries one, else the first PurposeOfUse
  code, else null (the event said nothing; it is not assumed "normal");
- `who`: the human requestors (UserIsRequestor true and no machine RoleIDCode: not 110150 Application,
  110151 Application Launcher, 110152 Destination, 110153 Source); if none, the requesting systems;
- `structure`: where the request came from: the Source ActiveParticipant (RoleIDCode 110153: the
  requesting system's UserID, AlternativeUserID and NetworkAccessPointID) and the audit source
  (AuditSourceID, AuditEnterpriseSiteID). DICOM PS3.15 has no field for the professional's
  organisation as such (the DMP's VIHF `Identifiant_Structure`), so this is the closest honest answer;
- `documents`: ParticipantObjectIDs of documents (type 2, role 3 Report; ITI TF-2b §3.41.5, §3.43.5)
  and `submission_sets` (type 2, role 20 Job).
"""

from __future__ import annotations

from typing import Any

from atna.arr.fhir import recorded
from atna.dicom import AuditEvent

DMP_ACCESS_MODES = "1.2.250.1.213.1.1.4.248"
MACHINE_ROLES = frozenset(("110150", "110151", "110152", "110153"))
SOURCE_ROLE = "110153"
ACTIONS = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "execute"}
OUTCOMES = {0: "success", 4: "minor-failure", 8: "serious-failure", 12: "major-failure"}


def _text(code) -> str | None:
    return code.original_text or code.display_name


def access_mode(event: AuditEvent) -> str | None:
    for c in event.purposes_of_use:
        if (c.code_system_name or "").removeprefix("urn:oid:") == DMP_ACCESS_MODES:
            return c.code
    return event.purposes_of_use[0].code if event.purposes_of_use else None


def _person(p) -> dict[str, Any]:
    return {"id": p.user_id or None, "name": p.user_name, "alternative_id": p.alternative_user_id}


def history_entry(record_id: str, event: AuditEvent) -> dict[str, Any]:
    requestors = [p for p in event.participants if p.user_is_requestor]
    humans = [p for p in requestors if not any(c.code in MACHINE_ROLES for c in p.role_id_codes)]
    source = event.participant_with_role(SOURCE_ROLE)
    return {
        "id": record_id,
        "time": recorded(event),
        "transaction": [{"code": c.code, "text": _text(c)} for c in event.event_type_codes],
        "event": {"code": event.event_id.code, "text": _text(event.event_id)},
        "action": ACTIONS.get(event.action or "", event.action),
        "outcome": OUTCOMES.get(event.outcome, str(event.outcome)),
        "access_mode": access_mode(event),
        "who": [_person(p) for p in (humans or requestors)],
        "structure": {
            "system": source.user_id or None if source else None,
            "system_alternative_id": source.alternative_user_id if source else None,
            "address": source.network_access_point_id if source else None,
            "audit_source": event.source.audit_source_id or None,
            "audit_site": event.source.audit_enterprise_site_id,
        },
        "documents": [o.object_id for o in event.objects_with("2", "3") if o.object_id],
        "submission_sets": [o.object_id for o in event.objects_with("2", "20") if o.object_id],
    }
