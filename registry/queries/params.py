"""Stored query parameters: which ones each query takes, and their parsing into typed values.

ITI TF-2a §3.18.4.1.2.3.7 lists the parameters of each stored query; §3.18.4.1.2.3.5 their value
syntax (see `registry.queries.values`); ITI TF-3 Table 4.2.4.1-2 the error codes.

Decisions (documented in the module so reviewers see them in one place):

- A required parameter absent → XDSStoredQueryMissingParam; none of an "exactly one of" group →
  XDSStoredQueryMissingParam; two of such a group → XDSStoredQueryParamNumber.
- A single-valued parameter given more than one value, or any parameter repeated in several slots
  when it has no AND semantics → XDSStoredQueryParamNumber. Parameters marked AND/OR in
  ITI TF-2a (event codes, confidentiality codes, folder codes, referenceIds) may be repeated:
  values inside one slot are ORed, slots are ANDed (ITI TF-2a §3.18.4.1.2.3.5).
- A value that breaks the syntax (unquoted string, bad list, code without ``^^scheme``, time not
  made of 4–14 digits) → XDSRegistryError, as the NIST validator expects.
- Unknown parameters are ignored: ebRS 3.0 §6.3.2.1 says "a registry MUST ignore any parameters
  specified by the client for a stored query that do not match the parameters defined by the
  stored query".
- Times may come quoted (`'20040101'`) although TF says unquoted; both are accepted.
- A multi-valued parameter may come as a bare quoted value (`'x'`) instead of `('x')`.
- Status values not understood match nothing (ITI TF-2a §3.18.4.1.2.3.6: they are ignored).
"""

from __future__ import annotations

import enum
from typing import Any, Iterable, Mapping, Protocol

import attrs

from registry import constants as C
from registry.errors import RegistryError, XdsErrorCode, XdsFailure
from registry.queries.values import ValueSyntaxError, parse_code, parse_value


class Kind(enum.Enum):
    STRING = "string"  # one quoted string
    STRINGS = "strings"  # list of quoted strings, ORed
    PATTERNS = "patterns"  # list of quoted strings with % and _ wildcards, ORed
    CODES = "codes"  # list of code^^codingScheme, ORed
    TIME = "time"  # one DTM number, normalised to 14 digits
    NUMBER = "number"  # one integer


@attrs.frozen
class ParamSpec:
    kind: Kind
    required: bool = False
    and_or: bool = False  # repeated slots are ANDed (ITI TF-2a §3.18.4.1.2.3.5)
    single: bool = False  # a PATTERNS parameter that takes one value only (no M in its table)


@attrs.frozen
class QuerySpec:
    query_id: str
    name: str
    params: Mapping[str, ParamSpec]
    exactly_one_of: tuple[tuple[str, ...], ...] = ()
    single_patient: bool = True  # XDSResultNotSinglePatient applies (ITI TF-2a §3.18.4.1.3)


class SlotLike(Protocol):
    name: str
    values: tuple[str, ...]


@attrs.frozen
class StoredQuery:
    """A stored query with its parameters parsed and typed.

    `params` maps a parameter name to: str (STRING), tuple[str] (STRINGS/PATTERNS),
    tuple[CodeValue] (CODES), str of 14 digits (TIME), int (NUMBER). AND/OR parameters hold
    a tuple of OR-groups: ((a, b), (c,)) means (a OR b) AND c.
    """

    spec: QuerySpec
    params: Mapping[str, Any]
    home: str | None = None

    @property
    def query_id(self) -> str:
        return self.spec.query_id

    @property
    def name(self) -> str:
        return self.spec.name

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.params


# --- parameter names (ITI TF-2a §3.18.4.1.2.3.7) --------------------------------------------
DE = "$XDSDocumentEntry"
DE_PATIENT_ID = DE + "PatientId"
DE_CLASS_CODE = DE + "ClassCode"
DE_TYPE_CODE = DE + "TypeCode"
DE_PRACTICE_SETTING_CODE = DE + "PracticeSettingCode"
DE_CREATION_TIME_FROM = DE + "CreationTimeFrom"
DE_CREATION_TIME_TO = DE + "CreationTimeTo"
DE_SERVICE_START_TIME_FROM = DE + "ServiceStartTimeFrom"
DE_SERVICE_START_TIME_TO = DE + "ServiceStartTimeTo"
DE_SERVICE_STOP_TIME_FROM = DE + "ServiceStopTimeFrom"
DE_SERVICE_STOP_TIME_TO = DE + "ServiceStopTimeTo"
DE_HEALTHCARE_FACILITY_TYPE_CODE = DE + "HealthcareFacilityTypeCode"
DE_EVENT_CODE_LIST = DE + "EventCodeList"
DE_CONFIDENTIALITY_CODE = DE + "ConfidentialityCode"
DE_AUTHOR_PERSON = DE + "AuthorPerson"
DE_FORMAT_CODE = DE + "FormatCode"
DE_STATUS = DE + "Status"
DE_TYPE = DE + "Type"
DE_REFERENCE_ID_LIST = DE + "ReferenceIdList"
DE_ENTRY_UUID = DE + "EntryUUID"
DE_UNIQUE_ID = DE + "UniqueId"
DE_LOGICAL_ID = DE + "LogicalID"

SS = "$XDSSubmissionSet"
SS_PATIENT_ID = SS + "PatientId"
SS_SOURCE_ID = SS + "SourceId"
SS_SUBMISSION_TIME_FROM = SS + "SubmissionTimeFrom"
SS_SUBMISSION_TIME_TO = SS + "SubmissionTimeTo"
SS_AUTHOR_PERSON = SS + "AuthorPerson"
SS_CONTENT_TYPE = SS + "ContentType"
SS_STATUS = SS + "Status"
SS_ENTRY_UUID = SS + "EntryUUID"
SS_UNIQUE_ID = SS + "UniqueId"

FOL = "$XDSFolder"
FOL_PATIENT_ID = FOL + "PatientId"
FOL_LAST_UPDATE_TIME_FROM = FOL + "LastUpdateTimeFrom"
FOL_LAST_UPDATE_TIME_TO = FOL + "LastUpdateTimeTo"
FOL_CODE_LIST = FOL + "CodeList"
FOL_STATUS = FOL + "Status"
FOL_ENTRY_UUID = FOL + "EntryUUID"
FOL_UNIQUE_ID = FOL + "UniqueId"
FOL_LOGICAL_ID = FOL + "LogicalID"

PATIENT_ID = "$patientId"
UUID = "$uuid"
ASSOCIATION_TYPES = "$AssociationTypes"
HOME_COMMUNITY_ID = "$homeCommunityId"
METADATA_LEVEL = "$MetadataLevel"  # ITI TF-2b §3.57 (Metadata Update option), accepted, 1 or 2

# Code parameters → short scheme names of registry.constants.DE_CODE_SCHEMES (document_code.scheme)
DE_CODE_PARAMS = {
    DE_CLASS_CODE: "classCode",
    DE_TYPE_CODE: "typeCode",
    DE_PRACTICE_SETTING_CODE: "practiceSettingCode",
    DE_HEALTHCARE_FACILITY_TYPE_CODE: "healthcareFacilityTypeCode",
    DE_EVENT_CODE_LIST: "eventCodeList",
    DE_CONFIDENTIALITY_CODE: "confidentialityCode",
    DE_FORMAT_CODE: "formatCode",
}

P = ParamSpec
_OPT_HOME = {HOME_COMMUNITY_ID: P(Kind.STRING)}
_STRING = P(Kind.STRING)
_STRINGS = P(Kind.STRINGS)
_TIME = P(Kind.TIME)
_CODES = P(Kind.CODES)
_CODES_AND_OR = P(Kind.CODES, and_or=True)
_REQUIRED_STRINGS = P(Kind.STRINGS, required=True)

_FIND_DOCUMENTS = {
    DE_PATIENT_ID: P(Kind.STRING, required=True),
    DE_CLASS_CODE: _CODES,
    DE_TYPE_CODE: _CODES,
    DE_PRACTICE_SETTING_CODE: _CODES,
    DE_CREATION_TIME_FROM: _TIME,
    DE_CREATION_TIME_TO: _TIME,
    DE_SERVICE_START_TIME_FROM: _TIME,
    DE_SERVICE_START_TIME_TO: _TIME,
    DE_SERVICE_STOP_TIME_FROM: _TIME,
    DE_SERVICE_STOP_TIME_TO: _TIME,
    DE_HEALTHCARE_FACILITY_TYPE_CODE: _CODES,
    DE_EVENT_CODE_LIST: _CODES_AND_OR,
    DE_CONFIDENTIALITY_CODE: _CODES_AND_OR,
    DE_AUTHOR_PERSON: P(Kind.PATTERNS),
    DE_FORMAT_CODE: _CODES,
    DE_STATUS: _REQUIRED_STRINGS,
    DE_TYPE: _STRINGS,
    METADATA_LEVEL: P(Kind.NUMBER),
    **_OPT_HOME,
}

_CONTENT_FILTERS = {
    DE_FORMAT_CODE: _CODES,
    DE_CONFIDENTIALITY_CODE: _CODES_AND_OR,
    DE_TYPE: _STRINGS,
}

SPECS: dict[str, QuerySpec] = {
    s.query_id: s
    for s in (
        # ITI TF-2a §3.18.4.1.2.3.7.1
        QuerySpec(C.SQ_FIND_DOCUMENTS, "FindDocuments", _FIND_DOCUMENTS),
        # ITI TF-2a §3.18.4.1.2.3.7.14: FindDocuments' parameters plus the referenceIdList
        QuerySpec(
            C.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
            "FindDocumentsByReferenceId",
            {**_FIND_DOCUMENTS, DE_REFERENCE_ID_LIST: P(Kind.STRINGS, required=True, and_or=True)},
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.2
        QuerySpec(
            C.SQ_FIND_SUBMISSION_SETS,
            "FindSubmissionSets",
            {
                SS_PATIENT_ID: P(Kind.STRING, required=True),
                SS_SOURCE_ID: _STRINGS,
                SS_SUBMISSION_TIME_FROM: _TIME,
                SS_SUBMISSION_TIME_TO: _TIME,
                # ITI TF-2a Table 3.18.4.1.2.3.7.2-1: O, single-valued (unlike the
                # DocumentEntry's $XDSDocumentEntryAuthorPerson, which is O M): one pattern.
                SS_AUTHOR_PERSON: P(Kind.PATTERNS, single=True),
                SS_CONTENT_TYPE: _CODES,
                SS_STATUS: _REQUIRED_STRINGS,
                **_OPT_HOME,
            },
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.3
        QuerySpec(
            C.SQ_FIND_FOLDERS,
            "FindFolders",
            {
                FOL_PATIENT_ID: P(Kind.STRING, required=True),
                FOL_LAST_UPDATE_TIME_FROM: _TIME,
                FOL_LAST_UPDATE_TIME_TO: _TIME,
                FOL_CODE_LIST: _CODES_AND_OR,
                FOL_STATUS: _REQUIRED_STRINGS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.4
        QuerySpec(
            C.SQ_GET_ALL,
            "GetAll",
            {
                PATIENT_ID: P(Kind.STRING, required=True),
                DE_STATUS: _REQUIRED_STRINGS,
                SS_STATUS: _REQUIRED_STRINGS,
                FOL_STATUS: _REQUIRED_STRINGS,
                **_CONTENT_FILTERS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.5
        QuerySpec(
            C.SQ_GET_DOCUMENTS,
            "GetDocuments",
            {
                DE_ENTRY_UUID: _STRINGS,
                DE_UNIQUE_ID: _STRINGS,
                DE_LOGICAL_ID: _STRINGS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
            exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID, DE_LOGICAL_ID),),
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.6
        QuerySpec(
            C.SQ_GET_FOLDERS,
            "GetFolders",
            {
                FOL_ENTRY_UUID: _STRINGS,
                FOL_UNIQUE_ID: _STRINGS,
                FOL_LOGICAL_ID: _STRINGS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
            exactly_one_of=((FOL_ENTRY_UUID, FOL_UNIQUE_ID, FOL_LOGICAL_ID),),
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.7
        QuerySpec(
            C.SQ_GET_ASSOCIATIONS,
            "GetAssociations",
            {UUID: _REQUIRED_STRINGS, METADATA_LEVEL: P(Kind.NUMBER), **_OPT_HOME},
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.8
        QuerySpec(
            C.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS,
            "GetDocumentsAndAssociations",
            {DE_ENTRY_UUID: _STRINGS, DE_UNIQUE_ID: _STRINGS, METADATA_LEVEL: P(Kind.NUMBER), **_OPT_HOME},
            exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),),
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.9
        QuerySpec(
            C.SQ_GET_SUBMISSION_SETS,
            "GetSubmissionSets",
            {UUID: _REQUIRED_STRINGS, **_OPT_HOME},
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.10
        QuerySpec(
            C.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
            "GetSubmissionSetAndContents",
            {
                SS_ENTRY_UUID: _STRING,
                SS_UNIQUE_ID: _STRING,
                **_CONTENT_FILTERS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
            exactly_one_of=((SS_ENTRY_UUID, SS_UNIQUE_ID),),
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.11
        QuerySpec(
            C.SQ_GET_FOLDER_AND_CONTENTS,
            "GetFolderAndContents",
            {
                FOL_ENTRY_UUID: _STRING,
                FOL_UNIQUE_ID: _STRING,
                **_CONTENT_FILTERS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
            exactly_one_of=((FOL_ENTRY_UUID, FOL_UNIQUE_ID),),
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.12
        QuerySpec(
            C.SQ_GET_FOLDERS_FOR_DOCUMENT,
            "GetFoldersForDocument",
            {DE_ENTRY_UUID: _STRING, DE_UNIQUE_ID: _STRING, METADATA_LEVEL: P(Kind.NUMBER), **_OPT_HOME},
            exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),),
        ),
        # ITI TF-2a §3.18.4.1.2.3.7.13
        QuerySpec(
            C.SQ_GET_RELATED_DOCUMENTS,
            "GetRelatedDocuments",
            {
                DE_ENTRY_UUID: _STRING,
                DE_UNIQUE_ID: _STRING,
                ASSOCIATION_TYPES: _REQUIRED_STRINGS,
                DE_TYPE: _STRINGS,
                METADATA_LEVEL: P(Kind.NUMBER),
                **_OPT_HOME,
            },
            exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),),
        ),
    )
}

# Queries that take $XDSDocumentEntryType and return only stable entries when it is absent.
# ITI TF-2a §3.18.4.1.2.3.6.2: "If no value is specified for DocumentEntryType, the value
# requesting only Stable Document Entries shall be assumed." The rule is the parameter's, so it
# holds in every query whose table lists $XDSDocumentEntryType, GetRelatedDocuments included
# (Table 3.18.4.1.2.3.7.13-1); there it selects the related entries, not the one named by id.
DEFAULT_STABLE_ONLY = frozenset(
    {
        C.SQ_FIND_DOCUMENTS,
        C.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
        C.SQ_GET_ALL,
        C.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
        C.SQ_GET_FOLDER_AND_CONTENTS,
        C.SQ_GET_RELATED_DOCUMENTS,
    }
)

_DTM_LENGTHS = frozenset({4, 6, 8, 10, 12, 14})


def _err(code: XdsErrorCode, spec: QuerySpec, name: str, message: str) -> RegistryError:
    return RegistryError(code, f"{spec.name}: {name}: {message}", location=name, rule="ITI18-params")


def _dtm_key(value: str) -> str:
    from registry.timefmt import dtm_key  # written by the ITI-42 side; imported lazily

    return dtm_key(value)


def _scalar(spec: QuerySpec, name: str, ps: ParamSpec, tokens, errors: list[RegistryError]) -> Any:
    if len(tokens) != 1:
        errors.append(
            _err(XdsErrorCode.XDSStoredQueryParamNumber, spec, name, f"takes one value, got {len(tokens)}")
        )
        return None
    tok = tokens[0]
    if ps.kind is Kind.STRING:
        if not tok.quoted:
            errors.append(_err(XdsErrorCode.XDSRegistryError, spec, name, "a string value must be quoted '…'"))
            return None
        return tok.text
    if ps.kind is Kind.TIME:
        if not tok.text.isdigit() or not tok.text.isascii() or len(tok.text) not in _DTM_LENGTHS:
            errors.append(
                _err(XdsErrorCode.XDSRegistryError, spec, name, f"{tok.text!r} is not a DTM time (4 to 14 digits)")
            )
            return None
        return _dtm_key(tok.text)
    # NUMBER
    if tok.quoted or not tok.text.isdigit():
        errors.append(_err(XdsErrorCode.XDSRegistryError, spec, name, f"{tok.text!r} is not a number"))
        return None
    return int(tok.text)


def _list(spec: QuerySpec, name: str, ps: ParamSpec, tokens, errors: list[RegistryError]) -> tuple | None:
    if ps.single and len(tokens) != 1:
        # ITI TF-3 Table 4.2.4.1-2: XDSStoredQueryParamNumber when "a parameter which only
        # accepts a single value is coded with multiple values".
        errors.append(
            _err(XdsErrorCode.XDSStoredQueryParamNumber, spec, name, f"takes one value, got {len(tokens)}")
        )
        return None
    out: list[Any] = []
    for tok in tokens:
        if not tok.quoted:
            errors.append(_err(XdsErrorCode.XDSRegistryError, spec, name, f"value {tok.text!r} must be quoted '…'"))
            return None
        if ps.kind is Kind.CODES:
            try:
                out.append(parse_code(tok.text))
            except ValueSyntaxError as exc:
                errors.append(_err(XdsErrorCode.XDSRegistryError, spec, name, str(exc)))
                return None
        else:
            out.append(tok.text)
    return tuple(out)


def _slot_tokens(spec: QuerySpec, name: str, values: Iterable[str], errors: list[RegistryError]):
    """All tokens of one slot, its values concatenated (CP 295); None after a syntax error."""
    tokens = []
    for text in values:
        try:
            parsed = parse_value(text)
        except ValueSyntaxError as exc:
            errors.append(_err(XdsErrorCode.XDSRegistryError, spec, name, f"{exc} in {text!r}"))
            return None
        tokens.extend(parsed.tokens)
    if not tokens:
        errors.append(_err(XdsErrorCode.XDSRegistryError, spec, name, "no value"))
        return None
    return tokens


def parse_parameters(query_id: str, slots: Iterable[SlotLike], home: str | None = None) -> StoredQuery:
    """Check and type the parameters of a stored query; raise XdsFailure with every error found."""
    spec = SPECS.get((query_id or "").strip())
    if spec is None:
        raise XdsFailure(
            RegistryError(
                XdsErrorCode.XDSUnknownStoredQuery,
                f"unknown stored query id {query_id!r}",
                location=query_id or "",
                rule="ITI18-query-id",
            )
        )
    grouped: dict[str, list[tuple[str, ...]]] = {}
    for slot in slots:
        if slot.name in spec.params:  # ebRS 3.0 §6.3.2.1: unknown parameters are ignored
            grouped.setdefault(slot.name, []).append(tuple(slot.values))
    errors: list[RegistryError] = []
    params: dict[str, Any] = {}
    for name, slot_values in grouped.items():
        ps = spec.params[name]
        if len(slot_values) > 1 and not ps.and_or:
            errors.append(
                _err(XdsErrorCode.XDSStoredQueryParamNumber, spec, name, f"given in {len(slot_values)} slots")
            )
            continue
        groups = []
        for values in slot_values:
            tokens = _slot_tokens(spec, name, values, errors)
            if tokens is None:
                break
            if ps.kind in (Kind.STRING, Kind.TIME, Kind.NUMBER):
                value = _scalar(spec, name, ps, tokens, errors)
            else:
                value = _list(spec, name, ps, tokens, errors)
            if value is None:
                break
            groups.append(value)
        else:
            params[name] = tuple(groups) if ps.and_or else groups[0]
    for name, ps in spec.params.items():
        if ps.required and name not in grouped:
            errors.append(_err(XdsErrorCode.XDSStoredQueryMissingParam, spec, name, "required parameter missing"))
    for group in spec.exactly_one_of:
        given = [n for n in group if n in grouped]
        if not given:
            errors.append(
                _err(
                    XdsErrorCode.XDSStoredQueryMissingParam,
                    spec,
                    " | ".join(group),
                    "one of these parameters is required",
                )
            )
        elif len(given) > 1:
            errors.append(
                _err(
                    XdsErrorCode.XDSStoredQueryParamNumber,
                    spec,
                    " | ".join(given),
                    "these parameters are mutually exclusive",
                )
            )
    level = params.get(METADATA_LEVEL)
    if level is not None and level not in (1, 2):
        errors.append(_err(XdsErrorCode.XDSRegistryError, spec, METADATA_LEVEL, "must be 1 or 2"))
    if errors:
        raise XdsFailure(errors)
    if spec.query_id in DEFAULT_STABLE_ONLY and DE_TYPE not in params:
        params[DE_TYPE] = (C.DOC_ENTRY_STABLE,)
    home = params.get(HOME_COMMUNITY_ID) or home
    return StoredQuery(spec, params, home)
