"""The cross-reference port the PIX transactions work on (DESIGN.md §1), and its data.

Both wire forms (HL7v2 ITI-8/9, HL7v3 ITI-44/45) decode into these types, call one
`CrossReferences` implementation, and encode what it answers; neither knows the other.
`pix.identities.SqlCrossReferences` is the real adapter (SQLite, PostgreSQL),
`pix.identities.MemoryCrossReferences` the fake; one contract suite runs on both.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import attrs


@attrs.frozen
class Identifier:
    """A patient identifier (HL7 CX): CX.1 value, CX.4 assigning authority, CX.5 type code."""

    value: str
    authority: str  # CX.4.2, the assigning authority's universal id (an OID)
    namespace: str = ""  # CX.4.1, the authority's local name (informative)
    type_code: str = ""  # CX.5: PI (IPP), NH (INS), ...

    def xds_cx(self) -> str:
        """The XDS affinity-domain form the registry stores and compares: `value^^^&OID&ISO`
        (ITI TF-3 §4.2.3.1.7 allows only CX.1 and CX.4 in an XDS patientId)."""
        return f"{self.value}^^^&{self.authority}&ISO"


@attrs.frozen
class Demographics:
    """Demographics as received (kept, not interpreted beyond what INS rules need)."""

    family_name: str = ""
    given_names: tuple[str, ...] = ()
    birth_date: str = ""  # HL7 DTM as received (YYYYMMDD…)
    sex: str = ""  # HL7 table 0001: F, M, U, O, A, N
    birth_place: str = ""  # INSEE commune code when known (French PAM: PID-23 or PID-11 type BDL)
    extra: Mapping[str, str] = attrs.field(factory=dict)  # anything else worth keeping, by field name


@attrs.frozen
class PatientRecord:
    """One patient as a source feeds it: every identifier it carries, its demographics, and the
    reliability of the identity (HL7v2 PID-32: VALI = qualified, the only status under which an
    INS may be carried; PROV, VIDE, DOUTE, FICTI ...; HL7v3: the equivalent code)."""

    identifiers: tuple[Identifier, ...]
    demographics: Demographics = Demographics()
    identity_reliability: tuple[str, ...] = ()


@attrs.frozen
class XrefChange:
    """What a feed or merge changed: each affected cross-reference group (all identifiers of one
    person, after the change) — the input of ITI-10 / ITI-46 update notifications — and the
    affinity-domain patient ids made known or retired in the registry."""

    groups: tuple[tuple[Identifier, ...], ...] = ()
    registered: tuple[str, ...] = ()  # XDS patient ids (xds_cx) now known to the registry
    retired: tuple[str, ...] = ()  # XDS patient ids subsumed by a merge (now unknown)


class PixError(Exception):
    """A domain error a PIX transaction answers with (never an infrastructure failure).

    `hl7_code` is HL7 table 0357 (100 segment sequence error, 101 required field missing,
    102 data type error, 103 table value not found, 200 unsupported message type,
    201 unsupported event code, 204 unknown key identifier, 207 application internal error);
    `location` names the field (e.g. "PID-3", "QPD-3", "QPD-4")."""

    hl7_code: str = "207"

    def __init__(self, message: str, *, location: str = "", hl7_code: str | None = None) -> None:
        super().__init__(message)
        self.location = location
        if hl7_code is not None:
            self.hl7_code = hl7_code


class UnknownDomain(PixError):
    """An assigning authority that is not one of the configured domains (ITI TF-2a §3.9.4.2.2.6:
    QPD-3's or QPD-4's authority → AE, ERR 204)."""

    hl7_code = "204"


class UnknownIdentifier(PixError):
    """A queried identifier the manager does not know (ITI TF-2a §3.9.4.2.2.6 → AE, ERR 204 at QPD-3)."""

    hl7_code = "204"


class InvalidIdentifier(PixError):
    """A malformed identifier: missing CX.1 or CX.4, or an INS that fails the INS rules
    (`pix.ins`: bad NIR format or key, INS not allowed by configuration, INS without a
    qualified identity)."""

    hl7_code = "102"


class CrossReferences(Protocol):
    """The PIX Manager's cross-reference store; also the registry's PatientIdentities port."""

    def known_domains(self) -> frozenset[str]:
        """Assigning authority OIDs this manager accepts (configured, INS OIDs included)."""
        ...

    def feed(self, record: PatientRecord) -> XrefChange:
        """Create or update (ITI-8 A01/A04/A05/A08/A28/A31, ITI-44 add/revise): store each
        identifier of a known domain with the demographics, link them into one group, and when
        a valid INS of a qualified identity is among them make its xds_cx known to the registry.
        Raises UnknownDomain / InvalidIdentifier; stores nothing then."""
        ...

    def merge(self, surviving: PatientRecord, subsumed: Identifier) -> XrefChange:
        """ITI-8 A40 / ITI-44 PRPA_IN201304UV02: `subsumed` (MRG-1) is merged into `surviving`
        (PID-3); the history is kept. When both are affinity-domain (INS) ids, the registry
        answers the subsumed id's entries under the surviving id and refuses new submissions
        for the subsumed id (ITI TF-2a §3.8.4.2.3)."""
        ...

    def query(self, identifier: Identifier, domains: Sequence[str] = ()) -> tuple[Identifier, ...]:
        """ITI-9 / ITI-45: the other identifiers of the identifier's group, restricted to
        `domains` when given; never the queried identifier itself. Raises UnknownDomain for an
        unknown authority (of the identifier or in `domains`), UnknownIdentifier for an unknown
        identifier of a known domain. An empty tuple is the NF case."""
        ...

    def is_known(self, patient_id: str) -> bool:
        """PatientIdentities (registry/ports.py): an active affinity-domain patient id."""
        ...
