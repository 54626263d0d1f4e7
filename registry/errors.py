"""XDS errors as typed data (DESIGN.md §3 rule 2).

Codes: ITI TF-3 Table 4.2.4.1-2 (XDS error codes), ITI TF-2b §3.57 (Metadata Update) and
ITI TF-2b §3.62 / RMD (Remove Metadata), plus the ebRS 3.0 exceptions IHE reuses.
A validator returns every `RegistryError` it finds, each with its location; one builder
(`registry.ebrim.registry_response`) turns them into a RegistryResponse.
"""

from __future__ import annotations

import enum
import errno

import attrs

from registry import constants as C


class XdsErrorCode(str, enum.Enum):
    # ITI TF-3 Table 4.2.4.1-2
    XDSMissingDocument = "XDSMissingDocument"
    XDSMissingDocumentMetadata = "XDSMissingDocumentMetadata"
    XDSNonIdenticalHash = "XDSNonIdenticalHash"
    XDSNonIdenticalSize = "XDSNonIdenticalSize"
    XDSPatientIdDoesNotMatch = "XDSPatientIdDoesNotMatch"
    XDSRegistryBusy = "XDSRegistryBusy"
    XDSRegistryDeprecatedDocumentError = "XDSRegistryDeprecatedDocumentError"
    XDSRegistryDuplicateUniqueIdInMessage = "XDSRegistryDuplicateUniqueIdInMessage"
    XDSDuplicateUniqueIdInRegistry = "XDSDuplicateUniqueIdInRegistry"
    XDSRegistryError = "XDSRegistryError"
    XDSRegistryMetadataError = "XDSRegistryMetadataError"
    XDSRegistryNotAvailable = "XDSRegistryNotAvailable"
    XDSRegistryOutOfResources = "XDSRegistryOutOfResources"
    XDSRepositoryBusy = "XDSRepositoryBusy"
    XDSRepositoryDuplicateUniqueIdInMessage = "XDSRepositoryDuplicateUniqueIdInMessage"
    XDSRepositoryError = "XDSRepositoryError"
    XDSRepositoryMetadataError = "XDSRepositoryMetadataError"
    XDSRepositoryNotAvailable = "XDSRepositoryNotAvailable"
    XDSRepositoryOutOfResources = "XDSRepositoryOutOfResources"
    XDSResultNotSinglePatient = "XDSResultNotSinglePatient"
    XDSSqlError = "XDSSqlError"
    XDSStoredQueryMissingParam = "XDSStoredQueryMissingParam"
    XDSStoredQueryParamNumber = "XDSStoredQueryParamNumber"
    XDSTooManyResults = "XDSTooManyResults"
    XDSExtraMetadataNotSaved = "XDSExtraMetadataNotSaved"
    XDSUnknownPatientId = "XDSUnknownPatientId"
    XDSUnknownRepositoryId = "XDSUnknownRepositoryId"
    XDSUnknownStoredQuery = "XDSUnknownStoredQuery"
    XDSDocumentUniqueIdError = "XDSDocumentUniqueIdError"
    XDSUnknownCommunity = "XDSUnknownCommunity"
    XDSUnavailableCommunity = "XDSUnavailableCommunity"
    XDSMissingHomeCommunityId = "XDSMissingHomeCommunityId"
    # XDR Document Recipient warnings, spelled as in the table (no XDS prefix); Carnet sends none
    PartialFolderContentNotProcessed = "PartialFolderContentNotProcessed"
    PartialReplaceContentNotProcessed = "PartialReplaceContentNotProcessed"
    PartialAppendContentNotProcessed = "PartialAppendContentNotProcessed"
    PartialTransformNotProcessed = "PartialTransformNotProcessed"
    PartialTransformReplaceNotProcessed = "PartialTransformReplaceNotProcessed"
    # ITI-57 Metadata Update (ITI TF-2b §3.57.4.1.3.5)
    XDSMetadataUpdateError = "XDSMetadataUpdateError"
    XDSMetadataVersionError = "XDSMetadataVersionError"
    XDSMetadataUpdateOperationError = "XDSMetadataUpdateOperationError"
    XDSPatientIDReconciliationError = "XDSPatientIDReconciliationError"
    # ITI-62 Remove Metadata and ebRS 3.0 exceptions
    UnresolvedReferenceException = "UnresolvedReferenceException"
    ReferencesExistException = "ReferencesExistException"
    UnreferencedObjectException = "UnreferencedObjectException"
    ObjectNotFoundException = "ObjectNotFoundException"
    InvalidRequestException = "InvalidRequestException"


class RelayedCode(str):
    """An error code another actor answered that `XdsErrorCode` does not name (a national code,
    one of a later TF): the repository relays the registry's errors to the Document Source as
    they were sent (ITI TF-2b §3.41.4.1.3), so it is kept as written, not folded into
    XDSRegistryError. `.value` as an `XdsErrorCode` has, so audits and answers treat both alike."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"RelayedCode({str(self)!r})"


@attrs.frozen
class RegistryError:
    """One rs:RegistryError: code, human text, where it was found, severity, and the rule that fired."""

    code: XdsErrorCode | RelayedCode
    message: str
    location: str = ""
    severity: str = C.SEVERITY_ERROR
    rule: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == C.SEVERITY_ERROR

    def as_warning(self) -> "RegistryError":
        return attrs.evolve(self, severity=C.SEVERITY_WARNING)


class XdsFailure(Exception):
    """A transaction that fails with ebRS errors (the peer's fault or a business rule)."""

    def __init__(self, errors: list[RegistryError] | RegistryError):
        self.errors = [errors] if isinstance(errors, RegistryError) else list(errors)
        super().__init__("; ".join(f"{e.code.value}: {e.message}" for e in self.errors))


def fail(code: XdsErrorCode, message: str, location: str = "", rule: str | None = None) -> XdsFailure:
    return XdsFailure(RegistryError(code, message, location, rule=rule))


class InfrastructureError(Exception):
    """Our side failed (database down, bug): mapped to XDSRegistryError, never to a domain code
    (DESIGN.md §3 rule 3) — or, when the database says it is busy or short of resources, to
    XDSRegistryBusy / XDSRegistryOutOfResources (ITI TF-3 Table 4.2.4.1-2; `infrastructure_code`)."""


# ITI TF-3 Table 4.2.4.1-2: XDSRegistryBusy "too much activity", XDSRegistryOutOfResources
# "resources are low". What the databases report that way (their `__cause__` chain is searched):
# PostgreSQL (Appendix A, error codes): class 53 "insufficient resources" — but 53300
# too_many_connections, which is activity —, 55P03 lock_not_available, 40001
# serialization_failure, 40P01 deadlock_detected, 57014 query_canceled (statement_timeout);
# SQLite (result codes): SQLITE_BUSY*, SQLITE_LOCKED*, SQLITE_FULL, SQLITE_NOMEM, SQLITE_IOERR_NOMEM;
# SQLAlchemy's pool timing out waiting for a connection; the OS: ENOSPC, EDQUOT, ENOMEM.
_PG_BUSY = frozenset({"53300", "55P03", "40001", "40P01", "57014"})
_SQLITE_OUT = frozenset({"SQLITE_FULL", "SQLITE_NOMEM", "SQLITE_IOERR_NOMEM"})
_S3_BUSY = frozenset({"SlowDown", "ServiceUnavailable"})  # S3 error codes (503)


def resource_kind(exc: BaseException | None) -> str | None:
    """"busy", "out-of-resources" or None, from `exc` and the exceptions it was raised from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for candidate in (exc, getattr(exc, "orig", None)):
            if candidate is None:
                continue
            sqlstate = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
            if isinstance(sqlstate, str) and len(sqlstate) == 5:
                if sqlstate in _PG_BUSY:
                    return "busy"
                if sqlstate.startswith("53"):
                    return "out-of-resources"
            name = getattr(candidate, "sqlite_errorname", None)
            if isinstance(name, str):
                if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                    return "busy"
                if name in _SQLITE_OUT:
                    return "out-of-resources"
            if type(candidate).__module__ == "sqlite3":
                # SQLite's own texts for those codes (sqlite3.c, sqlite3ErrStr), which Carnet's writer
                # queue also raises (registry.db) without a result code
                text = str(candidate)
                if text.startswith(("database is locked", "database table is locked")):
                    return "busy"
                if text.startswith(("database or disk is full", "out of memory")):
                    return "out-of-resources"
            if type(candidate).__name__ == "TimeoutError" and type(candidate).__module__.startswith("sqlalchemy"):
                return "busy"  # the connection pool: every connection in use for pool_timeout seconds
            if isinstance(candidate, OSError) and candidate.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
                return "out-of-resources"
            if type(candidate).__module__.startswith("minio") and getattr(candidate, "code", None) in _S3_BUSY:
                return "busy"  # S3 asks to slow down, or is momentarily unavailable (503)
        exc = exc.__cause__ or exc.__context__
    return None


def infrastructure_code(exc: BaseException, *, registry: bool = True) -> "XdsErrorCode":
    """The ITI TF-3 Table 4.2.4.1-2 code for an infrastructure failure: Busy, OutOfResources, or the
    actor's generic error (`registry`: the Document Registry's codes, else the Repository's)."""
    kind = resource_kind(exc)
    if registry:
        return {"busy": XdsErrorCode.XDSRegistryBusy, "out-of-resources": XdsErrorCode.XDSRegistryOutOfResources}.get(
            kind, XdsErrorCode.XDSRegistryError)
    return {"busy": XdsErrorCode.XDSRepositoryBusy, "out-of-resources": XdsErrorCode.XDSRepositoryOutOfResources}.get(
        kind, XdsErrorCode.XDSRepositoryError)


def infrastructure_message(code: "XdsErrorCode", what: str) -> str:
    if code in (XdsErrorCode.XDSRegistryBusy, XdsErrorCode.XDSRepositoryBusy):
        return f"{what}: too much activity, retry later"
    if code in (XdsErrorCode.XDSRegistryOutOfResources, XdsErrorCode.XDSRepositoryOutOfResources):
        return f"{what}: resources are low"
    return what
