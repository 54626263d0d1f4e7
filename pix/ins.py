"""INS rules: the French national health identifier (Identifiant National de Santé), DESIGN.md §4.

The INS is the XDS affinity domain's patient id. Its value is a NIR (or, temporarily, a NIA)
of 13 characters plus a 2-digit control key, under one of four assigning authority OIDs
(ANS "Référentiel INS"; CI-SIS "Volet PAM — Contexte français" for the HL7v2 form
`NIR^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS`):

- INS-NIR      1.2.250.1.213.1.4.8   the person's NIR (production)
- INS-NIA      1.2.250.1.213.1.4.9   a NIA, the temporary number of a person being registered
- INS-NIR-TEST 1.2.250.1.213.1.4.10  fictitious test identities
- INS-NIR-DEMO 1.2.250.1.213.1.4.11  demonstration identities

Which of them a deployment accepts is configuration (`InsPolicy`): production accepts INS-NIR
and INS-NIA; a test bench INS-NIR-TEST; a demonstration INS-NIR-DEMO.

An INS is carried only for a *qualified* identity: HL7v2 PID-32 (Identity Reliability Code)
contains `VALI` (CI-SIS PAM-FR, table 0445 as extended by the French PAM; other values:
PROV provisional, VIDE unverified, DOUTE doubtful, FICTI fictitious). HL7v3 feeds map their
equivalent status onto the same code before calling the port.

NIR structure (INSEE, RNIPP; the numbers a CNAV NIA uses are built the same way):

    pos 1     sex: 1 man, 2 woman; 3/4 a foreign-born person being registered;
              7/8 a temporary number (NIA)
    pos 2-3   year of birth, 2 digits
    pos 4-5   month of birth 01-12; 20-42 or 50-99 when the civil-status act gives no month
              (persons registered from an incomplete act)
    pos 6-7   department of birth: 01-99, or 2A / 2B (Corsica, from 1976); 97x/98x overseas
              take a third digit (pos 8) and leave 2 for the commune; 99 is "born abroad",
              the commune then being the INSEE country code; 91-96 Algeria/Morocco/Tunisia
              before independence
    pos 8-10  commune (or country) INSEE code
    pos 11-13 order number of the birth act in the commune and month
    pos 14-15 key = 97 − (N mod 97), N the 13 first characters read as a number once
              2A → 19 and 2B → 18 are substituted; a key is therefore 01..97

Whatever the department's length, positions 6-13 are digits except the 2A/2B of positions
6-7, so the format check is positional; the commune/country codes are not looked up.
"""

from __future__ import annotations

from typing import Iterable

import attrs

from pix.xref import Identifier, InvalidIdentifier

INS_NIR = "1.2.250.1.213.1.4.8"
INS_NIA = "1.2.250.1.213.1.4.9"
INS_NIR_TEST = "1.2.250.1.213.1.4.10"
INS_NIR_DEMO = "1.2.250.1.213.1.4.11"

INS_OIDS = frozenset({INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIR_DEMO})
INS_NAMES = {
    INS_NIR: "INS-NIR",
    INS_NIA: "INS-NIA",
    INS_NIR_TEST: "INS-NIR-TEST",
    INS_NIR_DEMO: "INS-NIR-DEMO",
}

# The usual sets a configuration picks from.
PRODUCTION_OIDS = frozenset({INS_NIR, INS_NIA})
TEST_OIDS = frozenset({INS_NIR_TEST})
DEMO_OIDS = frozenset({INS_NIR_DEMO})

QUALIFIED = "VALI"  # PID-32 identity reliability code of a qualified identity (CI-SIS PAM-FR)

SEX_DIGITS = frozenset("123478")
_CORSICA = {"2A": "19", "2B": "18"}  # substituted before computing the key
_DIGITS = frozenset("0123456789")


def is_ins_oid(oid: str) -> bool:
    """True for the four INS assigning authorities (accepted by configuration or not)."""
    return oid in INS_OIDS


def _numeric(nir13: str) -> str:
    return nir13[:5] + _CORSICA.get(nir13[5:7], nir13[5:7]) + nir13[7:]


def nir_key(nir13: str) -> int:
    """The control key of a 13-character NIR: 97 − (N mod 97), 2A → 19 and 2B → 18 first."""
    if len(nir13) != 13:
        raise ValueError(f"a NIR without its key has 13 characters, not {len(nir13)}")
    digits = _numeric(nir13)
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a NIR: {nir13!r}")
    return 97 - int(digits) % 97


def _month_ok(month: int) -> bool:
    return 1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99


def nir_problem(value: str) -> str | None:
    """Why `value` is not a valid 15-character NIR (with its key), or None when it is."""
    if len(value) != 15:
        return f"an INS (NIR) has 15 characters (13 + a 2-digit key), not {len(value)}"
    if value[0] not in SEX_DIGITS:
        return f"NIR position 1 (sex) must be one of 1, 2, 3, 4, 7, 8, not {value[0]!r}"
    dept = value[5:7]
    others = value[1:5] + (value[7:] if dept in _CORSICA else value[5:])
    if not set(others) <= _DIGITS:
        return "NIR positions 2-15 must be digits (except 2A/2B as department, positions 6-7)"
    if not _month_ok(int(value[3:5])):
        return f"NIR month of birth {value[3:5]!r} is neither 01-12 nor 20-42 nor 50-99"
    if dept == "00":
        return "NIR department of birth 00 does not exist"
    key = int(value[13:])
    if not 1 <= key <= 97:
        return f"NIR control key {value[13:]!r} is outside 01-97"
    expected = nir_key(value[:13])
    if key != expected:
        return f"NIR control key {value[13:]} does not match the number (expected {expected:02d})"
    return None


def check_nir(value: str) -> None:
    """Raise InvalidIdentifier (location PID-3) unless `value` is a well-formed NIR with the
    right control key."""
    problem = nir_problem(value)
    if problem is not None:
        raise InvalidIdentifier(problem, location="PID-3")


def with_key(nir13: str) -> str:
    """A 13-character NIR completed with its key (tests, tools)."""
    return f"{nir13}{nir_key(nir13):02d}"


def is_qualified(identity_reliability: Iterable[str]) -> bool:
    """PID-32 contains VALI (CI-SIS PAM-FR): the only status under which an INS is carried."""
    return any(code.strip().upper() == QUALIFIED for code in identity_reliability)


@attrs.frozen
class InsPolicy:
    """Which INS assigning authorities this deployment accepts (configuration: production
    INS-NIR + INS-NIA, test INS-NIR-TEST, demo INS-NIR-DEMO)."""

    accepted_oids: frozenset[str] = PRODUCTION_OIDS

    def __attrs_post_init__(self) -> None:
        unknown = set(self.accepted_oids) - INS_OIDS
        if unknown:
            raise ValueError(f"not INS OIDs: {sorted(unknown)}; INS OIDs are {sorted(INS_OIDS)}")
        object.__setattr__(self, "accepted_oids", frozenset(self.accepted_oids))

    def check(self, identifier: Identifier, identity_reliability: Iterable[str], *,
              location: str = "PID-3") -> None:
        """Raise InvalidIdentifier unless `identifier` (whose authority is an INS OID) is an
        INS this deployment accepts, well formed, of a qualified identity."""
        name = INS_NAMES.get(identifier.authority, identifier.authority)
        if identifier.authority not in self.accepted_oids:
            raise InvalidIdentifier(
                f"{name} ({identifier.authority}) is not accepted by this deployment "
                f"(accepted: {', '.join(sorted(self.accepted_oids)) or 'none'})",
                location=location,
            )
        problem = nir_problem(identifier.value)
        if problem is not None:
            raise InvalidIdentifier(f"{name} {identifier.value!r}: {problem}", location=location)
        if not is_qualified(identity_reliability):
            raise InvalidIdentifier(
                f"{name} {identifier.value!r} is carried without a qualified identity "
                "(PID-32 must contain VALI)",
                location=location,
            )


__all__ = [
    "DEMO_OIDS",
    "INS_NIA",
    "INS_NIR",
    "INS_NIR_DEMO",
    "INS_NIR_TEST",
    "INS_OIDS",
    "InsPolicy",
    "PRODUCTION_OIDS",
    "QUALIFIED",
    "TEST_OIDS",
    "check_nir",
    "is_ins_oid",
    "is_qualified",
    "nir_key",
    "nir_problem",
    "with_key",
]
