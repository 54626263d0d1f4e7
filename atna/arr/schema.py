"""The Audit Record Repository's tables (SQLAlchemy Core), on the registry's metadata.

One row per stored audit message in `audit_record`: the received syslog message kept whole
(`raw`, RFC 5424 header and the DICOM PS3.15 A.5 `AuditMessage`), plus indexed columns for the
ITI-81 search parameters (IHE ITI RESTful ATNA supplement §3.81.4.1.2.1) and the per-patient
history. Repeated values (EventTypeCode, ActiveParticipant, patient ParticipantObject) have side
tables keyed by `record_id`. Created by `registry.db.create_schema` and by Alembic revision 0004.

`dedupe_key` is unique: the sender's event id from the syslog STRUCTURED-DATA
(`[carnet@32473 eventId="…"]`, `eventid:` prefix) or, without one, the SHA-256 of the audit
message (`sha256:` prefix), so a resent event is stored once (DESIGN.md §3 rule 9).

Times are normalised to UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 characters: they sort as strings
in time order); `event_time` is NULL when the message's EventDateTime cannot be read.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, LargeBinary, String, Table

from registry.schema import metadata

RECORD_ID = 32  # a UUID's 32 hex digits (version 7 since registry.uuid7; version 4 before)
KEY = 160
CODE = 64
TIME = 27
TEXT = 512

audit_record = Table(
    "audit_record",
    metadata,
    Column("id", String(RECORD_ID), primary_key=True),
    Column("dedupe_key", String(KEY), nullable=False),
    Column("event_id_code", String(CODE), nullable=False),  # EventID csd-code (DCM 110112, …)
    Column("event_action", String(1), nullable=True),  # EventActionCode C R U D E
    Column("event_time", String(TIME), nullable=True),  # EventDateTime, UTC
    Column("outcome", String(2), nullable=True),  # EventOutcomeIndicator 0 4 8 12
    Column("purpose_of_use", String(CODE), nullable=True),  # access mode (normal, bris_de_glace, …)
    Column("source_id", String(TEXT), nullable=True),  # AuditSourceIdentification@AuditSourceID
    Column("source_site", String(TEXT), nullable=True),  # …@AuditEnterpriseSiteID
    Column("sender_host", String(TEXT), nullable=True),  # syslog HOSTNAME (RFC 5424 §6.2.4)
    Column("peer_address", String(CODE), nullable=True),  # the transport peer (IP), if any
    Column("received_at", String(TIME), nullable=False),
    Column("raw", LargeBinary, nullable=False),  # the syslog message as received
)
Index("ux_audit_record_dedupe_key", audit_record.c.dedupe_key, unique=True)
Index("ix_audit_record_event_time", audit_record.c.event_time)
Index("ix_audit_record_event_id", audit_record.c.event_id_code, audit_record.c.event_time)
Index("ix_audit_record_source", audit_record.c.source_id)
Index("ix_audit_record_received_at", audit_record.c.received_at)

# EventTypeCode (ITI-81 `subtype`): one row per code.
audit_record_type = Table(
    "audit_record_type",
    metadata,
    Column("record_id", String(RECORD_ID), nullable=False),
    Column("code", String(CODE), nullable=False),
    Column("system", String(TEXT), nullable=True),  # codeSystemName as sent
)
Index("ix_audit_record_type_record", audit_record_type.c.record_id)
Index("ix_audit_record_type_code", audit_record_type.c.code)

# ActiveParticipant (ITI-81 `agent` / `user`, `address`): one row per participant.
audit_record_participant = Table(
    "audit_record_participant",
    metadata,
    Column("record_id", String(RECORD_ID), nullable=False),
    Column("user_id", String(TEXT), nullable=True),
    Column("alt_user_id", String(TEXT), nullable=True),
    Column("user_name", String(TEXT), nullable=True),
    Column("requestor", Boolean, nullable=False),
    Column("network_address", String(TEXT), nullable=True),  # NetworkAccessPointID
    Column("role_code", String(CODE), nullable=True),  # first RoleIDCode csd-code
)
Index("ix_audit_record_participant_record", audit_record_participant.c.record_id)
Index("ix_audit_record_participant_user", audit_record_participant.c.user_id)
Index("ix_audit_record_participant_address", audit_record_participant.c.network_address)

# Patients named by the event: ParticipantObjectIdentification with ParticipantObjectTypeCode 1
# (Person) and ParticipantObjectTypeCodeRole 1 (Patient) (DICOM PS3.15 A.5.1; RFC 3881 §5.5).
audit_record_patient = Table(
    "audit_record_patient",
    metadata,
    Column("record_id", String(RECORD_ID), nullable=False),
    Column("patient_id", String(TEXT), nullable=False),  # ParticipantObjectID as sent (a CX)
    Column("id_value", String(TEXT), nullable=False),  # CX.1
    Column("id_system", String(TEXT), nullable=True),  # CX.4.2, the assigning authority's OID
)
Index("ix_audit_record_patient_record", audit_record_patient.c.record_id)
Index("ix_audit_record_patient_value", audit_record_patient.c.id_value, audit_record_patient.c.id_system)

TABLES = (audit_record, audit_record_type, audit_record_participant, audit_record_patient)
