"""Syntax checks for XDS metadata values (ITI TF-3 §4.2.3.1).

Each check is a small pure function: ``None`` when the value is valid, otherwise a short reason
(used as the RegistryError message). They never raise on any ``str``.
"""

from __future__ import annotations

import re

from registry.timefmt import dtm_problem

OID_MAX = 64
TITLE_MAX = 128  # DocumentEntry.title, ITI TF-3 §4.2.3.2.24
UNIQUE_ID_MAX = 128  # DocumentEntry.uniqueId, ITI TF-3 §4.2.3.2.26 (the OID root stays ≤ OID_MAX)
UNIQUE_ID_EXTENSION_MAX = 16
SIZE_MAX = 2**63 - 1  # stored as a 64-bit integer

_OID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\Z")
_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_SHA1 = re.compile(r"[0-9a-fA-F]{40}\Z")
_SIZE = re.compile(r"[0-9]+\Z")
_TYPE_CODE = re.compile(r"[A-Z]{1,5}\Z")  # HL7 table 0203 identifier type codes (NH, PI, MR, ...)
# RFC 5646 in its common shapes: language (2-3 letters, or 4-8 registered), then subtags of 1-8
# alphanumerics (script, region, variants, extensions); or a private-use/grandfathered x-/i- tag.
_LANGUAGE = re.compile(r"(?:[A-Za-z]{2,8}|[xXiI])(?:-[A-Za-z0-9]{1,8})*\Z")
# RFC 6838 §4.2 restricted-name, with optional RFC 2045 parameters.
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIME = re.compile(
    rf"{_MIME_NAME}/{_MIME_NAME}"
    r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\]*\"))*\Z"
)
_PID_FIELD = re.compile(r"PID-[1-9][0-9]*\|")  # a PID segment field number, then '|'
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`\x00-\x1f\x7f]+\Z")


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def oid(value: str) -> str | None:
    """ITI TF-3 §4.2.3.1.6: digits and dots, no leading zero in an arc, at most 64 characters."""
    if not _is_text(value) or not value:
        return "OID is empty"
    if len(value) > OID_MAX:
        return f"OID longer than {OID_MAX} characters"
    if not _OID.match(value):
        return "OID must be decimal arcs separated by dots, without leading zeros"
    return None


def uuid_urn(value: str) -> str | None:
    """An entryUUID: ``urn:uuid:`` followed by an RFC 4122 UUID (ITI TF-3 §4.2.3.2.10)."""
    if not _is_text(value) or not _UUID.match(value):
        return "not a urn:uuid: UUID"
    return None


def document_unique_id(value: str) -> str | None:
    """ITI TF-3 §4.2.3.2.26: "Max length is 128 characters"; ``OID`` or ``OID^extension``, "where
    OID is a 64 digits max, and the Id is a 16 UTF-8 char max" (so up to 81 characters in that
    form: a 64-character cap on the whole value refused valid CDA uniqueIds)."""
    if not _is_text(value) or not value:
        return "uniqueId is empty"
    if len(value) > UNIQUE_ID_MAX:
        return f"uniqueId longer than {UNIQUE_ID_MAX} characters"
    root, sep, extension = value.partition("^")
    if problem := oid(root):
        return f"uniqueId root: {problem}"
    if sep:
        if not extension:
            return "uniqueId extension is empty"
        if len(extension) > UNIQUE_ID_EXTENSION_MAX:
            return f"uniqueId extension longer than {UNIQUE_ID_EXTENSION_MAX} characters"
        # "16 UTF-8 char max" (§4.2.3.2.26): any printable character, not only ASCII.
        if "^" in extension or not extension.isprintable():
            return "uniqueId extension must be printable characters without '^'"
    return None


def _assigning_authority(value: str) -> str | None:
    """An HD ``&OID&ISO`` (namespace id empty or not): universal id an OID, type ISO."""
    parts = value.split("&")
    if len(parts) != 3:
        return "assigning authority must be namespace&OID&ISO"
    if problem := oid(parts[1]):
        return f"assigning authority universal id: {problem}"
    if parts[2] != "ISO":
        return "assigning authority universal id type must be ISO"
    return None


def cx_patient_id(value: str) -> str | None:
    """ITI TF-3 §4.2.3.1.7 / §4.2.3.2.16: ``id^^^&OID&ISO``.

    CX.1 non-empty, CX.2 and CX.3 empty, CX.4 = ``&OID&ISO`` (no namespace id), nothing after,
    except an optional CX.5 identifier type code: the French DMP sends INS as
    ``…^^^&1.2.250.1.213.1.4.8&ISO^NH`` (DESIGN.md §4).
    """
    if not _is_text(value) or not value:
        return "patient id is empty"
    parts = value.split("^")
    if len(parts) not in (4, 5):
        return "patient id must be id^^^&OID&ISO"
    if not parts[0] or "&" in parts[0] or not parts[0].strip() == parts[0]:
        return "patient id CX.1 must be a non-empty id without '&' or surrounding spaces"
    if parts[1] or parts[2]:
        return "patient id CX.2 and CX.3 must be empty"
    if not parts[3].startswith("&"):
        return "patient id CX.4 must be &OID&ISO (no namespace id)"
    if problem := _assigning_authority(parts[3]):
        return f"patient id CX.4: {problem}"
    if len(parts) == 5 and not _TYPE_CODE.match(parts[4]):
        return "patient id CX.5 must be an identifier type code (e.g. NH)"
    return None


def cx_source_patient_id(value: str) -> str | None:
    """sourcePatientId (ITI TF-3 §4.2.3.2.22): a CX with CX.1 and CX.4 present; the local
    assigning authority may carry a namespace id and CX.5 may be present."""
    if not _is_text(value) or not value:
        return "sourcePatientId is empty"
    parts = value.split("^")
    if len(parts) < 4 or not parts[0]:
        return "sourcePatientId must be id^^^assigningAuthority"
    if not parts[3]:
        return "sourcePatientId CX.4 (assigning authority) is empty"
    if "&" in parts[3] and (problem := _assigning_authority(parts[3])):
        return f"sourcePatientId CX.4: {problem}"
    return None


def source_patient_info(value: str) -> str | None:
    """One sourcePatientInfo value (ITI TF-3 §4.2.3.2.23): a field of the source's PID segment
    coded ``PID-x|value`` (``PID-3|…``, ``PID-5|DOE^JOHN^^^``); the field's content is not checked."""
    if not _is_text(value) or not _PID_FIELD.match(value):
        return "sourcePatientInfo value must be PID-x|value (a PID field number, then '|')"
    return None


def xcn(value: str) -> str | None:
    """authorPerson / legalAuthenticator (ITI TF-3 §4.2.3.1.4): an XCN with XCN.1 (id) or
    XCN.2 (family name) present; if XCN.9 is given it is ``&OID&ISO``."""
    if not _is_text(value) or not value.strip():
        return "XCN is empty"
    parts = value.split("^")
    if len(parts) > 23:
        return "XCN has more than 23 components"
    id_number = parts[0]
    family = parts[1].split("&")[0] if len(parts) > 1 else ""
    if not id_number.strip() and not family.strip():
        return "XCN needs an id (XCN.1) or a family name (XCN.2)"
    if len(parts) > 8 and parts[8] and (problem := _assigning_authority(parts[8])):
        return f"XCN.9: {problem}"
    return None


def xon(value: str) -> str | None:
    """authorInstitution (ITI TF-3 §4.2.3.1.4): an XON with XON.1 (organization name). When an
    organization identifier (XON.10) is given and is not an OID, XON.6 is ``&OID&ISO``."""
    if not _is_text(value) or not value.strip():
        return "XON is empty"
    parts = value.split("^")
    if len(parts) > 10:
        return "XON has more than 10 components"
    if not parts[0].strip():
        return "XON.1 (organization name) is empty"
    identifier = parts[9] if len(parts) == 10 else ""
    if identifier and oid(identifier) is not None:
        authority = parts[5] if len(parts) > 5 else ""
        if problem := _assigning_authority(authority):
            return f"XON.6 required with a non-OID XON.10: {problem}"
    return None


def xtn(value: str) -> str | None:
    """authorTelecommunication (ITI TF-3 §4.2.3.1.4): an XTN whose XTN.3 (equipment type) is
    given; ``Internet`` needs XTN.4 (address), other types a number (XTN.1, XTN.7 or XTN.12)."""
    if not _is_text(value) or not value.strip():
        return "XTN is empty"
    parts = value.split("^")
    if len(parts) > 18:
        return "XTN has more than 18 components"
    parts += [""] * (12 - len(parts))
    equipment = parts[2]
    if not equipment:
        return "XTN.3 (telecommunication equipment type) is empty"
    if equipment == "Internet":
        if "@" not in parts[3] and not parts[3].startswith(("http", "mailto:")):
            return "XTN.4 (communication address) required for Internet"
        return None
    if not (parts[0] or parts[6] or parts[11]):
        return "XTN needs a number (XTN.1, XTN.7 or XTN.12)"
    return None


def dtm(value: str) -> str | None:
    """ITI TF-3 §4.2.3.1.5: YYYY[MM[DD[hh[mm[ss]]]]] in UTC, each field in range."""
    return dtm_problem(value)


def sha1_hash(value: str) -> str | None:
    """hash (ITI TF-3 §4.2.3.2.11): 40 hexadecimal digits (upper case accepted)."""
    if not _is_text(value) or not _SHA1.match(value):
        return "hash must be 40 hexadecimal digits (SHA-1)"
    return None


def size(value: str) -> str | None:
    """size (ITI TF-3 §4.2.3.2.23): a non-negative integer (in bytes)."""
    if not _is_text(value) or not _SIZE.match(value):
        return "size must be a non-negative integer"
    if int(value) > SIZE_MAX:
        return "size out of range"
    return None


def uri(value: str) -> str | None:
    """URI (ITI TF-3 §4.2.3.2.27): an absolute RFC 3986 URI without spaces."""
    if not _is_text(value) or not _URI.match(value):
        return "URI must be an absolute URI (scheme:...) without spaces"
    return None


def language_code(value: str) -> str | None:
    """languageCode (ITI TF-3 §4.2.3.2.14): an RFC 5646 tag (common forms, e.g. en-US, fr-FR)."""
    if not _is_text(value) or not _LANGUAGE.match(value) or len(value) > 35:
        return "languageCode must be an RFC 5646 language tag"
    return None


def mime_type(value: str) -> str | None:
    """mimeType (ITI TF-3 §4.2.3.2.15): type/subtype per RFC 6838, parameters allowed."""
    if not _is_text(value) or not _MIME.match(value):
        return "mimeType must be type/subtype (RFC 6838)"
    return None
