"""A patient merge reaching the registry (ITI TF-2a §3.8.4.2.3, Document Registry behaviour on
a Patient Identity Merge): the subsumed patient id's DocumentEntries, SubmissionSets and
Folders are from now on answered under the surviving id, and the subsumed id is no longer a
known patient, so an ITI-42 for it fails with XDSUnknownPatientId.

Both the indexed `patient_id` column and the stored ebRIM fragment (`xml`: the
ExternalIdentifier of the object type's patientId scheme, ITI TF-3 Table 4.2.5-1) are
rewritten, so a LeafClass answer carries the surviving id. The fragment goes through the
codec (hardened parse, `element_to_object`, `object_to_bytes`), the path the store writes
fragments with.

`dossier_key` rows are left alone on purpose: the repository's blobs of the subsumed patient
are encrypted under that dossier's data key (DESIGN.md §3 rule 8) and must stay readable; the
key is found again by its key id, not by the current patient id.

The caller owns the transaction (`connection`): `pix.identities.SqlCrossReferences.merge`
rewrites the registry and records the cross-reference merge in one database transaction.
"""

from __future__ import annotations

import attrs
from sqlalchemy import LargeBinary, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from registry import constants as C
from registry.fragments import pack, unpack
from registry.ebrim import element_to_object, object_to_bytes
from registry.errors import InfrastructureError, XdsFailure
from registry.schema import document_entry, folder, patient, submission_set
from registry.timefmt import now_dtm
from soap.xmlparse import XmlInputError, parse_xml

# (table, the patientId identification scheme of that object type)
_PATIENT_SCHEMES = (
    (document_entry, C.DE_PATIENT_ID),
    (submission_set, C.SS_PATIENT_ID),
    (folder, C.FOLDER_PATIENT_ID),
)


@attrs.frozen
class RegistryMerge:
    """What a merge rewrote: objects per table, and whether the subsumed id was known."""

    document_entries: int = 0
    submission_sets: int = 0
    folders: int = 0
    subsumed_was_known: bool = False


def rewrite_patient_id(xml: bytes | str | memoryview, scheme: str, surviving_cx: str) -> bytes:
    """A stored fragment whose patientId ExternalIdentifier (`scheme`) carries `surviving_cx`.
    A stored fragment that does not parse is corruption on our side: InfrastructureError."""
    data = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
    try:
        obj = element_to_object(parse_xml(data, max_bytes=max(len(data) + 1, 1)))
    except (XmlInputError, XdsFailure, ValueError) as exc:
        raise InfrastructureError(f"stored registry fragment does not parse: {exc}") from exc
    external = tuple(
        attrs.evolve(e, value=surviving_cx) if e.identification_scheme == scheme else e
        for e in obj.external_identifiers
    )
    return object_to_bytes(attrs.evolve(obj, external_identifiers=external))


def insert_patient(connection: Connection, cx: str, *, now: str | None = None) -> bool:
    """Make `cx` a known patient on the caller's transaction; True if it was new. Idempotent,
    also under races (INSERT … ON CONFLICT DO NOTHING: a concurrent insert does not abort the
    caller's transaction, as a unique violation would on PostgreSQL)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # pragma: no cover - the registry runs on SQLite and PostgreSQL only
        if connection.execute(select(patient.c.patient_id).where(patient.c.patient_id == cx)).first():
            return False
        connection.execute(insert(patient).values(patient_id=cx, created_at=now or now_dtm()))
        return True
    statement = (
        dialect_insert(patient)
        .values(patient_id=cx, created_at=now or now_dtm())
        .on_conflict_do_nothing(index_elements=[patient.c.patient_id])
        .returning(patient.c.patient_id)
    )
    return connection.execute(statement).first() is not None


def merge_registry_patient(
    connection: Connection, subsumed_cx: str, surviving_cx: str, *, now: str | None = None
) -> RegistryMerge:
    """Answer `subsumed_cx`'s registry objects under `surviving_cx` and forget `subsumed_cx`
    (ITI TF-2a §3.8.4.2.3). Runs on the caller's connection and transaction; the surviving id
    is made known if it was not. Database errors propagate (the caller maps them)."""
    counts: dict[str, int] = {}
    for table, scheme in _PATIENT_SCHEMES:
        rows = connection.execute(
            select(table.c.id, table.c.xml).where(table.c.patient_id == subsumed_cx)
        ).all()
        binary = isinstance(table.c.xml.type, LargeBinary)
        params = []
        for row in rows:
            xml = rewrite_patient_id(unpack(row.xml), scheme, surviving_cx)
            params.append({"b_id": row.id, "b_xml": pack(xml) if binary else xml.decode("utf-8")})
        if params:
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(patient_id=surviving_cx, xml=bindparam("b_xml")),
                params,
            )
        counts[table.name] = len(params)
    known = connection.execute(
        select(patient.c.patient_id).where(patient.c.patient_id.in_([subsumed_cx, surviving_cx]))
    ).scalars().all()
    if surviving_cx not in known:
        insert_patient(connection, surviving_cx, now=now)
    if subsumed_cx in known:
        connection.execute(delete(patient).where(patient.c.patient_id == subsumed_cx))
    return RegistryMerge(
        document_entries=counts["document_entry"],
        submission_sets=counts["submission_set"],
        folders=counts["folder"],
        subsumed_was_known=subsumed_cx in known,
    )


__all__ = ["RegistryMerge", "insert_patient", "merge_registry_patient", "rewrite_patient_id"]
