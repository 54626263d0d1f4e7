"""ITI-18 Registry Stored Query: the transaction handler (pure: no Twisted, no SQL).

`stored_query(request, reader, policy=…, context=…, config=…)` answers an AdhocQueryRequest
with the bytes of an AdhocQueryResponse, always: parameter errors, too many results, a result
spanning several patients and store failures become a Failure response with a
RegistryErrorList (ITI TF-2a §3.18.4.1.3). The AccessPolicy port filters every result before it
is serialised. LeafClass answers are the stored ebRIM fragments concatenated, not rebuilt.

Contract: ITI-18, SOAP action `urn:ihe:iti:2007:RegistryStoredQuery`, response action
`urn:ihe:iti:2007:RegistryStoredQueryResponse`, body query:AdhocQueryResponse; audit: query id
and patient id(s) from `audit_details` (ITI TF-2a §3.18.5.1).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

import attrs
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import (
    InfrastructureError,
    RegistryError,
    XdsErrorCode,
    XdsFailure,
    infrastructure_code,
    infrastructure_message,
)
from registry.ports import AccessPolicy, TransactionContext
from registry.queries import params as P
from registry.queries.params import StoredQuery, parse_parameters
from registry.queries.values import ValueSyntaxError, parse_value

log = logging.getLogger(__name__)

TRANSACTION = "ITI-18"
ACTION = C.ACTION_ITI18
RESPONSE_ACTION = C.ACTION_ITI18_RESPONSE

RETURN_LEAF_CLASS = "LeafClass"
RETURN_OBJECT_REF = "ObjectRef"
# ebRS 3.0 defaults returnType to RegistryObject; XDS knows LeafClass and ObjectRef only
# (ITI TF-2a §3.18.4.1.2.1). RegistryObject is answered as LeafClass.
_LEAF_CLASS_TYPES = frozenset({RETURN_LEAF_CLASS, "RegistryObject"})


@attrs.frozen
class StoredQueryConfig:
    """Limits of ITI-18 (XDSTooManyResults above them, ITI TF-2a §3.18.4.1.3).

    ObjectRef answers are ~100 bytes an object against several kB for LeafClass, so they get a
    higher limit. `home_community_id` is put on returned objects when the request names none.
    """

    max_results: int = 10_000
    max_object_refs: int = 100_000
    home_community_id: str | None = None


class StoreReaderPort(Protocol):
    def stored_query(self, query: StoredQuery, *, limit: int | None = None) -> list[Any]: ...


@attrs.frozen
class StoredQueryOutcome:
    """What the edge needs: the body (as consecutive pieces: `soap.envelope.BodyPieces`), the
    errors (for the audit outcome) and the patients."""

    pieces: tuple[bytes, ...]
    errors: tuple[RegistryError, ...] = ()
    query_id: str | None = None
    patient_ids: tuple[str, ...] = ()

    @property
    def body(self) -> bytes:
        """The AdhocQueryResponse's bytes."""
        return b"".join(self.pieces)

    @property
    def success(self) -> bool:
        return not any(e.is_error for e in self.errors)


def _failure_body(errors: Sequence[RegistryError]) -> tuple[bytes, ...]:
    return ebrim.adhoc_query_response_pieces(status=C.RESPONSE_FAILURE, errors=errors)


def _with_home(xml: bytes, home: str) -> bytes:
    """A stored fragment with `home` set on its root (ITI TF-2a §3.18.4.1.2.3.8)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(xml, parser)
    root.set("home", home)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=False)


def _single_patient(rows: Sequence[Any]) -> None:
    """ITI TF-2a §3.18.4.1.3: a LeafClass result must concern one patient only."""
    patients = {r.patient_id for r in rows if getattr(r, "patient_id", None)}
    if len(patients) > 1:
        raise XdsFailure(
            RegistryError(
                XdsErrorCode.XDSResultNotSinglePatient,
                f"the result concerns {len(patients)} patients; ask for ObjectRef or fewer objects",
                rule="ITI18-single-patient",
            )
        )


def _response_body(rows: Sequence[Any], leaf: bool, home: str | None) -> tuple[bytes, ...]:
    if not leaf:
        return ebrim.adhoc_query_response_pieces(
            status=C.RESPONSE_SUCCESS, object_refs=[(r.id, home or r.home) for r in rows]
        )
    fragments = [r.xml if not home or r.home == home else _with_home(r.xml, home) for r in rows]
    return ebrim.adhoc_query_response_pieces(status=C.RESPONSE_SUCCESS, leaf_fragments=fragments)


def execute(
    request: ebrim.AdhocQueryRequest,
    reader: StoreReaderPort,
    *,
    policy: AccessPolicy,
    context: TransactionContext,
    config: StoredQueryConfig | None = None,
) -> StoredQueryOutcome:
    """Run a stored query and build the response; never raises for a request or store problem."""
    config = config or StoredQueryConfig()
    query_id, patient_ids = audit_details(request)
    try:
        if request.return_type not in _LEAF_CLASS_TYPES | {RETURN_OBJECT_REF}:
            raise XdsFailure(
                RegistryError(
                    XdsErrorCode.XDSRegistryError,
                    f"returnType {request.return_type!r}: XDS allows LeafClass or ObjectRef",
                    location="ResponseOption/@returnType",
                    rule="ITI18-return-type",
                )
            )
        leaf = request.return_type in _LEAF_CLASS_TYPES
        query = parse_parameters(request.query_id, request.slots, home=request.home)
        limit = config.max_results if leaf else config.max_object_refs
        rows = reader.stored_query(query, limit=limit)
        if leaf and query.spec.single_patient:
            _single_patient(rows)
        rows = list(policy.filter(context, rows))
        body = _response_body(rows, leaf, query.home or config.home_community_id)
        return StoredQueryOutcome(body, (), query_id, patient_ids)
    except XdsFailure as failure:
        return StoredQueryOutcome(_failure_body(failure.errors), tuple(failure.errors), query_id, patient_ids)
    except InfrastructureError as exc:
        log.error("ITI-18 %s: store failure: %s", query_id, exc)
        code = infrastructure_code(exc)
        err = RegistryError(code, infrastructure_message(code, "the registry could not run the query"))
        return StoredQueryOutcome(_failure_body([err]), (err,), query_id, patient_ids)
    except Exception:  # noqa: BLE001 - always answer (DESIGN.md §3 rule 3); a bug, logged
        log.exception("ITI-18 %s: internal error", query_id)
        err = RegistryError(XdsErrorCode.XDSRegistryError, "internal error while running the query")
        return StoredQueryOutcome(_failure_body([err]), (err,), query_id, patient_ids)


def stored_query(
    request: ebrim.AdhocQueryRequest,
    reader: StoreReaderPort,
    *,
    policy: AccessPolicy,
    context: TransactionContext,
    config: StoredQueryConfig | None = None,
) -> bytes:
    """The AdhocQueryResponse body bytes for `request` (see `execute`)."""
    return execute(request, reader, policy=policy, context=context, config=config).body


_PATIENT_PARAMS = (P.DE_PATIENT_ID, P.SS_PATIENT_ID, P.FOL_PATIENT_ID, P.PATIENT_ID)


def audit_details(request: ebrim.AdhocQueryRequest) -> tuple[str, tuple[str, ...]]:
    """(query id, patient ids named by the request) for the ITI-18 audit event
    (ITI TF-2a §3.18.5.1.2). Lenient: a malformed value is skipped, never raised."""
    patients: list[str] = []
    for slot in request.slots:
        if slot.name not in _PATIENT_PARAMS:
            continue
        for text in slot.values:
            try:
                tokens = parse_value(text).tokens
            except ValueSyntaxError:
                continue
            patients.extend(t.text for t in tokens if t.quoted and t.text not in patients)
    return (request.query_id or "").strip(), tuple(patients)
