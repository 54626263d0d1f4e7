"""The Document Repository's SOAP operations (ITI-41, ITI-43): wire body → handler → wire body + audit.

Twisted-free, like `registry.endpoint`: `soap.edge.SoapEndpoint` runs these on its thread pool.
ITI-41 is a `soap.operation.StreamingOperation`: for an MTOM request the edge streams each
attachment into this operation's `Iti41Intake` (hash, encrypt, stage) as it reads it, and `handle`
finds the staged documents in `request.attachments` / `request.xop`. Inline base64 documents
(non-MTOM requests) and attachments an edge collected in memory go through the same pipeline here.

Always an ebRS answer (DESIGN.md §3 rule 3): a body of the wrong kind is a SOAP Sender fault; every
other outcome is a RegistryResponse (ITI TF-2b §3.41.4.2).
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from registry import constants as C
from registry import ebrim
from registry.endpoint import audit_sender_fault
from registry.errors import RegistryError, XdsErrorCode
from registry.ports import AuditRecord, AuditSink, MemoryAuditSink, TransactionContext
from repository.crypto import DEFAULT_SEGMENT_SIZE
from repository.intake import T_DOCUMENT, T_PNR_REQUEST, T_XOP_INCLUDE, DiscardedPart, Iti41Intake, StagedDocument
from repository.iti41_provide_register import ProvideResult, provide_and_register
from repository.iti43_retrieve import ACTION_ITI43, ACTION_ITI43_RESPONSE, retrieve_document_set
from repository.registry_client import RegistryClient
from soap.envelope import SenderFault, SoapRequest
from soap.operation import FunctionOperation, SoapReply, StreamingOperation

log = logging.getLogger("carnet.repository")

# ITI TF-2b §3.41.5 (WSDL actions); ITI-43's are in repository.iti43_retrieve
ACTION_ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"


def _outcome(errors: Any) -> str:
    return "success" if not any(e.is_error for e in errors) else "minor-failure"


@attrs.define
class DocumentRepository:
    """The XDS.b Document Repository actor, wired to its ports.

    `repository_unique_id`: this repository's OID (ITI TF-3 §4.2.3.2.18); `blobs`: a BlobStore;
    `vault`: the KeyVault (per-dossier data keys); `registry`: the RegistryClient (ITI-42);
    `signatures`: the SignaturePolicy (None: off); `pending`: the PendingJournal (crash safety,
    `repository.sweep`); `max_request_bytes`: cap of an ITI-41 MTOM request (None: the edge's)."""

    repository_unique_id: str
    blobs: Any
    vault: Any
    registry: RegistryClient
    signatures: Any = None
    pending: Any = None
    audit: AuditSink = attrs.field(factory=MemoryAuditSink)
    home_community_id: str | None = None
    segment_size: int = DEFAULT_SEGMENT_SIZE
    max_request_bytes: int | None = None
    seal: Any = None  # repository.seal.RepositorySeal: each new document sealed (None: not sealed)

    def new_intake(self) -> Iti41Intake:
        return Iti41Intake(
            self.blobs, self.vault, self.repository_unique_id,
            signatures=self.signatures, segment_size=self.segment_size, sealing=self.seal is not None,
        )

    # --- ITI-41 Provide and Register Document Set-b (ITI TF-2b §3.41) -------------------------
    def provide_and_register_document_set(self, request: SoapRequest, context: TransactionContext) -> SoapReply:
        # The ITI-41 event and those of the ITI-42 it makes (registry, Document Source) are
        # spooled in one transaction before the answer leaves (one fsync wait, not three).
        batched = getattr(self.audit, "batched", None)
        if batched is None:
            return self._provide_and_register(request, context)
        reply = None
        try:
            with batched():
                reply = self._provide_and_register(request, context)
        except Exception:
            if reply is None:  # the transaction itself failed: the edge answers it
                raise
            # only the spooling failed, at the block's end (e.g. the spool is full, which the
            # spool alerts on): the submission is stored and its answer stands, as with `record`
            log.exception("ITI-41: the audit events could not be spooled")
        return reply

    def _provide_and_register(self, request: SoapRequest, context: TransactionContext) -> SoapReply:
        if request.body.tag != T_PNR_REQUEST:
            audit_sender_fault(self.audit, dict(transaction="ITI-41", context=context))
            raise SenderFault(f"the SOAP Body holds {request.body.tag}, this action expects {T_PNR_REQUEST}")
        intake = _intake_of(request)
        staged: dict[str, StagedDocument | DiscardedPart] = {}
        problems: list[RegistryError] = []
        try:
            if intake is None:
                intake = self.new_intake()
                intake.expect(request.body)
            for value in _close_results(request.attachments.values()):
                if isinstance(value, DiscardedPart) and value.problem is not None:
                    problems.append(value.problem)
            for element in request.body.iterchildren(T_DOCUMENT):
                doc_id = element.get("id") or ""
                if not doc_id or doc_id in staged:
                    continue
                attachment = request.xop.get(element)
                data = getattr(attachment, "data", attachment)
                if isinstance(data, StagedDocument) and data.document_id != doc_id:
                    # One MIME part named by two xdsb:Documents streamed into the first one's blob
                    # only: this one is not stored under its uniqueId, and ITI TF-2b §3.41.4.1.3
                    # has the repository set hash, size and repositoryUniqueId on each document it
                    # stores. Refused rather than registered without them.
                    entry = intake.entries.get(doc_id)
                    staged[doc_id] = DiscardedPart(doc_id, RegistryError(
                        XdsErrorCode.XDSRepositoryMetadataError,
                        f"xdsb:Document {doc_id} names the MIME part of xdsb:Document {data.document_id} "
                        f"(<{data.content_id}>): each document must be a MIME part of its own",
                        (entry.unique_id if entry is not None else None) or doc_id, rule="iti41.document.part"))
                elif isinstance(data, (StagedDocument, DiscardedPart)):
                    staged[doc_id] = data
                elif attachment is not None:
                    staged[doc_id] = intake.stage_bytes(doc_id, bytes(data))
                elif element.find(T_XOP_INCLUDE) is not None:
                    # Not an MTOM package, so the xop:Include names no attachment: ITI TF-3 Table
                    # 4.2.4.1-2, XDSMissingDocument "DocumentEntry exists in metadata with no
                    # corresponding attached document" (never the empty inline text as content).
                    entry = intake.entries.get(doc_id)
                    where = (entry.unique_id if entry is not None else None) or doc_id
                    staged[doc_id] = DiscardedPart(doc_id, RegistryError(
                        XdsErrorCode.XDSMissingDocument,
                        f"xdsb:Document {doc_id} refers to an attachment ({element.find(T_XOP_INCLUDE).get('href')}) "
                        "but the request is not an MTOM/XOP package", where, rule="iti41.entry.document"))
                else:
                    staged[doc_id] = intake.stage_inline(doc_id, element)
            result = provide_and_register(
                request.body,
                staged,
                repository_unique_id=self.repository_unique_id,
                registry=self.registry,
                signatures=self.signatures,
                blobs=self.blobs,
                vault=self.vault,
                pending=self.pending,
                seal=self.seal,
                submission=intake.submission,
                problems=[*intake.problems, *problems],
                intake_id=intake.intake_id,
                context=context,
            )
        except Exception:
            log.exception("ITI-41 failed")
            result = ProvideResult(
                (RegistryError(XdsErrorCode.XDSRepositoryError, "the repository could not process the submission"),)
            )
        finally:
            if intake is not None:
                intake.abort()  # aborts only what was not committed
        self._audit(
            dict(
                transaction="ITI-41",
                context=context,
                patient_ids=result.patient_ids,
                submission_set_unique_id=result.submission_set_unique_id,
                document_unique_ids=result.document_unique_ids,
            ),
            result.errors,
        )
        return SoapReply(ebrim.registry_response(result.errors))

    # --- ITI-43 Retrieve Document Set (ITI TF-2b §3.43) ----------------------------------------
    def retrieve_document_set(self, request: SoapRequest, context: TransactionContext) -> SoapReply:
        record: dict[str, Any] = dict(transaction="ITI-43", context=context, role="repository")
        try:
            result = retrieve_document_set(
                request.body,
                blobs=self.blobs,
                vault=self.vault,
                repository_unique_id=self.repository_unique_id,
                home_community_id=self.home_community_id,
            )
        except SenderFault:
            self._audit(record, [], status=C.RESPONSE_FAILURE)
            raise
        record["patient_ids"] = tuple(dict.fromkeys(d.patient_id for d in result.documents if d.patient_id))
        record["document_unique_ids"] = tuple(d.request.document_unique_id for d in result.documents)
        # ITI TF-2b §3.43.5.1.2: one ParticipantObject per document, with its repository and
        # home community (the schematron requires both).
        record["document_refs"] = tuple(
            (d.request.document_unique_id, d.request.repository_unique_id or self.repository_unique_id,
             getattr(d.request, "home_community_id", None) or self.home_community_id)
            for d in result.documents
        )
        record["repository_unique_id"] = self.repository_unique_id
        record["home_community_id"] = self.home_community_id
        self._audit(record, result.errors, status=result.status)
        return result.reply

    def _audit(self, record: dict, errors: Any, status: str | None = None) -> None:
        outcome = _outcome(errors) if status != C.RESPONSE_FAILURE else "minor-failure"
        try:
            self.audit.record(
                AuditRecord(outcome=outcome, error_codes=tuple(e.code.value for e in errors), **record)
            )
        except Exception:  # noqa: BLE001 - a failing audit sink must not lose the answer
            log.exception("audit sink failed for %s", record.get("transaction"))

    def operations(self) -> dict[str, Any]:
        ops: list[Any] = [
            StreamingOperation(
                ACTION_ITI41, ACTION_ITI41_RESPONSE, self.provide_and_register_document_set,
                intake_factory=self.new_intake, transaction="ITI-41", max_body_bytes=self.max_request_bytes,
            )
        ]
        ops.append(FunctionOperation(ACTION_ITI43, ACTION_ITI43_RESPONSE, self.retrieve_document_set, "ITI-43"))
        return {op.action: op for op in ops}


def _close_results(values: Any) -> list[Any]:
    return [getattr(v, "data", v) for v in values]


def _intake_of(request: SoapRequest) -> Iti41Intake | None:
    """The intake the edge streamed this request's parts into (found through what its sinks returned)."""
    for value in _close_results(request.attachments.values()):
        if isinstance(value, StagedDocument) and value.intake is not None:
            return value.intake
    return None

