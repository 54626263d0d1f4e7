"""Indexes for the remaining stored-query parameters (issue 2: an indexed column for every query
parameter): serviceStopTime, the SubmissionSet's status, sourceId and contentTypeCode, the Folder's
lastUpdateTime and codeList. Every Find query requires a patient id, so each is (patient_id, column),
as the indexes of 0001 are; folder codes are looked up by (scheme, code), as document codes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_document_entry_patient_stop", "document_entry", ["patient_id", "service_stop_time"]),
    ("ix_submission_set_patient_status", "submission_set", ["patient_id", "status"]),
    ("ix_submission_set_patient_source", "submission_set", ["patient_id", "source_id"]),
    ("ix_submission_set_patient_content_type", "submission_set", ["patient_id", "content_type_code"]),
    ("ix_folder_patient_update", "folder", ["patient_id", "last_update_time"]),
    ("ix_folder_code_value", "folder_code", ["coding_scheme", "code"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, if_not_exists=True)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
