"""Wire messages for the benchmarks: ITI-42 Register Document Set-b and ITI-18 FindDocuments.

Everything is built with lxml from the registry constants. The load generator needs thousands
of distinct ITI-42 requests per second, so `Iti42Factory` builds the message once with lxml,
with sentinel values where the per-request identifiers go, and then only joins the serialized
pieces with fresh identifiers (OIDs and urn:uuids, which need no XML escaping).
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

from lxml import etree

from registry import constants as C

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://www.w3.org/2005/08/addressing"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
SOAP12_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"

# An assigning authority of the IHE test OID arc, so bench patients never look like real INS.
BENCH_AUTHORITY = "1.3.6.1.4.1.21367.13.20.3000"
BENCH_REPOSITORY = "1.3.6.1.4.1.21367.13.20.3001"
BENCH_SOURCE_ID = "1.3.6.1.4.1.21367.13.20.3002"
BENCH_HOME = "urn:oid:1.3.6.1.4.1.21367.13.20.3003"

R = "{%s}" % C.NS_RIM

# Realistic French (ANS CI-SIS / DMP) and international code values: (code, codingScheme, displayName).
CLASS_CODES = (
    ("10", "1.2.250.1.213.1.1.4.1", "Compte rendu"),
    ("11", "1.2.250.1.213.1.1.4.1", "Synthèse"),
    ("13", "1.2.250.1.213.1.1.4.1", "Traitement, soin"),
    ("51", "1.2.250.1.213.1.1.4.1", "Imagerie médicale"),
)
TYPE_CODES = (
    ("11490-0", "2.16.840.1.113883.6.1", "Lettre de sortie"),
    ("11488-4", "2.16.840.1.113883.6.1", "Note de consultation"),
    ("18748-4", "2.16.840.1.113883.6.1", "CR d'imagerie médicale"),
    ("34133-9", "2.16.840.1.113883.6.1", "Synthèse d'épisode de soins"),
    ("57833-6", "2.16.840.1.113883.6.1", "Prescription de médicaments"),
)
CONFIDENTIALITY_CODES = (("N", "2.16.840.1.113883.5.25", "Normal"),)
FORMAT_CODES = (
    ("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "PDF/A-1 Scanned Documents"),
    ("urn:asip:ci-sis:2010", "1.2.250.1.213.1.1.4.2.282", "Document à corps non structuré"),
)
FACILITY_TYPE_CODES = (
    ("SA07", "1.2.250.1.71.4.2.4", "Cabinet individuel"),
    ("SA01", "1.2.250.1.71.4.2.4", "Etablissement public de santé"),
)
PRACTICE_SETTING_CODES = (
    ("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé"),
    ("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire"),
)
EVENT_CODES = (
    ("GLUC", "1.2.250.1.213.2.5", "Glucose"),
    ("I10", "2.16.840.1.113883.6.3", "Hypertension essentielle"),
)
CONTENT_TYPE_CODES = (("04", "1.2.250.1.213.1.1.4.4", "Hospitalisation de jour"),)


def new_oid() -> str:
    """A fresh uniqueId: an OID under 2.25 from a random UUID (ITU-T X.667), ≤ 64 chars."""
    return f"2.25.{uuid.uuid4().int}"


def new_urn_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bench_patient(n: int) -> str:
    """The CX of bench patient number n (ITI TF-3 §4.2.3.1.7: ID^^^&OID&ISO)."""
    return f"BENCH{n:07d}^^^&{BENCH_AUTHORITY}&ISO"


def dtm_now() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


# --- ebRIM building blocks ---------------------------------------------------------------------


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, R + "Slot", name=name)
    vl = etree.SubElement(slot, R + "ValueList")
    for v in values:
        etree.SubElement(vl, R + "Value").text = v


def _name(parent: etree._Element, text: str, tag: str = "Name") -> None:
    el = etree.SubElement(parent, R + tag)
    etree.SubElement(el, R + "LocalizedString", value=text)


def _code(parent, cl_id: str, obj_id: str, scheme: str, code: tuple[str, str, str]) -> None:
    # ITI TF-3 §4.2.3.1.2 coded values: nodeRepresentation + codingScheme slot + Name
    cl = etree.SubElement(
        parent,
        R + "Classification",
        id=cl_id,
        classificationScheme=scheme,
        classifiedObject=obj_id,
        nodeRepresentation=code[0],
    )
    _slot(cl, "codingScheme", code[1])
    _name(cl, code[2])


def _author(parent, cl_id: str, obj_id: str, scheme: str) -> None:
    # ITI TF-3 §4.2.3.1.4 author: nodeRepresentation is the empty string
    cl = etree.SubElement(
        parent,
        R + "Classification",
        id=cl_id,
        classificationScheme=scheme,
        classifiedObject=obj_id,
        nodeRepresentation="",
    )
    _slot(cl, "authorPerson", "801234567897^Martin^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS")
    _slot(
        cl,
        "authorInstitution",
        "Hôpital Bench^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1750000000",
    )
    _slot(cl, "authorRole", "10^Médecin^1.2.250.1.213.1.1.4.6")
    _slot(cl, "authorSpecialty", "SM26^Qualifié en médecine générale^1.2.250.1.71.4.2.5")


def _external_id(parent, ei_id: str, obj_id: str, scheme: str, value: str, name: str) -> None:
    ei = etree.SubElement(
        parent,
        R + "ExternalIdentifier",
        id=ei_id,
        registryObject=obj_id,
        identificationScheme=scheme,
        value=value,
    )
    _name(ei, name)


def _sub_id(obj_id: str, k: int) -> str:
    """Ids of the classifications/external identifiers of an object: symbolic in a submission
    (`Document01-cl1`), derived urn:uuids for stored objects (last 4 hex digits = k)."""
    if obj_id.startswith("urn:uuid:") and len(obj_id) == 45:
        return f"{obj_id[:-4]}{k:04x}"
    return f"{obj_id}-c{k}"


def document_entry(
    entry_id: str,
    patient_id: str,
    unique_id: str,
    *,
    creation_time: str = "20240115103000",
    codes: dict[str, tuple[str, str, str]] | None = None,
    status: str | None = None,
    title: str = "Compte rendu de consultation",
    hash_: str = "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    size: int = 48213,
) -> etree._Element:
    """A stable DocumentEntry with every attribute ITI TF-3 Table 4.2.3.2-1 requires of a
    Register Document Set-b from a repository (hash, size, repositoryUniqueId included)."""
    codes = codes or {}
    attrs = {"id": entry_id, "mimeType": "application/pdf", "objectType": C.DOC_ENTRY_STABLE}
    if status:
        attrs["status"] = status
        attrs["lid"] = entry_id
        attrs["home"] = BENCH_HOME
    eo = etree.Element(R + "ExtrinsicObject", attrs, nsmap={"rim": C.NS_RIM})
    _slot(eo, "creationTime", creation_time)
    _slot(eo, "hash", hash_)
    _slot(eo, "languageCode", "fr-FR")
    _slot(eo, "repositoryUniqueId", BENCH_REPOSITORY)
    _slot(eo, "serviceStartTime", creation_time[:12])
    _slot(eo, "serviceStopTime", creation_time[:12])
    _slot(eo, "size", str(size))
    _slot(eo, "sourcePatientId", patient_id)
    _slot(
        eo,
        "sourcePatientInfo",
        f"PID-3|{patient_id}",
        "PID-5|DUPONT^JEAN^^^^^L",
        "PID-7|19650412",
        "PID-8|M",
    )
    _name(eo, title)
    _author(eo, _sub_id(entry_id, 1), entry_id, C.DE_AUTHOR)
    k = 2
    for short, scheme, default in (
        ("classCode", C.DE_CLASS_CODE, CLASS_CODES[0]),
        ("confidentialityCode", C.DE_CONFIDENTIALITY_CODE, CONFIDENTIALITY_CODES[0]),
        ("eventCodeList", C.DE_EVENT_CODE, EVENT_CODES[0]),
        ("formatCode", C.DE_FORMAT_CODE, FORMAT_CODES[0]),
        ("healthcareFacilityTypeCode", C.DE_HEALTHCARE_FACILITY_TYPE_CODE, FACILITY_TYPE_CODES[0]),
        ("practiceSettingCode", C.DE_PRACTICE_SETTING_CODE, PRACTICE_SETTING_CODES[0]),
        ("typeCode", C.DE_TYPE_CODE, TYPE_CODES[0]),
    ):
        _code(eo, _sub_id(entry_id, k), entry_id, scheme, codes.get(short, default))
        k += 1
    _external_id(eo, _sub_id(entry_id, k), entry_id, C.DE_PATIENT_ID, patient_id, "XDSDocumentEntry.patientId")
    _external_id(eo, _sub_id(entry_id, k + 1), entry_id, C.DE_UNIQUE_ID, unique_id, "XDSDocumentEntry.uniqueId")
    return eo


def submission_set(ss_id: str, patient_id: str, unique_id: str, submission_time: str) -> etree._Element:
    """A SubmissionSet per ITI TF-3 §4.2.3.3 (submissionTime, author, contentTypeCode,
    patientId, sourceId, uniqueId, classified by the XDSSubmissionSet node)."""
    rp = etree.Element(R + "RegistryPackage", id=ss_id, nsmap={"rim": C.NS_RIM})
    _slot(rp, "submissionTime", submission_time)
    _name(rp, "Soumission bench")
    _author(rp, _sub_id(ss_id, 1), ss_id, C.SS_AUTHOR)
    _code(rp, _sub_id(ss_id, 2), ss_id, C.SS_CONTENT_TYPE_CODE, CONTENT_TYPE_CODES[0])
    etree.SubElement(
        rp,
        R + "Classification",
        id=_sub_id(ss_id, 3),
        classifiedObject=ss_id,
        classificationNode=C.SS_CLASSIFICATION_NODE,
    )
    _external_id(rp, _sub_id(ss_id, 4), ss_id, C.SS_UNIQUE_ID, unique_id, "XDSSubmissionSet.uniqueId")
    _external_id(rp, _sub_id(ss_id, 5), ss_id, C.SS_SOURCE_ID, BENCH_SOURCE_ID, "XDSSubmissionSet.sourceId")
    _external_id(rp, _sub_id(ss_id, 6), ss_id, C.SS_PATIENT_ID, patient_id, "XDSSubmissionSet.patientId")
    return rp


def has_member(assoc_id: str, source: str, target: str) -> etree._Element:
    """HasMember SubmissionSet → DocumentEntry, SubmissionSetStatus Original (ITI TF-3 §4.2.2.1.1)."""
    a = etree.Element(
        R + "Association",
        id=assoc_id,
        associationType=C.ASSOC_HAS_MEMBER,
        sourceObject=source,
        targetObject=target,
        nsmap={"rim": C.NS_RIM},
    )
    _slot(a, C.SLOT_SUBMISSION_SET_STATUS, "Original")
    return a


# --- SOAP -----------------------------------------------------------------------------------------


def soap_envelope(action: str, to: str, body: etree._Element, message_id: str) -> bytes:
    """SOAP 1.2 envelope with the WS-Addressing headers of ITI TF-2x Appendix V."""
    env = etree.Element(f"{{{NS_SOAP12}}}Envelope", nsmap={"s": NS_SOAP12, "a": NS_WSA})
    header = etree.SubElement(env, f"{{{NS_SOAP12}}}Header")
    must = {f"{{{NS_SOAP12}}}mustUnderstand": "1"}
    etree.SubElement(header, f"{{{NS_WSA}}}Action", must).text = action
    etree.SubElement(header, f"{{{NS_WSA}}}MessageID").text = message_id
    reply = etree.SubElement(header, f"{{{NS_WSA}}}ReplyTo")
    etree.SubElement(reply, f"{{{NS_WSA}}}Address").text = WSA_ANONYMOUS
    etree.SubElement(header, f"{{{NS_WSA}}}To", must).text = to
    etree.SubElement(env, f"{{{NS_SOAP12}}}Body").append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def submit_objects_request(
    patient_id: str, doc_unique_id: str, ss_unique_id: str, submission_time: str
) -> etree._Element:
    """lcm:SubmitObjectsRequest: one SubmissionSet, one stable DocumentEntry, one HasMember,
    all with symbolic ids (ITI TF-2b §3.42.4.1)."""
    req = etree.Element(
        f"{{{C.NS_LCM}}}SubmitObjectsRequest", nsmap={"lcm": C.NS_LCM, "rim": C.NS_RIM}
    )
    rol = etree.SubElement(req, R + "RegistryObjectList")
    rol.append(submission_set("SubmissionSet01", patient_id, ss_unique_id, submission_time))
    rol.append(document_entry("Document01", patient_id, doc_unique_id, creation_time=submission_time))
    rol.append(has_member("Association01", "SubmissionSet01", "Document01"))
    return req


def iti42_request(
    patient_id: str,
    to: str,
    *,
    doc_unique_id: str | None = None,
    ss_unique_id: str | None = None,
    message_id: str | None = None,
    submission_time: str | None = None,
) -> bytes:
    body = submit_objects_request(
        patient_id,
        doc_unique_id or new_oid(),
        ss_unique_id or new_oid(),
        submission_time or dtm_now(),
    )
    return soap_envelope(C.ACTION_ITI42, to, body, message_id or new_urn_uuid())


class Template:
    """Serialized XML with sentinel strings, re-filled by plain joins.

    The sentinels are our own markers placed by lxml builders; values go in through `xml_safe`
    (or are OIDs/urn:uuids, which need no escaping), so the output is what lxml would write.
    """

    def __init__(self, wire: bytes, sentinels: list[str]) -> None:
        self.parts: list[bytes | str] = []
        keys = sorted(sentinels, key=len, reverse=True)  # longest first at the same position
        rest = wire
        while True:
            best: tuple[int, str] | None = None
            for k in keys:
                pos = rest.find(k.encode())
                if pos >= 0 and (best is None or pos < best[0]):
                    best = (pos, k)
            if best is None:
                self.parts.append(rest)
                break
            pos, key = best
            self.parts.append(rest[:pos])
            self.parts.append(key)
            rest = rest[pos + len(key) :]
        self.sentinels = [p for p in self.parts if isinstance(p, str)]

    def render(self, values: dict[str, bytes]) -> bytes:
        return b"".join(values[p] if isinstance(p, str) else p for p in self.parts)


def xml_safe(value: str) -> bytes:
    """`value` escaped for a Template slot (text or double-quoted attribute), as lxml escapes it."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    ).encode()


_DOC_UID, _SS_UID, _MSG_ID = "@@DOCUID@@", "@@SSUID@@", "@@MSGID@@"


class Iti42Factory:
    """Fresh ITI-42 requests at template speed: built once with lxml, then only identifiers change."""

    def __init__(self, patient_id: str, to: str, submission_time: str | None = None) -> None:
        wire = iti42_request(
            patient_id,
            to,
            doc_unique_id=_DOC_UID,
            ss_unique_id=_SS_UID,
            message_id=_MSG_ID,
            submission_time=submission_time,
        )
        self.template = Template(wire, [_DOC_UID, _SS_UID, _MSG_ID])

    def __call__(self) -> bytes:
        return self.template.render(
            {_DOC_UID: new_oid().encode(), _SS_UID: new_oid().encode(), _MSG_ID: new_urn_uuid().encode()}
        )

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self()


def quote_sq(value: str) -> str:
    """A stored query string value, quoted with '' escaping (ITI TF-2a §3.18.4.1.2.3.5)."""
    return "'" + value.replace("'", "''") + "'"


def adhoc_query_request(query_id: str, slots: dict[str, list[str]], return_type: str = "LeafClass") -> etree._Element:
    req = etree.Element(f"{{{C.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    etree.SubElement(
        req, f"{{{C.NS_QUERY}}}ResponseOption", returnComposedObjects="true", returnType=return_type
    )
    q = etree.SubElement(req, R + "AdhocQuery", id=query_id)
    for name, values in slots.items():
        _slot(q, name, *values)
    return req


def find_documents_request(
    patient_id: str, to: str, *, return_type: str = "LeafClass", message_id: str | None = None
) -> bytes:
    """ITI-18 FindDocuments for one patient, Approved entries (ITI TF-2a §3.18.4.1.2.3.7.1)."""
    body = adhoc_query_request(
        C.SQ_FIND_DOCUMENTS,
        {
            "$XDSDocumentEntryPatientId": [quote_sq(patient_id)],
            "$XDSDocumentEntryStatus": [f"({quote_sq(C.STATUS_APPROVED)})"],
        },
        return_type,
    )
    return soap_envelope(C.ACTION_ITI18, to, body, message_id or new_urn_uuid())


# --- canned responses (the floor's answers) ------------------------------------------------------


def _response_envelope(action: str, relates_to: str, body: etree._Element) -> bytes:
    env = etree.Element(f"{{{NS_SOAP12}}}Envelope", nsmap={"s": NS_SOAP12, "a": NS_WSA})
    header = etree.SubElement(env, f"{{{NS_SOAP12}}}Header")
    etree.SubElement(header, f"{{{NS_WSA}}}Action", {f"{{{NS_SOAP12}}}mustUnderstand": "1"}).text = action
    etree.SubElement(header, f"{{{NS_WSA}}}RelatesTo").text = relates_to
    etree.SubElement(env, f"{{{NS_SOAP12}}}Body").append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def registry_response(relates_to: str) -> bytes:
    """ITI-42 success: rs:RegistryResponse status Success (ITI TF-2b §3.42.4.2)."""
    body = etree.Element(f"{{{C.NS_RS}}}RegistryResponse", status=C.RESPONSE_SUCCESS, nsmap={"rs": C.NS_RS})
    return _response_envelope(C.ACTION_ITI42_RESPONSE, relates_to, body)


def adhoc_query_response(relates_to: str, fragments: list[bytes]) -> bytes:
    """ITI-18 success carrying the given stored ebRIM fragments (LeafClass)."""
    body = etree.Element(
        f"{{{C.NS_QUERY}}}AdhocQueryResponse",
        status=C.RESPONSE_SUCCESS,
        nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM},
    )
    rol = etree.SubElement(body, R + "RegistryObjectList")
    for frag in fragments:
        rol.append(etree.fromstring(frag))
    return _response_envelope(C.ACTION_ITI18_RESPONSE, relates_to, body)
