"""Audit Record Repository: stored audit messages and their search indexes (atna/arr/schema.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RECORD_ID = 32
KEY = 160
CODE = 64
TIME = 27
TEXT = 512


def upgrade() -> None:
    op.create_table(
        "audit_record",
        sa.Column("id", sa.String(RECORD_ID), primary_key=True),
        sa.Column("dedupe_key", sa.String(KEY), nullable=False),
        sa.Column("event_id_code", sa.String(CODE), nullable=False),
        sa.Column("event_action", sa.String(1), nullable=True),
        sa.Column("event_time", sa.String(TIME), nullable=True),
        sa.Column("outcome", sa.String(2), nullable=True),
        sa.Column("purpose_of_use", sa.String(CODE), nullable=True),
        sa.Column("source_id", sa.String(TEXT), nullable=True),
        sa.Column("source_site", sa.String(TEXT), nullable=True),
        sa.Column("sender_host", sa.String(TEXT), nullable=True),
        sa.Column("peer_address", sa.String(CODE), nullable=True),
        sa.Column("received_at", sa.String(TIME), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    op.create_index("ux_audit_record_dedupe_key", "audit_record", ["dedupe_key"], unique=True)
    op.create_index("ix_audit_record_event_time", "audit_record", ["event_time"])
    op.create_index("ix_audit_record_event_id", "audit_record", ["event_id_code", "event_time"])
    op.create_index("ix_audit_record_source", "audit_record", ["source_id"])
    op.create_index("ix_audit_record_received_at", "audit_record", ["received_at"])

    op.create_table(
        "audit_record_type",
        sa.Column("record_id", sa.String(RECORD_ID), nullable=False),
        sa.Column("code", sa.String(CODE), nullable=False),
        sa.Column("system", sa.String(TEXT), nullable=True),
    )
    op.create_index("ix_audit_record_type_record", "audit_record_type", ["record_id"])
    op.create_index("ix_audit_record_type_code", "audit_record_type", ["code"])

    op.create_table(
        "audit_record_participant",
        sa.Column("record_id", sa.String(RECORD_ID), nullable=False),
        sa.Column("user_id", sa.String(TEXT), nullable=True),
        sa.Column("alt_user_id", sa.String(TEXT), nullable=True),
        sa.Column("user_name", sa.String(TEXT), nullable=True),
        sa.Column("requestor", sa.Boolean, nullable=False),
        sa.Column("network_address", sa.String(TEXT), nullable=True),
        sa.Column("role_code", sa.String(CODE), nullable=True),
    )
    op.create_index("ix_audit_record_participant_record", "audit_record_participant", ["record_id"])
    op.create_index("ix_audit_record_participant_user", "audit_record_participant", ["user_id"])
    op.create_index("ix_audit_record_participant_address", "audit_record_participant", ["network_address"])

    op.create_table(
        "audit_record_patient",
        sa.Column("record_id", sa.String(RECORD_ID), nullable=False),
        sa.Column("patient_id", sa.String(TEXT), nullable=False),
        sa.Column("id_value", sa.String(TEXT), nullable=False),
        sa.Column("id_system", sa.String(TEXT), nullable=True),
    )
    op.create_index("ix_audit_record_patient_record", "audit_record_patient", ["record_id"])
    op.create_index("ix_audit_record_patient_value", "audit_record_patient", ["id_value", "id_system"])


def downgrade() -> None:
    for table, indexes in (
        ("audit_record_patient", ("ix_audit_record_patient_value", "ix_audit_record_patient_record")),
        (
            "audit_record_participant",
            (
                "ix_audit_record_participant_address",
                "ix_audit_record_participant_user",
                "ix_audit_record_participant_record",
            ),
        ),
        ("audit_record_type", ("ix_audit_record_type_code", "ix_audit_record_type_record")),
        (
            "audit_record",
            (
                "ix_audit_record_received_at",
                "ix_audit_record_source",
                "ix_audit_record_event_id",
                "ix_audit_record_event_time",
                "ux_audit_record_dedupe_key",
            ),
        ),
    ):
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.drop_table(table)
