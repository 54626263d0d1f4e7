"""Initial registry schema: patients, DocumentEntries, SubmissionSets, Folders, Associations.

Written out in full (not generated from `registry.schema` at run time) so that this revision
never changes; `tests/store/test_migrations.py` checks it against `registry.schema.metadata`.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 128
UID = 128
CX = 256
DTM = 14
CODE = 256

# PostgreSQL: the variable-length columns kept in the row (registry.schema.in_row_columns).
IN_ROW_COLUMNS = {
    "document_entry": (
        "id", "lid", "unique_id", "patient_id", "status", "object_type", "creation_time",
        "service_start_time", "service_stop_time", "repository_unique_id", "hash", "mime_type",
        "home", "submission_set_id", "xml",
    ),
    "submission_set": (
        "id", "unique_id", "patient_id", "source_id", "submission_time", "status",
        "content_type_code", "content_type_coding_scheme", "home", "xml",
    ),
    "folder": ("id", "lid", "unique_id", "patient_id", "status", "last_update_time", "home", "xml"),
    "association": (
        "id", "association_type", "source_id", "target_id", "status", "submission_set_status", "xml",
    ),
}


def upgrade() -> None:
    op.create_table(
        "patient",
        sa.Column("patient_id", sa.String(CX), primary_key=True),
        sa.Column("created_at", sa.String(DTM), nullable=False),
    )

    op.create_table(
        "document_entry",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("lid", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("unique_id", sa.String(UID), nullable=False),
        sa.Column("patient_id", sa.String(CX), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("creation_time", sa.String(DTM)),
        sa.Column("service_start_time", sa.String(DTM)),
        sa.Column("service_stop_time", sa.String(DTM)),
        sa.Column("repository_unique_id", sa.String(UID)),
        sa.Column("hash", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("mime_type", sa.String(128)),
        sa.Column("home", sa.String(UID)),
        sa.Column("submission_set_id", sa.String(ID)),
        sa.Column("xml", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_document_entry_unique_id", "document_entry", ["unique_id"])
    op.create_index("ix_document_entry_patient_status", "document_entry", ["patient_id", "status"])
    op.create_index(
        "ix_document_entry_patient_creation", "document_entry", ["patient_id", "creation_time"]
    )
    op.create_index(
        "ix_document_entry_patient_start", "document_entry", ["patient_id", "service_start_time"]
    )
    op.create_index("ix_document_entry_lid", "document_entry", ["lid"])

    op.create_table(
        "document_code",
        sa.Column("entry_id", sa.String(ID), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("code", sa.String(CODE), nullable=False),
        sa.Column("coding_scheme", sa.String(CODE), nullable=False),
    )
    op.create_index("ix_document_code_entry", "document_code", ["entry_id", "scheme"])
    op.create_index("ix_document_code_value", "document_code", ["scheme", "code"])

    op.create_table(
        "document_author",
        sa.Column("entry_id", sa.String(ID), nullable=False),
        sa.Column("person", sa.Text, nullable=False),
    )
    op.create_index("ix_document_author_entry", "document_author", ["entry_id"])

    op.create_table(
        "document_reference_id",
        sa.Column("entry_id", sa.String(ID), nullable=False),
        sa.Column("reference_id", sa.Text, nullable=False),
    )
    op.create_index("ix_document_reference_id_entry", "document_reference_id", ["entry_id"])
    op.create_index("ix_document_reference_id_value", "document_reference_id", ["reference_id"])

    op.create_table(
        "submission_set",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("unique_id", sa.String(UID), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(CX), nullable=False),
        sa.Column("source_id", sa.String(UID)),
        sa.Column("submission_time", sa.String(DTM)),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("content_type_code", sa.String(CODE)),
        sa.Column("content_type_coding_scheme", sa.String(CODE)),
        sa.Column("home", sa.String(UID)),
        sa.Column("xml", sa.LargeBinary, nullable=False),
    )
    op.create_index(
        "ix_submission_set_patient_time", "submission_set", ["patient_id", "submission_time"]
    )

    op.create_table(
        "submission_set_author",
        sa.Column("ss_id", sa.String(ID), nullable=False),
        sa.Column("person", sa.Text, nullable=False),
    )
    op.create_index("ix_submission_set_author_ss", "submission_set_author", ["ss_id"])

    op.create_table(
        "folder",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("lid", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("unique_id", sa.String(UID), nullable=False),
        sa.Column("patient_id", sa.String(CX), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("last_update_time", sa.String(DTM)),
        sa.Column("home", sa.String(UID)),
        sa.Column("xml", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("unique_id", "version", name="uq_folder_unique_id_version"),
    )
    op.create_index("ix_folder_patient_status", "folder", ["patient_id", "status"])
    op.create_index("ix_folder_lid", "folder", ["lid"])

    op.create_table(
        "folder_code",
        sa.Column("folder_id", sa.String(ID), nullable=False),
        sa.Column("code", sa.String(CODE), nullable=False),
        sa.Column("coding_scheme", sa.String(CODE), nullable=False),
    )
    op.create_index("ix_folder_code_folder", "folder_code", ["folder_id"])

    op.create_table(
        "association",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("association_type", sa.String(128), nullable=False),
        sa.Column("source_id", sa.String(ID), nullable=False),
        sa.Column("target_id", sa.String(ID), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("submission_set_status", sa.String(16)),
        sa.Column("xml", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_association_source", "association", ["source_id", "association_type"])
    op.create_index("ix_association_target", "association", ["target_id", "association_type"])

    # PostgreSQL: rows kept whole in the heap, `xml` compressed there (lz4 when available), not
    # moved to TOAST; the same statements as registry.schema.xml_storage_sql.
    if op.get_bind().dialect.name == "postgresql":
        for table, columns in IN_ROW_COLUMNS.items():
            main = ", ".join(f"ALTER COLUMN {c} SET STORAGE MAIN" for c in columns)
            op.execute(f"ALTER TABLE {table} {main}")
            op.execute(
                "DO $$ BEGIN "
                f"EXECUTE 'ALTER TABLE {table} ALTER COLUMN xml SET COMPRESSION lz4'; "
                "EXCEPTION WHEN feature_not_supported OR syntax_error THEN NULL; "
                "END $$"
            )


def downgrade() -> None:
    for table in (
        "association",
        "folder_code",
        "folder",
        "submission_set_author",
        "submission_set",
        "document_reference_id",
        "document_author",
        "document_code",
        "document_entry",
        "patient",
    ):
        op.drop_table(table)
