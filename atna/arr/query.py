"""ITI-81 search parameters → a typed `AuditQuery` (sans-I/O, no database, no Twisted).

IHE ITI RESTful ATNA supplement, Retrieve ATNA Audit Event [ITI-81] §3.81.4.1.2.1: a FHIR R4
search on AuditEvent (http://hl7.org/fhir/R4/search.html). Supported parameters:

| parameter                                            | FHIR type | matches (DICOM PS3.15 A.5 element)                     |
|------------------------------------------------------|-----------|---------------------------------------------------------|
| `date`                                               | date      | EventIdentification@EventDateTime (prefixes eq ge gt le lt) |
| `patient`, `patient.identifier`, `entity-id`, `entity.identifier` | token | ParticipantObjectID of a patient (type 1, role 1): `system|value`, `value^^^&oid&ISO`, or a bare value |
| `type`                                               | token     | EventID code (`110112`, `DCM|110112`)                   |
| `subtype`                                            | token     | EventTypeCode code (`ITI-18`, `urn:ihe:event-type-code|ITI-18`) |
| `outcome`                                            | token     | EventOutcomeIndicator (0, 4, 8, 12)                     |
| `action`                                             | token     | EventActionCode (C R U D E)                             |
| `agent`, `user`, `agent.identifier`                  | token     | ActiveParticipant@UserID or @AlternativeUserID          |
| `source`                                             | token     | AuditSourceIdentification@AuditSourceID                 |
| `address`                                            | token     | ActiveParticipant@NetworkAccessPointID                  |
| `_count`, `_offset`                                  | number    | page size (default 100, at most 1000) and start (paging links) |
| `_format`                                            | —         | only JSON (`json`, `application/fhir+json`, `application/json`) |

FHIR search semantics: a comma inside one parameter is OR, a repeated parameter is AND. A token
`system|value` with an empty system (`|value`) matches a value without system as any value here.
A date without a time zone is read as UTC. Any other parameter is refused (`SearchParameterError`,
answered with an OperationOutcome and HTTP 400) rather than silently ignored: a consumer asking
for something we do not filter on must not believe the answer is filtered.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Mapping, Sequence

import attrs

DEFAULT_COUNT = 100
MAX_COUNT = 1000

PATIENT_PARAMS = ("patient", "patient.identifier", "entity-id", "entity.identifier")
AGENT_PARAMS = ("agent", "user", "agent.identifier")
KNOWN = frozenset(
    ("date", "type", "subtype", "outcome", "action", "source", "address", "_count", "_offset", "_format")
    + PATIENT_PARAMS
    + AGENT_PARAMS
)
JSON_FORMATS = frozenset(("json", "application/fhir+json", "application/json", "application/json+fhir"))
DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"


class SearchParameterError(ValueError):
    """A search the ARR refuses (unknown parameter, malformed value): HTTP 400 + OperationOutcome."""


@attrs.frozen
class PatientRef:
    """A patient identifier: CX.1 `value` and, when given, the assigning authority's OID."""

    value: str
    system: str | None = None


@attrs.frozen
class DateBound:
    """`event_time` ≥ `start` (when `low`) and/or < `end` (when `high`), as normalised strings."""

    low: str | None
    high: str | None


@attrs.frozen
class AuditQuery:
    """A parsed ITI-81 search. Each tuple of alternatives is OR; the tuples are AND."""

    dates: tuple[DateBound, ...] = ()
    patients: tuple[tuple[PatientRef, ...], ...] = ()
    types: tuple[tuple[str, ...], ...] = ()
    subtypes: tuple[tuple[str, ...], ...] = ()
    outcomes: tuple[tuple[str, ...], ...] = ()
    actions: tuple[tuple[str, ...], ...] = ()
    agents: tuple[tuple[str, ...], ...] = ()
    sources: tuple[tuple[str, ...], ...] = ()
    addresses: tuple[tuple[str, ...], ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0


# --- times ---------------------------------------------------------------------------------

def format_time(value: dt.datetime) -> str:
    """The stored form of an instant: UTC, microseconds, `Z` (sorts as text)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    v = value.astimezone(dt.timezone.utc)
    # what strftime("%Y-%m-%dT%H:%M:%S.%fZ") writes, the year always 4 digits, for a fifth of its cost
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
            f".{v.microsecond:06d}Z")


_FHIR_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d{1,9})?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fhir_date_range(text: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the instants a FHIR date/dateTime search value denotes, by its precision
    (FHIR R4 search §3.1.1.5.7 "date": the value's implicit range)."""
    m = _FHIR_DATE.match(text)
    if not m:
        raise SearchParameterError(f"date value {text!r} is not a FHIR date or dateTime")
    tz = dt.timezone.utc
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        year = int(m["y"])
        if m["m"] is None:
            start = dt.datetime(year, 1, 1, tzinfo=tz)
            return start, start.replace(year=year + 1)
        month = int(m["m"])
        if m["d"] is None:
            start = dt.datetime(year, month, 1, tzinfo=tz)
            end = start.replace(year=year + 1, month=1) if month == 12 else start.replace(month=month + 1)
            return start, end
        day = int(m["d"])
        if m["H"] is None:
            start = dt.datetime(year, month, day, tzinfo=tz)
            return start, start + dt.timedelta(days=1)
        start = dt.datetime(year, month, day, int(m["H"]), int(m["M"]), tzinfo=tz)
        if m["S"] is None:
            return start, start + dt.timedelta(minutes=1)
        start = start.replace(second=int(m["S"]))
        if m["f"] is None:
            return start, start + dt.timedelta(seconds=1)
        digits = m["f"][1:]
        micro = int((digits + "000000")[:6])
        step = dt.timedelta(microseconds=10 ** max(0, 6 - len(digits)))
        start = start.replace(microsecond=micro)
        return start, start + step
    except ValueError as exc:
        raise SearchParameterError(f"date value {text!r} is out of range: {exc}") from None


_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def date_bound(text: str) -> DateBound:
    prefix, value = "eq", text
    if text[:2] in _PREFIXES and not text[:2].isdigit():
        prefix, value = text[:2], text[2:]
    if prefix not in ("eq", "ge", "gt", "le", "lt"):
        raise SearchParameterError(f"date prefix {prefix!r} is not supported (eq, ge, gt, le, lt)")
    start, end = (format_time(t) for t in fhir_date_range(value))
    return {
        "eq": DateBound(start, end),
        "ge": DateBound(start, None),
        "gt": DateBound(end, None),
        "le": DateBound(None, end),
        "lt": DateBound(None, start),
    }[prefix]


# --- tokens --------------------------------------------------------------------------------

def _strip_oid(system: str) -> str:
    return system[len("urn:oid:"):] if system.lower().startswith("urn:oid:") else system


def patient_ref(text: str) -> PatientRef:
    """A patient as a CX (`value^^^&oid&ISO`, HL7 v2.5 §2.A.14; ITI TF-2a §3.20.7.3 uses this form
    in ParticipantObjectID), a FHIR token `system|value` (system `urn:oid:…` or a bare OID), or a
    bare value (any assigning authority)."""
    text = text.strip()
    if not text:
        raise SearchParameterError("empty patient identifier")
    if "^" in text:
        value, system = split_cx(text)
        if not value:
            raise SearchParameterError(f"patient identifier {text!r} has no CX.1 value")
        return PatientRef(value, system)
    if "|" in text:
        system, value = text.split("|", 1)
        if not value:
            raise SearchParameterError(f"patient identifier {text!r} has no value")
        return PatientRef(value, _strip_oid(system) or None)
    return PatientRef(text, None)


def split_cx(cx: str) -> tuple[str, str | None]:
    """(CX.1, CX.4.2 universal id) of a CX; the OID is None when CX.4 carries none."""
    parts = cx.split("^")
    value = parts[0].strip()
    system = None
    if len(parts) >= 4:
        hd = [c.strip() for c in parts[3].split("&")]
        if len(hd) >= 2 and hd[1]:
            system = hd[1]
        else:
            # Leniency for a misplaced universal id (`&&1.3.6…&ISO`, seen in the WUSTL samples):
            # the first later component that is an OID. A namespace id alone is not a system.
            system = next((c for c in hd[2:] if _OID.match(c)), None)
    return value, system


_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def _code_token(text: str) -> str:
    """The code of a token (`system|code` or `code`); systems are not stored for EventID codes."""
    return text.split("|", 1)[1] if "|" in text else text


_OUTCOMES = frozenset(("0", "4", "8", "12"))
_ACTIONS = frozenset("CRUDE")


def parse_search(params: Mapping[str, Sequence[str]]) -> AuditQuery:
    """Parse ITI-81 query parameters (name → repeated values, already URL-decoded)."""
    unknown = sorted(n for n in params if n.split(":", 1)[0] not in KNOWN)
    if unknown:
        raise SearchParameterError(f"unknown search parameter(s): {', '.join(unknown)}")
    modified = sorted(n for n in params if ":" in n)
    if modified:
        raise SearchParameterError(f"search modifiers are not supported: {', '.join(modified)}")

    def alternatives(name: str) -> list[tuple[str, ...]]:
        out = []
        for value in params.get(name, ()):
            alts = tuple(v.strip() for v in value.split(",") if v.strip())
            if not alts:
                raise SearchParameterError(f"search parameter {name} has an empty value")
            out.append(alts)
        return out

    patients = []
    for name in PATIENT_PARAMS:
        patients += [tuple(patient_ref(v) for v in alts) for alts in alternatives(name)]
    agents = []
    for name in AGENT_PARAMS:
        agents += [tuple(_code_token(v) for v in alts) for alts in alternatives(name)]
    outcomes = [tuple(_code_token(v) for v in alts) for alts in alternatives("outcome")]
    for alts in outcomes:
        bad = [o for o in alts if o not in _OUTCOMES]
        if bad:
            raise SearchParameterError(f"outcome {bad[0]!r} is not 0, 4, 8 or 12 (DICOM EventOutcomeIndicator)")
    actions = [tuple(_code_token(v).upper() for v in alts) for alts in alternatives("action")]
    for alts in actions:
        bad = [a for a in alts if a not in _ACTIONS]
        if bad:
            raise SearchParameterError(f"action {bad[0]!r} is not C, R, U, D or E (DICOM EventActionCode)")
    dates = []
    for value in params.get("date", ()):
        if "," in value:
            raise SearchParameterError("a date parameter takes one value (repeat it for a range)")
        dates.append(date_bound(value.strip()))
    for fmt in params.get("_format", ()):
        if fmt.strip().split(";")[0] not in JSON_FORMATS:
            raise SearchParameterError(f"_format {fmt!r} is not supported: this ARR answers in JSON")
    return AuditQuery(
        dates=tuple(dates),
        patients=tuple(patients),
        types=tuple(tuple(_code_token(v) for v in alts) for alts in alternatives("type")),
        subtypes=tuple(tuple(_code_token(v) for v in alts) for alts in alternatives("subtype")),
        outcomes=tuple(outcomes),
        actions=tuple(actions),
        agents=tuple(agents),
        sources=tuple(tuple(_code_token(v) for v in alts) for alts in alternatives("source")),
        addresses=tuple(tuple(_code_token(v) for v in alts) for alts in alternatives("address")),
        count=_number(params, "_count", DEFAULT_COUNT, 1, MAX_COUNT),
        offset=_number(params, "_offset", 0, 0, None),
    )


def _number(params: Mapping[str, Sequence[str]], name: str, default: int, low: int, high: int | None) -> int:
    values = params.get(name, ())
    if not values:
        return default
    if len(values) > 1:
        raise SearchParameterError(f"{name} given more than once")
    try:
        number = int(values[0])
    except ValueError:
        raise SearchParameterError(f"{name} must be an integer, not {values[0]!r}") from None
    if number < low:
        raise SearchParameterError(f"{name} must be at least {low}")
    return min(number, high) if high is not None else number
