"""One received syslog message → the row the ARR stores (`StoredAudit`), sans-I/O.

RFC 5424 (`atna.syslog.parse_message`) then the DICOM PS3.15 A.5 audit message in MSG
(`atna.dicom.parse_audit_message`), once; the indexed values come from the parsed `AuditEvent`.
Anything that fails is `MalformedAudit` (counted by the receiver, never raised to the listener).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import attrs

from atna.arr.query import format_time, split_cx
from atna.dicom import AuditEvent, AuditMessageError, parse_audit_message
from atna.syslog import SyslogFormatError, SyslogMessage, parse_message

# The sender's unique event id travels in STRUCTURED-DATA (RFC 5424 §6.3): `[carnet@32473 eventId="…"]`.
EVENT_ID_SD = "carnet@32473"
EVENT_ID_PARAM = "eventId"

# DICOM PS3.15 A.5.1 / RFC 3881 §5.5: ParticipantObjectTypeCode 1 = Person,
# ParticipantObjectTypeCodeRole 1 = Patient.
PERSON, PATIENT_ROLE = "1", "1"


class MalformedAudit(ValueError):
    """A message the ARR cannot store: bad syslog, bad XML, or not a DICOM audit message."""


@attrs.frozen
class ParticipantIndex:
    user_id: str | None
    alt_user_id: str | None
    user_name: str | None
    requestor: bool
    network_address: str | None
    role_code: str | None


@attrs.frozen
class PatientIndex:
    patient_id: str  # ParticipantObjectID as sent
    value: str
    system: str | None


@attrs.frozen
class StoredAudit:
    dedupe_key: str
    event_id_code: str
    event_action: str | None
    event_time: str | None
    outcome: str | None
    purpose_of_use: str | None
    source_id: str | None
    source_site: str | None
    sender_host: str | None
    peer_address: str | None
    received_at: str
    raw: bytes
    types: tuple[tuple[str, str | None], ...] = ()
    participants: tuple[ParticipantIndex, ...] = ()
    patients: tuple[PatientIndex, ...] = ()


def dedupe_key(message: SyslogMessage) -> str:
    """The sender's event id when it sent one, else the SHA-256 of the audit message (MSG
    without BOM): a resend with a fresh syslog header is still the same event."""
    try:
        event_id = message.sd_param(EVENT_ID_SD, EVENT_ID_PARAM)
    except SyslogFormatError:
        event_id = None
    if event_id:
        return "eventid:" + event_id[:150]
    return "sha256:" + hashlib.sha256(message.payload).hexdigest()


def patient_index(object_id: str) -> PatientIndex | None:
    value, system = split_cx(object_id)
    if not value:
        return None
    return PatientIndex(object_id, value, system)


def read_audit(raw: bytes) -> tuple[SyslogMessage, AuditEvent]:
    """The syslog message and its audit event, or `MalformedAudit` (RFC 5424 §6, PS3.15 A.5.1)."""
    try:
        message = parse_message(raw)
    except SyslogFormatError as exc:
        raise MalformedAudit(f"syslog: {exc.reason}") from None
    payload = message.payload
    if not payload.strip():
        raise MalformedAudit("syslog message without MSG")
    try:
        return message, parse_audit_message(payload)
    except AuditMessageError as exc:
        raise MalformedAudit(f"audit message: {exc}") from None


def received_time(received_at: float) -> str:
    """The stored form of a time of receipt (epoch seconds)."""
    return format_time(dt.datetime.fromtimestamp(received_at, dt.timezone.utc))


def stored_audit(raw: bytes, *, received_at: float | str, peer_address: str | None = None) -> StoredAudit:
    """The row for one received syslog message (parsed once), or `MalformedAudit`. `received_at`:
    epoch seconds, or already `received_time(...)` (a batch received at once formats it once)."""
    message, event = read_audit(raw)
    when = event.date_time
    if when.tzinfo is None:  # PS3.15 asks for a zone; read a missing one as UTC
        when = when.replace(tzinfo=dt.timezone.utc)
    patients = []
    for obj in event.objects_with(PERSON, PATIENT_ROLE):
        # A PIX feed names every identifier of the patient, as repeated CX (HL7 v2 `~`).
        for cx in (obj.object_id or "").split("~"):
            index = patient_index(cx.strip())
            if index is not None and index not in patients:
                patients.append(index)
    return StoredAudit(
        dedupe_key=dedupe_key(message),
        event_id_code=event.event_id.code[:64],
        event_action=event.action[:1] if event.action else None,
        event_time=format_time(when),
        outcome=str(event.outcome)[:2],
        purpose_of_use=event.purposes_of_use[0].code[:64] if event.purposes_of_use else None,
        source_id=_cut(event.source.audit_source_id),
        source_site=_cut(event.source.audit_enterprise_site_id),
        sender_host=_cut(message.hostname if message.hostname != "-" else None),
        peer_address=peer_address[:64] if peer_address else None,
        received_at=received_at if isinstance(received_at, str) else received_time(received_at),
        raw=bytes(raw),
        types=tuple((c.code[:64], _cut(c.code_system_name)) for c in event.event_type_codes),
        participants=tuple(
            ParticipantIndex(
                user_id=_cut(p.user_id),
                alt_user_id=_cut(p.alternative_user_id),
                user_name=_cut(p.user_name),
                requestor=p.user_is_requestor,
                network_address=_cut(p.network_access_point_id),
                role_code=p.role_id_codes[0].code[:64] if p.role_id_codes else None,
            )
            for p in event.participants
        ),
        patients=tuple(patients),
    )


def _cut(text: str | None, limit: int = 512) -> str | None:
    """Indexed columns hold at most `limit` characters (the raw message keeps the full value)."""
    if text is None or text == "":
        return None if text is None else ""
    return text[:limit]
