"""The PIX Manager's tables (SQLAlchemy Core), on the registry's `metadata` so one
`create_schema` and one Alembic history (revision 0003) make them, and so a feed can make an
INS known to the registry's `patient` table in the same database transaction.

- `pix_identity`: one row per identifier, keyed by (assigning authority OID, value) — CX.4.2,
  CX.1 — with the demographics and identity reliability (PID-32) as last received, the
  cross-reference group it belongs to (`group_id`, NULL once merged away), its status
  (`active`, `merged`) and, once merged, the surviving identifier (`merged_into_*`).
- `pix_merge`: the merge history, one row per merge (ITI-8 A40, ITI-44 merge): who was subsumed
  into whom, the group the subsumed id left, and whether the registry was rewritten.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from registry.schema import DTM, metadata

OID = 128  # an assigning authority's universal id (ISO OID); room for longer ids
VALUE = 256  # CX.1
GROUP = 32  # uuid4 hex

pix_identity = Table(
    "pix_identity",
    metadata,
    Column("authority", String(OID), primary_key=True),  # CX.4.2
    Column("value", String(VALUE), primary_key=True),  # CX.1
    Column("namespace", String(VALUE), nullable=False, default=""),  # CX.4.1 as received
    Column("type_code", String(32), nullable=False, default=""),  # CX.5 as received
    Column("group_id", String(GROUP), nullable=True),  # NULL when merged
    Column("status", String(16), nullable=False),  # active | merged
    Column("merged_into_authority", String(OID), nullable=True),
    Column("merged_into_value", String(VALUE), nullable=True),
    Column("identity_reliability", String(256), nullable=False, default=""),  # PID-32, '~'-joined
    Column("demographics", Text, nullable=False),  # JSON, as received
    Column("created_at", String(DTM), nullable=False),
    Column("updated_at", String(DTM), nullable=False),
)
Index("ix_pix_identity_group", pix_identity.c.group_id)

pix_merge = Table(
    "pix_merge",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subsumed_authority", String(OID), nullable=False),
    Column("subsumed_value", String(VALUE), nullable=False),
    Column("surviving_authority", String(OID), nullable=False),
    Column("surviving_value", String(VALUE), nullable=False),
    Column("previous_group_id", String(GROUP), nullable=True),  # the group the subsumed id left
    Column("previous_group", Text, nullable=False),  # JSON list of [authority, value] it held
    Column("registry_merged", Integer, nullable=False),  # 1 when the registry was rewritten
    Column("merged_at", String(DTM), nullable=False),
)
Index("ix_pix_merge_subsumed", pix_merge.c.subsumed_authority, pix_merge.c.subsumed_value)
Index("ix_pix_merge_surviving", pix_merge.c.surviving_authority, pix_merge.c.surviving_value)

__all__ = ["pix_identity", "pix_merge"]
