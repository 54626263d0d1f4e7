"""XDS errors as typed data (DESIGN.md §3 rule 2).

Codes: ITI TF-3 Table 4.2.4.1-2 (XDS error codes), ITI TF-2b §3.57 (Metadata Update) and
ITI TF-2b §3.62 / RMD (Remove Metadata), plus the ebRS 3.0 exceptions IHE reuses.
A validator returns every `RegistryError` it finds, each with its location; one builder
(`registry.ebrim.registry_response`) turns them into a RegistryResponse.
"""

from __future__ import annotations

import enum

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
    XDSPartialFolderContentNotProcessed = "XDSPartialFolderContentNotProcessed"
    XDSPartialReplaceContentNotProcessed = "XDSPartialReplaceContentNotProcessed"
    XDSPartialAppendContentNotProcessed = "XDSPartialAppendContentNotProcessed"
    XDSPartialTransformContentNotProcessed = "XDSPartialTransformContentNotProcessed"
    XDSPartialTransformReplaceContentNotProcessed = "XDSPartialTransformReplaceContentNotProcessed"
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


@attrs.frozen
class RegistryError:
    """One rs:RegistryError: code, human text, where it was found, severity, and the rule that fired."""

    code: XdsErrorCode
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
    (DESIGN.md §3 rule 3)."""
