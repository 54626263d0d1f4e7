"""PIX Manager: the cross-reference store (identities per assigning authority, grouped per
person) and the merge history (pix/schema.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OID = 128
VALUE = 256
GROUP = 32
DTM = 14


def upgrade() -> None:
    op.create_table(
        "pix_identity",
        sa.Column("authority", sa.String(OID), primary_key=True),
        sa.Column("value", sa.String(VALUE), primary_key=True),
        sa.Column("namespace", sa.String(VALUE), nullable=False),
        sa.Column("type_code", sa.String(32), nullable=False),
        sa.Column("group_id", sa.String(GROUP), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("merged_into_authority", sa.String(OID), nullable=True),
        sa.Column("merged_into_value", sa.String(VALUE), nullable=True),
        sa.Column("identity_reliability", sa.String(256), nullable=False),
        sa.Column("demographics", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(DTM), nullable=False),
        sa.Column("updated_at", sa.String(DTM), nullable=False),
    )
    op.create_index("ix_pix_identity_group", "pix_identity", ["group_id"])

    op.create_table(
        "pix_merge",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subsumed_authority", sa.String(OID), nullable=False),
        sa.Column("subsumed_value", sa.String(VALUE), nullable=False),
        sa.Column("surviving_authority", sa.String(OID), nullable=False),
        sa.Column("surviving_value", sa.String(VALUE), nullable=False),
        sa.Column("previous_group_id", sa.String(GROUP), nullable=True),
        sa.Column("previous_group", sa.Text, nullable=False),
        sa.Column("registry_merged", sa.Integer, nullable=False),
        sa.Column("merged_at", sa.String(DTM), nullable=False),
    )
    op.create_index("ix_pix_merge_subsumed", "pix_merge", ["subsumed_authority", "subsumed_value"])
    op.create_index("ix_pix_merge_surviving", "pix_merge", ["surviving_authority", "surviving_value"])


def downgrade() -> None:
    op.drop_index("ix_pix_merge_surviving", table_name="pix_merge")
    op.drop_index("ix_pix_merge_subsumed", table_name="pix_merge")
    op.drop_table("pix_merge")
    op.drop_index("ix_pix_identity_group", table_name="pix_identity")
    op.drop_table("pix_identity")
