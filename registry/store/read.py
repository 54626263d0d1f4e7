"""The read side of the registry store: runs stored query plans (ITI-18).

The only place SQL runs for queries. `StoreReader` is a mixin expecting `self.engine`;
`registry.store.RegistryStore` combines it with the write side. A plan
(`registry.queries.plans`) yields selects; this module executes them on one connection and
turns the rows into `ResultRow`s, the shape the AccessPolicy port filters.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from registry.errors import InfrastructureError
from registry.queries.params import StoredQuery
from registry.queries.plans import Plan, plan_for


@attrs.frozen
class ResultRow:
    """One registry object found by a stored query.

    kind: "DocumentEntry" | "SubmissionSet" | "Folder" | "Association"; `xml` is the stored,
    self-contained ebRIM fragment. patient_id is None for associations.
    """

    kind: str
    id: str
    patient_id: str | None
    status: str
    xml: bytes
    home: str | None = None
    object_type: str | None = None
    unique_id: str | None = None
    lid: str | None = None
    source_id: str | None = None
    target_id: str | None = None
    association_type: str | None = None


def to_result_row(kind: str, row: Any) -> ResultRow:
    m = row._mapping
    xml = m["xml"]
    return ResultRow(
        kind=kind,
        id=m["id"],
        patient_id=m.get("patient_id"),
        status=m["status"],
        xml=bytes(xml) if not isinstance(xml, bytes) else xml,
        home=m.get("home"),
        object_type=m.get("object_type"),
        unique_id=m.get("unique_id"),
        lid=m.get("lid"),
        source_id=m.get("source_id"),
        target_id=m.get("target_id"),
        association_type=m.get("association_type"),
    )


class StoreReader:
    """Executes stored queries; mixed into `RegistryStore` (expects `self.engine`)."""

    engine: Engine

    def run_plan(self, plan: Plan) -> list[ResultRow]:
        """Drive a plan on one connection. XdsFailure raised by the plan (XDSTooManyResults)
        passes through; a database failure becomes InfrastructureError (DESIGN.md §3 rule 3)."""
        try:
            with self.engine.connect() as conn:
                try:
                    step = next(plan)
                    while True:
                        rows: Sequence[Any] = conn.execute(step.statement).all()
                        step = plan.send(rows)
                except StopIteration as stop:
                    found = stop.value or []
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"stored query failed in the database: {exc}") from exc
        return [to_result_row(kind, row) for kind, row in found]

    def stored_query(self, query: StoredQuery, *, limit: int | None = None) -> list[ResultRow]:
        """Run a parsed stored query; at most `limit` objects, else XDSTooManyResults."""
        return self.run_plan(plan_for(query, limit))
