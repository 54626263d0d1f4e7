"""What every audit event builder shares: the node, the codes, the ActiveParticipants and ParticipantObjects.

Codes are DICOM PS3.16 (CID 400 Audit Event ID, CID 402 Audit Participant Role ID, CID 403 Security
Alert Type), RFC 3881 §5.5 (ParticipantObjectIDTypeCode) and the IHE transaction codes (ITI TF-2a
§3.20.7.x: EventTypeCode `ITI-n`, codeSystemName "IHE Transactions"). Each builder is a pure function
of an `AuditRecord`, the `AuditNode` and the time.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from datetime import datetime
from typing import Mapping

import attrs

from atna.dicom import (
    ActiveParticipant,
    AuditEvent,
    AuditSource,
    Code,
    ParticipantObject,
)
from registry.ports import AuditRecord

DCM = "DCM"
IHE_TRANSACTIONS = "IHE Transactions"
RFC_3881 = "RFC-3881"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"  # WS-Addressing 1.0 Core §3.2 ReplyTo default

# EventID (DICOM CID 400)
EVENT_APPLICATION_ACTIVITY = Code("110100", DCM, "Application Activity")
EVENT_EXPORT = Code("110106", DCM, "Export")
EVENT_IMPORT = Code("110107", DCM, "Import")
EVENT_PATIENT_RECORD = Code("110110", DCM, "Patient Record")
EVENT_QUERY = Code("110112", DCM, "Query")
EVENT_SECURITY_ALERT = Code("110113", DCM, "Security Alert")

# EventTypeCode of Application Activity (CID 401) and Security Alert (CID 403)
TYPE_APPLICATION_START = Code("110120", DCM, "Application Start")
TYPE_APPLICATION_STOP = Code("110121", DCM, "Application Stop")
SECURITY_ALERT_TYPES = {
    "110126": "Node Authentication",
    "110127": "Emergency Override Started",
    "110128": "Network Configuration",
    "110129": "Security Configuration",
    "110130": "Hardware Configuration",
    "110131": "Software Configuration",
    "110132": "Use of Restricted Function",
    "110133": "Audit Recording Stopped",
    "110134": "Audit Recording Started",
    "110135": "Object Security Attributes Changed",
    "110136": "Security Roles Changed",
    "110137": "User security Attributes Changed",
    "110138": "Emergency Override Stopped",
    "110139": "Remote Service Operation Started",
    "110140": "Remote Service Operation Stopped",
    "110141": "Local Service Operation Started",
    "110142": "Local Service Operation Stopped",
}
NODE_AUTHENTICATION = "110126"

# RoleIDCode (CID 402)
ROLE_APPLICATION = Code("110150", DCM, "Application")
ROLE_APPLICATION_LAUNCHER = Code("110151", DCM, "Application Launcher")
ROLE_DESTINATION = Code("110152", DCM, "Destination Role ID")
ROLE_SOURCE = Code("110153", DCM, "Source Role ID")

# ParticipantObjectIDTypeCode (RFC 3881 §5.5.4; IHE XDS metadata for the submission set, ITI TF-2b §3.41.7)
ID_PATIENT_NUMBER = Code("2", RFC_3881, "Patient Number")
ID_REPORT_NUMBER = Code("9", RFC_3881, "Report Number")
ID_URI = Code("12", RFC_3881, "URI")
ID_SUBMISSION_SET = Code(
    "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", "IHE XDS Metadata", "submission set classificationNode"
)

TRANSACTION_NAMES = {
    "ITI-8": "Patient Identity Feed",
    "ITI-9": "PIX Query",
    "ITI-10": "PIX Update Notification",
    "ITI-18": "Registry Stored Query",
    "ITI-41": "Provide and Register Document Set-b",
    "ITI-42": "Register Document Set-b",
    "ITI-43": "Retrieve Document Set",
    "ITI-44": "Patient Identity Feed HL7 V3",
    "ITI-45": "PIX V3 Query",
    "ITI-46": "PIX V3 Update Notification",
}

OUTCOMES = {"success": 0, "minor-failure": 4, "serious-failure": 8, "major-failure": 12}


@attrs.frozen
class AuditNode:
    """This Carnet node as its audit messages name it (ITI TF-2a §3.20.7.x, RFC 3881 §5.4).

    `audit_source_id`: AuditSourceID (unique in the affinity domain, e.g. "carnet@host");
    `host`: our NetworkAccessPointID (DNS name or IP); `process_id`: the AlternativeUserID IHE asks
    for on our ActiveParticipant (the process id); `endpoints`: transaction → our endpoint URL, used
    when the TransactionContext does not carry the one the request reached."""

    audit_source_id: str
    host: str
    process_id: str
    process_name: str = "carnet"
    audit_enterprise_site_id: str | None = None
    endpoints: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    audit_source_type: str = "4"  # RFC 3881 §5.4.3: 4 = application server process

    @classmethod
    def local(
        cls,
        *,
        audit_source_id: str | None = None,
        audit_enterprise_site_id: str | None = None,
        host: str | None = None,
        endpoints: Mapping[str, str] | None = None,
        process_name: str = "carnet",
    ) -> "AuditNode":
        """This process on this machine (for config/: reads the host name and process id once)."""
        host = host or socket.getfqdn()
        return cls(
            audit_source_id=audit_source_id or f"{process_name}@{host}",
            host=host,
            process_id=str(os.getpid()),
            process_name=process_name,
            audit_enterprise_site_id=audit_enterprise_site_id,
            endpoints=dict(endpoints or {}),
        )


def normalize_transaction(transaction: str) -> str:
    """Transaction names as the IHE codes write them: "ITI-08" and "iti-8" → "ITI-8"."""
    head, sep, number = transaction.strip().upper().partition("-")
    return f"{head}-{int(number)}" if sep and head == "ITI" and number.isdigit() else transaction


def transaction_code(transaction: str) -> Code:
    return Code(transaction, IHE_TRANSACTIONS, TRANSACTION_NAMES.get(transaction, transaction))


def outcome(record: AuditRecord) -> int:
    try:
        return OUTCOMES[record.outcome]
    except KeyError:
        raise ValueError(f"unknown audit outcome {record.outcome!r}") from None


def network_access_point(address: str | None) -> tuple[str | None, str | None]:
    """(NetworkAccessPointID, NetworkAccessPointTypeCode): 2 for an IP address, 1 for a machine name."""
    if not address:
        return None, None
    try:
        ipaddress.ip_address(address.strip("[]"))
        return address, "2"
    except ValueError:
        return address, "1"


def _url_host(value: str | None) -> str | None:
    if value and "://" in value:
        return urllib.parse.urlsplit(value).hostname
    return None


def our_endpoint(record: AuditRecord, node: AuditNode, transaction: str) -> str:
    return (
        record.local_user_id
        or record.context.endpoint
        or node.endpoints.get(transaction)
        or node.process_name
    )


def local_participant(
    record: AuditRecord, node: AuditNode, *, role: Code, requestor: bool, user_id: str
) -> ActiveParticipant:
    nap, nap_type = network_access_point(node.host)
    return ActiveParticipant(
        user_id=user_id,
        user_is_requestor=requestor,
        alternative_user_id=node.process_id,
        network_access_point_id=nap,
        network_access_point_type_code=nap_type,
        role_id_codes=(role,),
    )


def peer_participant(
    record: AuditRecord, *, role: Code, requestor: bool, user_id: str | None, inbound: bool = True
) -> ActiveParticipant:
    """The other party. Its address: `peer_address`, else (inbound) the connection's remote host,
    else the host of its URL."""
    address = record.peer_address or (record.context.remote_host if inbound else None) or _url_host(user_id)
    nap, nap_type = network_access_point(address)
    return ActiveParticipant(
        user_id=user_id or "",
        user_is_requestor=requestor,
        network_access_point_id=nap,
        network_access_point_type_code=nap_type,
        role_id_codes=(role,),
    )


def human_requestors(record: AuditRecord) -> tuple[ActiveParticipant, ...]:
    """The person behind the request, when XUA names one (ITI TF-2b §3.40.4.2; ITI TF-2a §3.20.7.x
    "Human Requestor (if known)"): UserIsRequestor true, roles from the assertion."""
    ctx = record.context
    if not ctx.user:
        return ()
    return (
        ActiveParticipant(
            user_id=ctx.user,
            user_is_requestor=True,
            user_name=ctx.user_name,
            role_id_codes=tuple(Code(c, s, d or c) for c, s, d in ctx.user_roles),
        ),
    )


# AuditSourceTypeCode (RFC 3881 §5.4.3, DICOM PS3.15 A.5.1)
AUDIT_SOURCE_TYPES = {
    "1": "End-user display device, diagnostic device",
    "2": "Data acquisition device or instrument",
    "3": "Web Server process or thread",
    "4": "Application Server process or thread",
    "5": "Database Server process or thread",
    "6": "Security server, e.g., a domain controller",
    "7": "ISO level 1-3 network component",
    "8": "ISO level 4-6 operating software",
    "9": "Other",
}


def audit_source(node: AuditNode) -> AuditSource:
    kind = node.audit_source_type
    return AuditSource(
        audit_source_id=node.audit_source_id,
        audit_enterprise_site_id=node.audit_enterprise_site_id,
        type_codes=(Code(kind, DCM, AUDIT_SOURCE_TYPES.get(kind, kind)),),
    )


def patient_object(patient_id: str, details: tuple[tuple[str, bytes], ...] = ()) -> ParticipantObject:
    """Patient (ParticipantObjectTypeCode 1, role 1; ID type RFC 3881 "2" Patient Number; the HL7 CX)."""
    return ParticipantObject(
        id_type_code=ID_PATIENT_NUMBER, object_id=patient_id, type_code="1", type_code_role="1", details=details
    )


def patient_objects(ids: tuple[str, ...], details: tuple[tuple[str, bytes], ...] = ()) -> tuple[ParticipantObject, ...]:
    return tuple(patient_object(p, details) for p in dict.fromkeys(i for i in ids if i))


def submission_set_object(unique_id: str | None) -> ParticipantObject:
    """SubmissionSet (type 2, role 20 "job"; ID type the submission set classificationNode; its uniqueId)."""
    return ParticipantObject(id_type_code=ID_SUBMISSION_SET, object_id=unique_id, type_code="2", type_code_role="20")


def query_object(
    transaction: str, query_id: str | None, query: bytes | None, details: tuple[tuple[str, bytes], ...] = ()
) -> ParticipantObject:
    """Query parameters (type 2, role 24 "query"; ID type the transaction code)."""
    return ParticipantObject(
        id_type_code=transaction_code(transaction),
        object_id=query_id,
        type_code="2",
        type_code_role="24",
        query=query,
        details=details,
    )


def document_object(unique_id: str, repository_unique_id: str | None, home_community_id: str | None) -> ParticipantObject:
    """A document (type 2, role 3 "report"; ID type RFC 3881 "9" Report Number; its uniqueId), ITI TF-2b §3.43.6.1."""
    details: list[tuple[str, bytes]] = []
    if repository_unique_id:
        details.append(("Repository Unique Id", repository_unique_id.encode()))
    if home_community_id:
        details.append(("ihe:homeCommunityID", home_community_id.encode()))
    return ParticipantObject(
        id_type_code=ID_REPORT_NUMBER, object_id=unique_id, type_code="2", type_code_role="3", details=tuple(details)
    )


def event(
    record: AuditRecord,
    node: AuditNode,
    now: datetime,
    *,
    event_id: Code,
    action: str,
    participants: tuple[ActiveParticipant, ...],
    objects: tuple[ParticipantObject, ...] = (),
    type_codes: tuple[Code, ...] | None = None,
) -> AuditEvent:
    """An AuditEvent with what every transaction shares: type code, outcome (its XDS/HL7 error codes as
    EventOutcomeDescription), XUA purposes of use, the audit source."""
    if now.tzinfo is None:
        raise ValueError("audit events need an aware datetime (EventDateTime carries its offset)")
    transaction = normalize_transaction(record.transaction)
    return AuditEvent(
        event_id=event_id,
        date_time=now,
        outcome=outcome(record),
        source=audit_source(node),
        action=action,
        event_type_codes=type_codes if type_codes is not None else (transaction_code(transaction),),
        outcome_description=" ".join(record.error_codes) or None,
        purposes_of_use=tuple(Code(c, s, d or c) for c, s, d in record.context.purposes_of_use),
        participants=participants,
        objects=objects,
    )


# --- the two shapes of a transaction's participants ------------------------------------------------


def inbound(record: AuditRecord, node: AuditNode, transaction: str) -> tuple[ActiveParticipant, ...]:
    """We received the request: the peer is the Source (110153) and requestor, we are the Destination
    (110152, with our process id). SOAP: the peer's UserID is wsa:ReplyTo, ours the endpoint URL
    (ITI TF-2a §3.18.5.1.2, TF-2b §3.41.7.1.2, §3.42.7.1.2, §3.44.5.1.2, §3.45.5.1.2); HL7v2: the
    sending/receiving facility|application (ITI TF-2a §3.8.5.1.2, §3.9.5.1.2)."""
    peer_id = record.peer_user_id or record.context.reply_to
    if peer_id is None and transaction not in ("ITI-8", "ITI-9"):
        peer_id = WSA_ANONYMOUS  # no ReplyTo: WS-Addressing's default, anonymous
    return (
        peer_participant(record, role=ROLE_SOURCE, requestor=True, user_id=peer_id),
        *human_requestors(record),
        local_participant(
            record, node, role=ROLE_DESTINATION, requestor=False, user_id=our_endpoint(record, node, transaction)
        ),
    )


def outbound(record: AuditRecord, node: AuditNode, transaction: str, *, soap: bool) -> tuple[ActiveParticipant, ...]:
    """We sent the request: we are the Source (110153, requestor, process id) — SOAP: our wsa:ReplyTo
    (anonymous unless `local_user_id`), HL7v2: our sending facility|application (`local_user_id`) —
    and the peer is the Destination (its endpoint URL or receiving facility|application)."""
    ours = record.local_user_id or (WSA_ANONYMOUS if soap else node.process_name)
    return (
        local_participant(record, node, role=ROLE_SOURCE, requestor=True, user_id=ours),
        *human_requestors(record),
        peer_participant(
            record,
            role=ROLE_DESTINATION,
            requestor=False,
            user_id=record.peer_user_id or record.context.endpoint,
            inbound=False,
        ),
    )
