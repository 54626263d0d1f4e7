"""ITI-41 Provide and Register Document Set-b: the Document Repository's side (ITI TF-2b §3.41.4.1.3).

A pure handler over ports (blob store, registry client, signature policy, pending journal): the
documents have already streamed through `repository.intake` into *staged* blobs; this decides.

1. Every DocumentEntry has its Document and every Document its DocumentEntry (XDSMissingDocument /
   XDSMissingDocumentMetadata, ITI TF-2b §3.41.4.1.3).
2. The repository sets `repositoryUniqueId`, `hash` (SHA-1) and `size` on each DocumentEntry; a value
   the Document Source supplied that differs is XDSRepositoryMetadataError (ITI TF-2b §3.41.4.1.3,
   ITI TF-3 §4.2.3.2.18 hash, §4.2.3.2.19 repositoryUniqueId, §4.2.3.2.23 size).
3. A uniqueId whose blob is already stored (a resubmission) is never rewritten: identical content is
   accepted (the registry decides on the entry), different content is XDSNonIdenticalHash /
   XDSNonIdenticalSize (ITI TF-3 Table 4.2.4.1-2) without calling the registry. Identical content is
   accepted only if the registry lists the uniqueId: a stored blob it does not list is another
   submission's, in flight or failed, which may still delete it (XDSRepositoryError, resubmit later).
   Blob commits only create (`repository.blobs`): a submission whose uniqueId was stored by a
   concurrent one while it was being received fails with XDSRepositoryError and removes only its own
   blobs, so the registry never points to bytes it was not told the hash of, nor to a deleted blob.
4. The signature policy checks each (XML / DSG) document: `reject` fails the submission with its
   errors, `record` adds its verdict slot to the DocumentEntry.
5. DESIGN.md §3 rule 6: the new blobs are journalled as pending (`repository.pending`), committed
   (each atomically), then the registry registers the completed metadata (ITI-42 through the
   `RegistryClient` port). When the registry refuses, the blobs this submission wrote are deleted;
   when it answers, the pending rows go (lazily: `PendingJournal.settle`). When the registry may have received the request but its
   answer was lost, the blobs stay pending and the sweep settles them (never a registry entry
   without its document).

The registry's errors are returned to the Document Source as they are; XDSRegistryNotAvailable when
the registry cannot be reached; XDSRepositoryError for our own infrastructure failures (DESIGN.md
§3 rule 3). The registry validates the metadata itself (ITI-42); only repository rules are here.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, Iterable, Mapping

import attrs
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import RegistryError, XdsErrorCode, XdsFailure, infrastructure_code, infrastructure_message
from registry.model import DocumentEntry, SubmitObjectsRequest
from registry.ports import TransactionContext
from repository.blobs import BlobExists, BlobNotFound, object_key
from repository.crypto import DocumentBinding, SegmentDecryptor
from repository.intake import (
    META_INTAKE_ID,
    T_DOCUMENT,
    T_PNR_REQUEST,
    T_SUBMIT_OBJECTS_REQUEST,
    DiscardedPart,
    StagedDocument,
)
from repository.registry_client import RegistryClient, RegistryUnavailable
from repository.seal import SEAL_SUFFIX, seal_key

log = logging.getLogger("carnet.repository")

E = XdsErrorCode
SLOT_REPOSITORY_UNIQUE_ID = "repositoryUniqueId"
SLOT_HASH = "hash"
SLOT_SIZE = "size"


@attrs.frozen
class ProvideResult:
    """The answer (errors and warnings for the RegistryResponse) and what the audit event needs."""

    errors: tuple[RegistryError, ...]
    patient_ids: tuple[str, ...] = ()
    submission_set_unique_id: str | None = None
    document_unique_ids: tuple[str, ...] = ()
    stored_keys: tuple[str, ...] = ()  # blobs this submission wrote and kept

    @property
    def failed(self) -> bool:
        return any(e.is_error for e in self.errors)


class _Errors:
    """Errors in order, each (code, location, message) once."""

    def __init__(self) -> None:
        self.items: list[RegistryError] = []
        self._seen: set[tuple] = set()

    def add(self, error: RegistryError | None) -> None:
        if error is None:
            return
        key = (error.code, error.location, error.message)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(error)

    def __bool__(self) -> bool:
        return any(e.is_error for e in self.items)


def _err(code: XdsErrorCode, message: str, location: str = "", rule: str | None = None) -> RegistryError:
    return RegistryError(code, message, location, rule=rule)


def provide_and_register(
    request_element: etree._Element,
    staged: Mapping[str, StagedDocument | DiscardedPart],
    *,
    repository_unique_id: str,
    registry: RegistryClient,
    signatures: Any = None,
    blobs: Any,
    vault: Any = None,
    pending: Any = None,
    seal: Any = None,
    submission: SubmitObjectsRequest | None = None,
    problems: Iterable[RegistryError] = (),
    intake_id: str | None = None,
    context: TransactionContext | None = None,
) -> ProvideResult:
    """ITI TF-2b §3.41.4.1.3. `staged`: xdsb:Document/@id → what the intake made of its content;
    `problems`: what the intake found (unclaimed parts, unreadable metadata); `submission`: the
    parsed lcm:SubmitObjectsRequest if the intake already parsed it; `vault`: to read stored
    documents a DSG detached signature references; `pending`: the `PendingJournal` (None: no crash
    journal, tests only). Staged blobs not committed here are aborted, whatever happens."""
    docs = [d for d in staged.values() if isinstance(d, StagedDocument)]
    try:
        return _provide(
            request_element, staged, docs,
            repository_unique_id=repository_unique_id, registry=registry, signatures=signatures,
            blobs=blobs, vault=vault, pending=pending, seal=seal, submission=submission, problems=problems,
            intake_id=intake_id or next((d.intake_id for d in docs), None) or "unknown", context=context,
        )
    finally:
        for d in docs:
            d.abort()


def _provide(
    request_element, staged, docs, *, repository_unique_id, registry, signatures, blobs, vault, pending,
    seal, submission, problems, intake_id, context,
) -> ProvideResult:
    errors = _Errors()
    for p in problems:
        errors.add(p)
    if request_element.tag != T_PNR_REQUEST:
        errors.add(_err(E.XDSRepositoryMetadataError,
                        f"expected xdsb:ProvideAndRegisterDocumentSetRequest, found {request_element.tag}",
                        rule="iti41.request.structure"))
        return ProvideResult(tuple(errors.items))
    if submission is None:
        sor_el = request_element.find(T_SUBMIT_OBJECTS_REQUEST)
        if sor_el is None:
            errors.add(_err(E.XDSRepositoryMetadataError, "the request has no lcm:SubmitObjectsRequest",
                            rule="iti41.request.structure"))
            return ProvideResult(tuple(errors.items))
        try:
            submission = ebrim.parse_submit_objects_request(sor_el)
        except XdsFailure as failure:
            for e in failure.errors:
                errors.add(e)
            return ProvideResult(tuple(errors.items))
    sets = submission.submission_sets
    audit = dict(
        patient_ids=tuple(dict.fromkeys(p for s in sets if (p := s.patient_id))),
        submission_set_unique_id=sets[0].unique_id if sets else None,
        document_unique_ids=tuple(d.unique_id for d in submission.documents if d.unique_id),
    )

    for value in staged.values():
        errors.add(value.problem)
    by_id = {d.document_id: d for d in docs}
    _check_pairing(request_element, submission, errors)
    entries = {e.id: e for e in submission.documents}
    for doc in docs:
        if doc.problem is None and doc.document_id in entries:
            _check_document(entries[doc.document_id], doc, repository_unique_id, errors)
    slots = _check_signatures(submission, by_id, signatures, blobs, vault, repository_unique_id, errors)
    if errors:
        return ProvideResult(tuple(errors.items), **audit)

    # A blob found already stored is relied on only once the registry lists its document: until then
    # it belongs to a submission still in flight, which deletes it if the registry refuses that one.
    relied = [d for d in docs if d.existing is not None and d.problem is None]
    if relied:
        try:
            known = registry.known_document_unique_ids(d.unique_id for d in relied)
        except RegistryUnavailable as exc:
            log.error("ITI-41: registry not available: %s", exc)
            errors.add(_err(E.XDSRegistryNotAvailable, "the document registry could not be reached"))
            return ProvideResult(tuple(errors.items), **audit)
        for d in relied:
            if d.unique_id not in known:
                errors.add(_err(
                    E.XDSRepositoryError,
                    f"document uniqueId {d.unique_id} is stored but not registered: another submission of it "
                    "is in progress (or failed, and the orphan sweep will remove it); resubmit later",
                    d.unique_id, rule="iti41.document.unregistered",
                ))
        if errors:
            return ProvideResult(tuple(errors.items), **audit)

    completed = _complete(submission, by_id, repository_unique_id, slots)
    new_docs = [d for d in docs if d.is_new and d.writer is not None]
    try:
        if pending is not None:
            pending.record(intake_id, [(d.key, repository_unique_id, d.unique_id) for d in new_docs])
        for d in new_docs:
            if seal is not None:  # the seal first: a stored document always has its seal (repository.seal)
                _commit_seal(blobs, seal, repository_unique_id, d, intake_id)
            d.commit()
    except BlobExists as exc:
        # Stored meanwhile by a concurrent submission of the same document (the key was free when this
        # one began): that blob is left as it is (commit only creates), ours are removed.
        log.warning("ITI-41: blob %s was stored by a concurrent submission", exc.key)
        _clear(pending, intake_id, _delete_own(blobs, new_docs, intake_id))
        uid = next((d.unique_id for d in new_docs if d.key == exc.key), exc.key)
        errors.add(_err(
            E.XDSRepositoryError,
            f"document uniqueId {uid} was stored by another submission while this one was received; "
            "resubmit once that one is registered",
            uid, rule="iti41.document.concurrent",
        ))
        return ProvideResult(tuple(errors.items), **audit)
    except Exception as exc:  # noqa: BLE001 - store or journal failure: XDSRepositoryError
        log.error("ITI-41: committing the documents failed: %s", exc)
        _clear(pending, intake_id, _delete_own(blobs, new_docs, intake_id))
        code = infrastructure_code(exc, registry=False)
        errors.add(_err(code, infrastructure_message(code, "the repository could not store the documents")))
        return ProvideResult(tuple(errors.items), **audit)

    try:
        outcome = registry.register(completed, context)
    except RegistryUnavailable as exc:
        log.error("ITI-41: registry not available: %s", exc)
        if getattr(exc, "delivered", True) is False:
            _clear(pending, intake_id, _delete_own(blobs, new_docs, intake_id))
        # else: the registry may have registered; the blobs stay pending, the sweep settles them.
        errors.add(_err(E.XDSRegistryNotAvailable, "the document registry could not be reached"))
        return ProvideResult(tuple(errors.items), **audit)
    except Exception:  # noqa: BLE001 - unknown registry state: keep the blobs pending for the sweep
        log.exception("ITI-41: registry client failed")
        errors.add(_err(E.XDSRepositoryError, "the registration could not be completed"))
        return ProvideResult(tuple(errors.items), **audit)

    for e in outcome.errors:
        errors.add(e)
    if outcome.failed:
        # ITI TF-2b §3.41.4.1.3: the registry refused: the repository keeps nothing (DESIGN.md §3 rule 6).
        _clear(pending, intake_id, _delete_own(blobs, new_docs, intake_id))
        if not errors:
            errors.add(_err(E.XDSRegistryError, "the registry refused the submission"))
        return ProvideResult(tuple(errors.items), **audit)
    if new_docs:
        _settle(pending, intake_id)
    return ProvideResult(tuple(errors.items), stored_keys=tuple(d.key for d in new_docs), **audit)


# --- checks ------------------------------------------------------------------------------------


def _check_pairing(request_element: etree._Element, submission: SubmitObjectsRequest, errors: _Errors) -> None:
    """ITI TF-2b §3.41.4.1.3: one xdsb:Document per DocumentEntry, matched by id."""
    document_ids: list[str] = []
    for el in request_element.iterchildren(T_DOCUMENT):
        doc_id = el.get("id")
        if not doc_id:
            errors.add(_err(E.XDSRepositoryMetadataError, "xdsb:Document without an id attribute",
                            rule="iti41.document.id"))
            continue
        if doc_id in document_ids:
            errors.add(_err(E.XDSRepositoryMetadataError, f"more than one xdsb:Document with id {doc_id}",
                            doc_id, rule="iti41.document.unique"))
        document_ids.append(doc_id)
    entry_ids = {e.id for e in submission.documents}
    for entry in submission.documents:
        if entry.id not in document_ids:
            errors.add(_err(E.XDSMissingDocument,
                            f"DocumentEntry {entry.id} ({entry.unique_id}) has no xdsb:Document",
                            entry.unique_id or entry.id, rule="iti41.entry.document"))
    for doc_id in dict.fromkeys(document_ids):
        if doc_id not in entry_ids:
            errors.add(_err(E.XDSMissingDocumentMetadata,
                            f"xdsb:Document {doc_id} has no DocumentEntry in the submission",
                            doc_id, rule="iti41.document.entry"))


def _check_document(entry: DocumentEntry, doc: StagedDocument, repository_unique_id: str, errors: _Errors) -> None:
    where = doc.unique_id
    supplied_repo = entry.slot1(SLOT_REPOSITORY_UNIQUE_ID)
    if supplied_repo is not None and supplied_repo.strip() != repository_unique_id:
        errors.add(_err(E.XDSRepositoryMetadataError,
                        f"document {where}: repositoryUniqueId {supplied_repo} is not this repository's "
                        f"({repository_unique_id})", where, rule="iti41.entry.repositoryUniqueId"))
    supplied_hash = entry.slot1(SLOT_HASH)
    if supplied_hash is not None and supplied_hash.strip().lower() != (doc.hash or "").lower():
        errors.add(_err(E.XDSRepositoryMetadataError,
                        f"document {where}: supplied hash {supplied_hash} differs from the document's {doc.hash}",
                        where, rule="iti41.entry.hash"))
    supplied_size = entry.slot1(SLOT_SIZE)
    if supplied_size is not None and supplied_size.strip() != str(doc.size):
        errors.add(_err(E.XDSRepositoryMetadataError,
                        f"document {where}: supplied size {supplied_size} differs from the document's {doc.size}",
                        where, rule="iti41.entry.size"))
    if doc.existing is not None:
        old_hash, old_size = doc.existing
        # ITI TF-3 Table 4.2.4.1-2: a uniqueId already stored with other content.
        if old_hash.lower() != (doc.hash or "").lower():
            errors.add(_err(E.XDSNonIdenticalHash,
                            f"document {where} is already stored with another hash ({old_hash})",
                            where, rule="iti41.document.identical"))
        if old_size != doc.size:
            errors.add(_err(E.XDSNonIdenticalSize,
                            f"document {where} is already stored with another size ({old_size})",
                            where, rule="iti41.document.identical"))


def _check_signatures(
    submission: SubmitObjectsRequest,
    by_id: dict[str, StagedDocument],
    signatures: Any,
    blobs: Any,
    vault: Any,
    repository_unique_id: str,
    errors: _Errors,
) -> dict[str, Any]:
    """The signature policy per document (issue 3, Signed CDA); returns entry id → slot to add."""
    mode = getattr(getattr(signatures, "mode", None), "value", "off")
    if signatures is None or mode == "off":
        return {}
    by_uid = {d.unique_id: d for d in by_id.values()}
    resolver = _resolver(by_uid, blobs, vault, repository_unique_id, getattr(signatures, "max_bytes", 0))
    # ITI TF-3 §5.5 (DSG): a `signs` association goes from the signature's DocumentEntry to each
    # DocumentEntry it signs. Targets in this submission are checked against what the signature
    # covers; a target registered earlier (an entryUUID not in the submission) is not looked up.
    uids = {e.id: e.unique_id for e in submission.documents}
    signed: dict[str, list[str]] = {}
    for a in submission.associations:
        if a.association_type == C.ASSOC_SIGNS and a.target_object in uids:
            signed.setdefault(a.source_object, []).append(uids[a.target_object])
    slots: dict[str, Any] = {}
    for entry in submission.documents:
        doc = by_id.get(entry.id)
        if doc is None or doc.problem is not None:
            continue
        format_code = next(iter(doc.format_codes), None)
        if not doc.retained_complete:
            if _is_checked(signatures, doc) and mode == "reject":
                errors.add(_err(E.XDSRepositoryMetadataError,
                                f"document {doc.unique_id}: too large to verify its signature",
                                doc.unique_id, rule="repository.signature"))
            elif _is_checked(signatures, doc):  # record: say that it was not verified, and why
                from repository.signatures import SignatureStatus, SignatureVerdict

                verdict = SignatureVerdict(
                    SignatureStatus.UNVERIFIED, f"larger than {signatures.max_bytes} bytes, the verification limit",
                    dt.datetime.now(dt.timezone.utc))
                slots[entry.id] = verdict.as_slot()
            continue
        verdict, found = signatures.check_document(
            doc.mime_type, doc.retained, unique_id=doc.unique_id, format_code=format_code, resolver=resolver,
            signs=signed.get(entry.id, ()),
        )
        for e in found:
            errors.add(e)
        slot = signatures.slot_for(verdict)
        if slot is not None:
            slots[entry.id] = slot
    return slots


def _is_checked(signatures: Any, doc: StagedDocument) -> bool:
    from repository.signatures import DSG_DETACHED_FORMAT_CODE, is_xml_mime_type

    return is_xml_mime_type(doc.mime_type) or DSG_DETACHED_FORMAT_CODE in doc.format_codes


def _resolver(by_uid: dict[str, StagedDocument], blobs, vault, repository_unique_id: str, max_bytes: int
              ) -> Callable[[str], bytes | None]:
    """DSG reference URI (`urn:oid:<uniqueId>` or the uniqueId) → the bytes of a document of this
    submission, or of one already stored here (decrypted, bounded by the policy's parse cap)."""

    def resolve(uri: str) -> bytes | None:
        uid = uri[len("urn:oid:"):] if uri.startswith("urn:oid:") else uri
        doc = by_uid.get(uid) or by_uid.get(uri)
        if doc is not None:
            return doc.retained if doc.retained_complete else None
        if vault is None:
            return None
        try:
            return _read_stored(blobs, vault, repository_unique_id, uid, max_bytes)
        except Exception:  # noqa: BLE001 - not found or unreadable: the reference is missing
            return None

    return resolve


def _read_stored(blobs, vault, repository_unique_id: str, unique_id: str, max_bytes: int) -> bytes | None:
    out = bytearray()
    binding = DocumentBinding(repository_unique_id, unique_id)
    with blobs.open_read(object_key(repository_unique_id, unique_id)) as reader:
        dec = SegmentDecryptor(vault.get, binding)
        for chunk in reader:
            out += dec.update(chunk)
            if max_bytes and len(out) > max_bytes:
                return None
        out += dec.finalize()
    return bytes(out)


# --- completion and clean-up --------------------------------------------------------------------


def _complete(
    submission: SubmitObjectsRequest, by_id: dict[str, StagedDocument], repository_unique_id: str,
    slots: dict[str, Any],
) -> SubmitObjectsRequest:
    """The metadata to register: each DocumentEntry with repositoryUniqueId, hash and size set."""
    objects = []
    for obj in submission.objects:
        doc = by_id.get(obj.id) if isinstance(obj, DocumentEntry) else None
        if doc is not None:
            obj = ebrim.set_slot(obj, SLOT_REPOSITORY_UNIQUE_ID, (repository_unique_id,))
            obj = ebrim.set_slot(obj, SLOT_HASH, (doc.hash,))
            obj = ebrim.set_slot(obj, SLOT_SIZE, (str(doc.size),))
            slot = slots.get(obj.id)
            if slot is not None:
                obj = ebrim.set_slot(obj, slot.name, slot.values)
        objects.append(obj)
    return attrs.evolve(submission, objects=tuple(objects))


def _commit_seal(blobs, seal, repository_unique_id: str, doc: StagedDocument, intake_id: str) -> None:
    """Store the repository's seal of `doc` (its SHA-256, computed as it streamed) beside its blob.
    A seal already there belongs to another submission of the same document (in flight, or left by
    a crash until the sweep removes it): BlobExists, as for the document itself."""
    if doc.sha256 is None:
        raise RuntimeError(f"document {doc.unique_id}: no SHA-256 computed for its seal")
    sealed = seal.seal(doc.unique_id, doc.sha256)
    key = seal_key(repository_unique_id, doc.unique_id)
    try:
        with blobs.open_staged(key, {META_INTAKE_ID: intake_id}) as writer:
            writer.write(sealed)
            writer.commit()
    except BlobExists:
        raise BlobExists(doc.key) from None


def _delete_own(blobs, docs: Iterable[StagedDocument], intake_id: str) -> list[str]:
    """Delete the committed blobs of this submission (and their seals), each only if it is still its
    own; the keys settled (deleted, never committed, or now another submission's). A blob that could
    not be deleted stays pending: the sweep removes it."""
    settled = []
    for d in docs:
        try:
            key = d.key + SEAL_SUFFIX  # the document's `seal_key`
            if blobs.read_metadata(key).get(META_INTAKE_ID) == intake_id:
                blobs.delete(key)
        except BlobNotFound:
            pass
        except Exception:  # noqa: BLE001 - the sweep removes it
            log.warning("ITI-41: could not delete the seal of %s after a failed registration", d.key, exc_info=True)
        if not d.committed:
            settled.append(d.key)
            continue
        try:
            if blobs.read_metadata(d.key).get(META_INTAKE_ID) == intake_id:
                blobs.delete(d.key)
            settled.append(d.key)
        except BlobNotFound:
            settled.append(d.key)
        except Exception:  # noqa: BLE001
            log.warning("ITI-41: could not delete blob %s after a failed registration", d.key, exc_info=True)
    return settled


def _settle(pending, intake_id: str) -> None:
    """The registration succeeded: the journal may drop the rows (lazily, when it can)."""
    if pending is None:
        return
    settle = getattr(pending, "settle", None)
    if settle is None:
        _clear(pending, intake_id)
        return
    try:
        settle(intake_id)
    except Exception:  # noqa: BLE001 - a stale row only makes the sweep ask the registry
        log.warning("ITI-41: could not settle the pending journal of %s", intake_id, exc_info=True)


def _clear(pending, intake_id: str, keys: Iterable[str] | None = None) -> None:
    if pending is None:
        return
    try:
        pending.clear(intake_id, keys)
    except Exception:  # noqa: BLE001 - a stale row only makes the sweep ask the registry
        log.warning("ITI-41: could not clear the pending journal of %s", intake_id, exc_info=True)
