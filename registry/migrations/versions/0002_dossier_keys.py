"""Document Repository: the dossier key vault (per-dossier data keys, wrapped by the master key)
and the pending-blob journal of ITI-41.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CX = 256
DTM = 14


def upgrade() -> None:
    op.create_table(
        "dossier_key",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("patient_id", sa.String(CX), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("master_key_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.String(DTM), nullable=False),
        sa.Column("destroyed_at", sa.String(DTM), nullable=True),
    )
    op.create_index(
        "ux_dossier_key_live_patient",
        "dossier_key",
        ["patient_id"],
        unique=True,
        sqlite_where=sa.text("destroyed_at IS NULL"),
        postgresql_where=sa.text("destroyed_at IS NULL"),
    )


    op.create_table(
        "repository_pending",
        sa.Column("intake_id", sa.String(32), primary_key=True),
        sa.Column("object_key", sa.String(512), primary_key=True),
        sa.Column("repository_unique_id", sa.String(256), nullable=False),
        sa.Column("document_unique_id", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_repository_pending_created_at", "repository_pending", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_repository_pending_created_at", table_name="repository_pending")
    op.drop_table("repository_pending")
    op.drop_index("ux_dossier_key_live_patient", table_name="dossier_key")
    op.drop_table("dossier_key")
