"""The Document Registry's SOAP operations: wire body → model → handler → wire body, plus audit.

Twisted-free: `soap.edge.SoapEndpoint` runs these on its thread pool. Each operation always
answers with an ebRS message (DESIGN.md §3 rule 3): a request body of the wrong kind is a SOAP
Sender fault; an ebRS problem is a RegistryResponse/AdhocQueryResponse with the XDS error codes;
a store failure is XDSRegistryError, never a domain code.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

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
from registry.iti18_stored_query import StoredQueryConfig, audit_details, execute as execute_stored_query
from registry.iti42_register import register
from registry.model import SubmitObjectsRequest
from registry.ports import (
    AccessPolicy,
    AllowAllPolicy,
    AuditRecord,
    AuditSink,
    MemoryAuditSink,
    PatientIdentities,
    TransactionContext,
)
from registry.validate import ValidationConfig
from soap.envelope import BodyPieces, SenderFault, SoapRequest
from soap.operation import FunctionOperation, SoapReply

log = logging.getLogger("carnet.registry")

SUBMIT_OBJECTS_REQUEST = f"{{{C.NS_LCM}}}SubmitObjectsRequest"
ADHOC_QUERY_REQUEST = f"{{{C.NS_QUERY}}}AdhocQueryRequest"




def _outcome(errors: Any) -> str:
    return "success" if not any(e.is_error for e in errors) else "minor-failure"


SENDER_FAULT = "env:Sender"  # SOAP 1.2 Part 1 §5.4.6: the fault code, as the event's outcome description


def audit_sender_fault(audit: AuditSink, record: dict) -> None:
    """Record `record`'s transaction as failed with a SOAP Sender fault (no RegistryResponse was sent)."""
    try:
        audit.record(AuditRecord(outcome="minor-failure", error_codes=(SENDER_FAULT,), **record))
    except Exception:  # noqa: BLE001 - a failing audit sink must not change the answer
        log.exception("audit sink failed for %s", record.get("transaction"))


@attrs.define
class DocumentRegistry:
    """The XDS.b Document Registry actor, wired to its ports."""

    store: Any  # registry.store.RegistryStore
    audit: AuditSink = attrs.field(factory=MemoryAuditSink)
    policy: AccessPolicy = attrs.field(factory=AllowAllPolicy)
    patients: PatientIdentities | None = None
    validation: ValidationConfig = attrs.field(factory=ValidationConfig)
    query_config: StoredQueryConfig = attrs.field(factory=StoredQueryConfig)
    now: Callable[[], str] | None = None

    # --- ITI-42 Register Document Set-b (ITI TF-2b §3.42) -----------------------------------
    def register_document_set(self, request: SoapRequest, context: TransactionContext) -> SoapReply:
        self._expect(request, SUBMIT_OBJECTS_REQUEST, "ITI-42", context)
        try:
            sor = ebrim.parse_submit_objects_request(request.body)
        except XdsFailure as failure:
            self._audit(dict(transaction="ITI-42", context=context), failure.errors)
            return SoapReply(ebrim.registry_response(failure.errors))
        return SoapReply(ebrim.registry_response(self.register_submission(sor, context)))

    def register_submission(self, sor: SubmitObjectsRequest, context: TransactionContext) -> list[RegistryError]:
        """Register a parsed submission and audit it: the errors and warnings of the response.
        Also the in-process entry of the Document Repository's ITI-42 (repository.registry_client)."""
        ss = sor.submission_sets
        record = dict(
            transaction="ITI-42",
            context=context,
            patient_ids=tuple({p for s in ss if (p := s.patient_id)}),
            submission_set_unique_id=ss[0].unique_id if ss else None,
        )
        try:
            result = register(
                sor,
                self.store,
                config=self.validation,
                patients=self.patients,
                now=self.now() if self.now else None,
            )
            errors: list[RegistryError] = list(result.warnings)
            record["document_unique_ids"] = result.document_unique_ids
        except XdsFailure as failure:
            errors = failure.errors
        except InfrastructureError as exc:
            log.error("ITI-42: store failure: %s", exc)
            code = infrastructure_code(exc)
            errors = [RegistryError(code, infrastructure_message(code, "the registry could not store the submission"))]
        self._audit(record, errors)
        return errors

    # --- ITI-18 Registry Stored Query (ITI TF-2a §3.18) --------------------------------------
    def registry_stored_query(self, request: SoapRequest, context: TransactionContext) -> SoapReply:
        self._expect(request, ADHOC_QUERY_REQUEST, "ITI-18", context)
        # ITI TF-2a §3.18.5.1.2, Query Parameters: ParticipantObjectQuery (M) "the AdhocQueryRequest,
        # base64 encoded", and a ParticipantObjectDetail "urn:ihe:iti:xca:2010:homeCommunityId" with
        # "the value of the homeCommunityID ..., if known" (rim:AdhocQuery/@home). A request refused
        # while parsing is audited with what it names all the same.
        query_body = etree.tostring(request.body)
        try:
            query = ebrim.parse_adhoc_query_request(request.body)
        except XdsFailure as failure:
            raw = request.body.find(f"{{{C.NS_RIM}}}AdhocQuery")
            raw_id = (raw.get("id") or "").strip() if raw is not None else ""
            raw_home = raw.get("home") if raw is not None else None
            self._audit(
                dict(transaction="ITI-18", context=context, query_body=query_body,
                     query_id=raw_id or None, home_community_id=raw_home or None),
                failure.errors,
            )
            return SoapReply(ebrim.adhoc_query_response_bytes(status=C.RESPONSE_FAILURE, errors=failure.errors))
        # what the event says comes from the request alone (`audit_details`, as `execute` reports it)
        query_id, patient_ids = audit_details(query)
        record = dict(transaction="ITI-18", context=context, patient_ids=patient_ids, query_id=query_id,
                      query_body=query_body, home_community_id=query.home or None)
        # The event of a successful query, spooled while the SQL runs (`_ahead`). Not for ITI-42: under
        # concurrent registrations the spool's commits are shared and overlap the registry's own commits
        # already, and the hand-off to another thread cost 0.1 ms of CPU per registration (measured: no
        # gain in registrations/s); a stored query has no other disk wait to hide the fsync behind.
        ticket = self._ahead(record)
        try:
            outcome = execute_stored_query(
                query, self.store, policy=self.policy, context=context, config=self.query_config
            )
        except BaseException:  # `execute` answers every request and store problem: a bug, or a shutdown
            self._abandon(ticket)
            raise
        self._audit(record, outcome.errors, ticket)
        return SoapReply(BodyPieces(outcome.pieces))  # sent without being joined first

    def _expect(self, request: SoapRequest, tag: str, transaction: str, context: TransactionContext) -> None:
        """The action names the transaction; a Body it does not take is a SOAP Sender fault, audited as
        that transaction's failure (DESIGN.md rule 9: every transaction, on success and failure)."""
        if request.body.tag != tag:
            audit_sender_fault(self.audit, dict(transaction=transaction, context=context))
            raise SenderFault(f"the SOAP Body holds {request.body.tag}, this action expects {tag}")

    def _ahead(self, record: dict) -> Any:
        """Write-ahead audit (`atna.sender.SpoolingAuditSink.ahead`): the event of a successful outcome,
        spooled held on another thread while the transaction runs, so that the spool's fsync overlaps it;
        `_audit` then settles it with the actual outcome, and still returns only once the event is on
        disk, before the answer is sent (DESIGN.md rule 9). Sinks without `ahead` record in `_audit`."""
        ahead = getattr(self.audit, "ahead", None)
        if ahead is None:
            return None
        try:
            return ahead(AuditRecord(outcome=_outcome(()), error_codes=(), **record))
        except Exception:  # noqa: BLE001 - `_audit` records it the ordinary way
            log.exception("audit sink: write-ahead failed for %s", record.get("transaction"))
            return None

    def _abandon(self, ticket: Any) -> None:
        if ticket is not None:
            try:
                self.audit.abandon(ticket)
            except Exception:  # noqa: BLE001
                log.exception("audit sink: could not drop a write-ahead event")

    def _audit(self, record: dict, errors: Any, ticket: Any = None) -> None:
        try:
            actual = AuditRecord(outcome=_outcome(errors), error_codes=tuple(e.code.value for e in errors), **record)
            if ticket is not None:
                self.audit.settle(ticket, actual)
            else:
                self.audit.record(actual)
        except Exception:  # noqa: BLE001 - a failing audit sink must not lose the answer
            log.exception("audit sink failed for %s", record.get("transaction"))

    def operations(self) -> dict[str, FunctionOperation]:
        ops = [
            FunctionOperation(C.ACTION_ITI42, C.ACTION_ITI42_RESPONSE, self.register_document_set, "ITI-42"),
            FunctionOperation(C.ACTION_ITI18, C.ACTION_ITI18_RESPONSE, self.registry_stored_query, "ITI-18"),
        ]
        return {op.action: op for op in ops}


def transaction_context(transactions: dict[str, str]) -> Callable[[SoapRequest, Any], TransactionContext]:
    """A `soap.edge` context factory building the handlers' TransactionContext."""

    def factory(request: SoapRequest, http: Any) -> TransactionContext:
        return TransactionContext(
            transaction=transactions.get(request.action, request.action),
            message_id=request.message_id,
            remote_host=getattr(http, "client_host", None),
            endpoint=getattr(http, "endpoint", None),
            reply_to=request.reply_to,
        )

    return factory
