"""DICOM audit message → FHIR R4 AuditEvent, and the ITI-81 searchset Bundle (sans-I/O).

The mapping follows the IHE ITI RESTful ATNA supplement (ITI-81 §3.81.4.2.2, "AuditEvent
resource": the DICOM ⇄ FHIR AuditEvent mapping of http://hl7.org/fhir/R4/auditevent-mappings.html,
DICOM column). What is mapped, element by element:

| FHIR AuditEvent            | DICOM PS3.15 A.5.1                                               |
|----------------------------|------------------------------------------------------------------|
| id                         | the ARR's record id (not in the message)                         |
| type                       | EventID                                                          |
| subtype[]                  | EventTypeCode                                                    |
| action                     | EventActionCode                                                  |
| recorded                   | EventDateTime (a time without zone is read as UTC)               |
| outcome / outcomeDesc      | EventOutcomeIndicator / EventOutcomeDescription                  |
| purposeOfEvent[]           | PurposeOfUse                                                     |
| agent[].type / .role[]     | first RoleIDCode / the further RoleIDCodes                       |
| agent[].who.identifier.value | UserID                                                         |
| agent[].altId, .name, .requestor | AlternativeUserID, UserName, UserIsRequestor               |
| agent[].network            | NetworkAccessPointID, NetworkAccessPointTypeCode                 |
| source.site / .observer / .type[] | AuditEnterpriseSiteID / AuditSourceID (observer.display) / AuditSourceTypeCode |
| entity[].what.identifier   | ParticipantObjectID (value as sent), ParticipantObjectIDTypeCode (identifier.type) |
| entity[].type / .role / .lifecycle | ParticipantObjectTypeCode / …TypeCodeRole / …DataLifeCycle |
| entity[].securityLabel[]   | ParticipantObjectSensitivity (code only)                         |
| entity[].name / .query     | ParticipantObjectName / ParticipantObjectQuery (base64)           |
| entity[].detail[]          | ParticipantObjectDetail (type, valueBase64Binary)                |

Not mapped: MediaIdentifier/MediaType (agent.media), ParticipantObjectDescription and other DICOM
extensions (the dicom model does not read them). Code systems: `DCM` →
http://dicom.nema.org/resources/ontology/DCM, `IHE Transactions` → urn:ihe:event-type-code (as
IHE BALP writes ITI transaction codes), an OID → urn:oid:…; any other codeSystemName is not a
URI, so the Coding carries code and display only (never a made-up system).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any, Iterable, Sequence
from urllib.parse import urlencode

from atna.dicom import AuditEvent, Code

FHIR_JSON = "application/fhir+json; charset=utf-8"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
IHE_EVENT_TYPE = "urn:ihe:event-type-code"
ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NETWORK_TYPES = frozenset("12345")  # FHIR R4 network-type codes = NetworkAccessPointTypeCode

_SYSTEMS = {"DCM": DCM, "IHE TRANSACTIONS": IHE_EVENT_TYPE, "IHE": IHE_EVENT_TYPE}
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def code_system(name: str | None) -> str | None:
    if not name:
        return None
    known = _SYSTEMS.get(name.strip().upper())
    if known:
        return known
    if _OID.match(name.strip()):
        return "urn:oid:" + name.strip()
    if name.startswith(("http://", "https://", "urn:")):
        return name
    return None


def coding(code: Code, *, system: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sys = system or code_system(code.code_system_name)
    if sys:
        out["system"] = sys
    out["code"] = code.code
    display = code.original_text or code.display_name
    if display:
        out["display"] = display
    return out


def _plain(system: str, code: str | None) -> dict[str, Any] | None:
    return {"system": system, "code": code} if code else None


def recorded(event: AuditEvent) -> str:
    when = event.date_time
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def audit_event_resource(record_id: str, event: AuditEvent) -> dict[str, Any]:
    """The FHIR R4 AuditEvent of one stored audit message (see the module table)."""
    res: dict[str, Any] = {"resourceType": "AuditEvent", "id": record_id, "type": coding(event.event_id)}
    if event.event_type_codes:
        res["subtype"] = [coding(c) for c in event.event_type_codes]
    if event.action:
        res["action"] = event.action
    res["recorded"] = recorded(event)
    res["outcome"] = str(event.outcome)
    if event.outcome_description:
        res["outcomeDesc"] = event.outcome_description
    if event.purposes_of_use:
        res["purposeOfEvent"] = [{"coding": [coding(c)]} for c in event.purposes_of_use]
    agents = []
    for p in event.participants:
        agent: dict[str, Any] = {}
        if p.role_id_codes:
            agent["type"] = {"coding": [coding(p.role_id_codes[0])]}
            if len(p.role_id_codes) > 1:
                agent["role"] = [{"coding": [coding(c)]} for c in p.role_id_codes[1:]]
        if p.user_id:
            agent["who"] = {"identifier": {"value": p.user_id}}
        if p.alternative_user_id:
            agent["altId"] = p.alternative_user_id
        if p.user_name:
            agent["name"] = p.user_name
        agent["requestor"] = p.user_is_requestor
        if p.network_access_point_id:
            network = {"address": p.network_access_point_id}
            if p.network_access_point_type_code in NETWORK_TYPES:
                network["type"] = p.network_access_point_type_code
            agent["network"] = network
        agents.append(agent)
    # FHIR R4 AuditEvent.agent is 1..*: a message without ActiveParticipant keeps an empty agent
    # that says only "not a requestor" rather than a made-up participant.
    res["agent"] = agents or [{"requestor": False}]
    source: dict[str, Any] = {"observer": {"display": event.source.audit_source_id or "unknown"}}
    if event.source.audit_enterprise_site_id:
        source["site"] = event.source.audit_enterprise_site_id
    if event.source.type_codes:
        source["type"] = [
            coding(c, system=SOURCE_TYPE if c.code in {str(i) for i in range(1, 10)} else None)
            for c in event.source.type_codes
        ]
    res["source"] = source
    entities = []
    for o in event.objects:
        entity: dict[str, Any] = {}
        what: dict[str, Any] = {"value": o.object_id} if o.object_id else {}
        what["type"] = {"coding": [coding(o.id_type_code)]}
        entity["what"] = {"identifier": what}
        for key, system, value in (
            ("type", ENTITY_TYPE, o.type_code),
            ("role", OBJECT_ROLE, o.type_code_role),
            ("lifecycle", LIFECYCLE, o.data_life_cycle),
        ):
            c = _plain(system, value)
            if c:
                entity[key] = c
        if o.sensitivity:
            entity["securityLabel"] = [{"code": o.sensitivity}]
        if o.name is not None:
            entity["name"] = o.name
        if o.query is not None:
            entity["query"] = _b64(o.query)
        if o.details:
            entity["detail"] = [{"type": t, "valueBase64Binary": _b64(v)} for t, v in o.details]
        entities.append(entity)
    if entities:
        res["entity"] = entities
    return res


def searchset(
    resources: Sequence[dict[str, Any]],
    *,
    base_url: str,
    params: Iterable[tuple[str, str]],
    count: int,
    offset: int,
    more: bool,
) -> dict[str, Any]:
    """A FHIR R4 Bundle of type searchset with self/next/previous links (FHIR R4 §3.1.1.6 paging).
    `total` is left out (optional): counting every match of a large ARR costs a full scan."""
    kept = [(k, v) for k, v in params if k not in ("_count", "_offset")]

    def link(relation: str, start: int) -> dict[str, str]:
        query = urlencode(kept + [("_count", str(count)), ("_offset", str(start))])
        return {"relation": relation, "url": f"{base_url}?{query}"}

    links = [link("self", offset)]
    if more:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"fullUrl": f"{base_url}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
        ],
    }


def operation_outcome(diagnostics: str, *, code: str = "invalid", severity: str = "error") -> dict[str, Any]:
    """FHIR R4 OperationOutcome with one issue (issue-type `invalid`, `not-found`, `exception`…)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
