"""HL7 v3 (Edition 2008, Patient Administration) ⇄ the PIX model — sans-I/O (DESIGN.md §1).

The messages of PIXV3 (ITI TF-2b §3.44, §3.45, §3.46) and their acknowledgement:

- PRPA_IN201301UV02 (add), PRPA_IN201302UV02 (revise), PRPA_IN201304UV02 (merge) → `FeedMessage`
  (a `PatientRecord`, plus the subsumed identifier of a merge: replacementOf/priorRegistration/
  subject1/priorRegisteredRole/id, ITI TF-2b §3.44.4.2.2);
- PRPA_IN201309UV02 (Get Corresponding Identifiers query) → `PixQuery` (parameterList/
  patientIdentifier/value, the dataSource/value roots: the domains wanted, ITI TF-2b §3.45.4.1.2);
- `build_ack` → MCCI_IN000002UV01 (ITI TF-2b §3.44.4.1.4 / §3.44.4.2.4, ITI TF-2x Appendix O);
- `build_query_response` → PRPA_IN201310UV02 (ITI TF-2b §3.45.4.2);
- `build_update_notification` → PRPA_IN201302UV02 as ITI-46 sends it (ITI TF-2b §3.46.4.1.2).

An II is an identifier: `root` the assigning authority OID (CX.4.2), `extension` the value (CX.1);
an II with a nullFlavor, or without root or extension, identifies no patient in a domain and is
skipped (the IPF "maximal" feed carries one without root; IHE expects it accepted).

Identity reliability (the INS is carried only for a qualified identity, DESIGN.md §4). Neither
IHE nor the French CI-SIS defines an HL7 v3 element for it (the CI-SIS profiles the HL7 v2 PAM
PID-32 and FHIR fr-core's identityReliability extension, not PIXV3). Carnet's documented
convention, within PRPA_MT201301UV02/201302UV02 (schema-valid):

    <patient> … <subjectOf typeCode="SBJ">
      <administrativeObservation classCode="VERIF">
        <code code="PID-32" codeSystem="2.16.840.1.113883.12.445"/>
        <value xsi:type="CE" code="VALI" codeSystem="2.16.840.1.113883.12.445"/>
      </administrativeObservation></subjectOf>

i.e. the HL7 v2 table 0445 Identity Reliability Code (OID 2.16.840.1.113883.12.445) with the
French PAM values (VALI qualified, PROV, VIDE, DOUTE, FICTI). Any administrativeObservation whose
value is in that code system (or whose code is `PID-32`) is read; the codes go to
`PatientRecord.identity_reliability`, as PID-32's do.

Acknowledgement detail codes are HL7 table 0357 (codeSystem 2.16.840.1.113883.12.357), as ITI TF-2b
§3.45.4.2.3 prescribes for ITI-45 (204 Unknown Key Identifier) — the same codes as `PixError.hl7_code`.
"""

from __future__ import annotations

import uuid
from typing import Iterable, Sequence

import attrs
from lxml import etree

from pix.xref import Demographics, Identifier, PatientRecord, PixError
from soap.xmlparse import XmlInputError, parse_xml

NS = "urn:hl7-org:v3"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_H = "{%s}" % NS

INTERACTION_ROOT = "2.16.840.1.113883.1.6"  # HL7 interaction / trigger event ids
TABLE_0357 = "2.16.840.1.113883.12.357"  # HL7 v2 table 0357 Message Error Condition Codes
TABLE_0445 = "2.16.840.1.113883.12.445"  # HL7 v2 table 0445 Identity Reliability Code
RELIABILITY_CODE = "PID-32"

ADD = "PRPA_IN201301UV02"
REVISE = "PRPA_IN201302UV02"
MERGE = "PRPA_IN201304UV02"
QUERY = "PRPA_IN201309UV02"
QUERY_RESPONSE = "PRPA_IN201310UV02"
ACK = "MCCI_IN000002UV01"
FEED_INTERACTIONS = (ADD, REVISE, MERGE)

# Acknowledgement.typeCode (HL7 v3 AcknowledgementType): AA accept, AE error in the message's
# content, AR reject for a reason unrelated to the content ("e.g. database unavailable").
AA, AE, AR = "AA", "AE", "AR"
# QueryAck.queryResponseCode (HL7 v3 QueryResponse): OK data found, NF nothing found,
# AE application error, QE query parameter error.
OK, NF, QE = "OK", "NF", "QE"

# HL7 v2 table 0357 codes used here.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
UNKNOWN_KEY_IDENTIFIER = "204"
APPLICATION_INTERNAL_ERROR = "207"

# HL7 v3 AdministrativeGender (2.16.840.1.113883.5.1) → HL7 v2 table 0001.
_SEX_FROM_V3 = {"M": "M", "F": "F", "UN": "U"}
_SEX_TO_V3 = {"M": "M", "F": "F", "U": "UN"}


def h(tag: str) -> str:
    return _H + tag


# --- errors and model ---------------------------------------------------------------------------


class Hl7v3MessageError(PixError):
    """The message is not a usable PIXV3 message (an element missing, too many patients, ...).
    `location` is an XPath into the request (ITI TF-2b §3.45.4.2.3 style)."""

    hl7_code = REQUIRED_FIELD_MISSING


class WrongInteraction(Exception):
    """The SOAP Body holds another message than the wsa:Action announces (a SOAP Sender fault)."""


@attrs.frozen
class II:
    root: str = ""
    extension: str = ""
    null_flavor: str = ""

    def element(self, tag: str = "id") -> etree._Element:
        el = etree.Element(h(tag))
        if self.null_flavor or not self.root:
            el.set("nullFlavor", self.null_flavor or "UNK")
            return el
        el.set("root", self.root)
        if self.extension:
            el.set("extension", self.extension)
        return el


@attrs.frozen
class MessageHeader:
    """The transmission wrapper facts an answer echoes (MCCI_MT000100UV01.Message)."""

    interaction: str  # the root element's local name
    message_id: II = II()
    interaction_id: str = ""
    processing_code: str = "P"
    processing_mode_code: str = "T"
    accept_ack_code: str = ""
    sender_device: II = II()
    receiver_device: II = II()


@attrs.frozen
class FeedMessage:
    """An ITI-44 message: add / revise (record only) or merge (record + subsumed)."""

    header: MessageHeader
    record: PatientRecord
    subsumed: Identifier | None = None

    @property
    def interaction(self) -> str:
        return self.header.interaction


@attrs.frozen(eq=False)
class PixQuery:
    """An ITI-45 query: one patient identifier, the domains wanted (dataSource, may be empty)."""

    header: MessageHeader
    patient_identifier: Identifier
    data_sources: tuple[str, ...]
    query_id: II
    query_by_parameter: etree._Element  # echoed in the response (ITI TF-2b §3.45.4.2.2)


@attrs.frozen
class AckDetail:
    """One acknowledgementDetail: table 0357 code, text, XPath location; typeCode E/W/I."""

    code: str
    text: str
    location: str = ""
    type_code: str = "E"


@attrs.frozen
class Responder:
    """Who answers and how ids and times are made (injected: deterministic in tests)."""

    device_id: str  # the PIX Manager's device OID (sender of answers and notifications)
    now: object = None  # () -> HL7 TS "YYYYMMDDHHMMSS"; None: UTC now
    new_id: object = None  # () -> message id root (UUID); None: uuid4

    def timestamp(self) -> str:
        if self.now is not None:
            return self.now()
        from registry.timefmt import now_dtm

        return now_dtm()

    def message_id(self) -> II:
        return II(self.new_id() if self.new_id is not None else str(uuid.uuid4()))


# --- parsing ------------------------------------------------------------------------------------

_REQUEST_PATH = {
    "subject": "/{i}/controlActProcess/subject",
    "patient": "/{i}/controlActProcess/subject/registrationEvent/subject1/patient",
    "patient_id": "/{i}/controlActProcess/subject/registrationEvent/subject1/patient/id",
    "prior": "/{i}/controlActProcess/subject/registrationEvent/replacementOf/priorRegistration"
    "/subject1/priorRegisteredRole/id",
    "qbp": "/{i}/controlActProcess/queryByParameter",
    "patient_identifier": "/{i}/controlActProcess/queryByParameter/parameterList/patientIdentifier/value",
    "data_source": "/{i}/controlActProcess/queryByParameter/parameterList/dataSource[{n}]/value",
}


def location(name: str, interaction: str, n: int = 1) -> str:
    """An XPath (namespace prefixes left out) into the request, for acknowledgementDetail/location."""
    return _REQUEST_PATH[name].format(i=interaction, n=n)


def parse_message(data: bytes) -> etree._Element:
    """Bytes → root element through the hardened parser (DESIGN.md §3 rule 5); raises
    Hl7v3MessageError when the bytes are not XML."""
    try:
        return parse_xml(data)
    except XmlInputError as exc:
        raise Hl7v3MessageError(f"not an XML document: {exc}", hl7_code=SEGMENT_SEQUENCE_ERROR) from None


def interaction_of(root: etree._Element) -> str:
    q = etree.QName(root)
    return q.localname if q.namespace == NS else ""


def _child(el: etree._Element | None, *path: str) -> etree._Element | None:
    for tag in path:
        if el is None:
            return None
        el = el.find(h(tag))
    return el


def _children(el: etree._Element | None, tag: str) -> list[etree._Element]:
    return [] if el is None else el.findall(h(tag))


def _attr(el: etree._Element | None, name: str) -> str:
    return "" if el is None else (el.get(name) or "").strip()


def _ii(el: etree._Element | None) -> II:
    if el is None:
        return II(null_flavor="UNK")
    return II(_attr(el, "root"), _attr(el, "extension"), _attr(el, "nullFlavor"))


def _device_id(root: etree._Element, role: str) -> II:
    return _ii(_child(root, role, "device", "id"))


def parse_header(root: etree._Element) -> MessageHeader:
    """The transmission wrapper; never raises (an answer needs whatever could be read)."""
    return MessageHeader(
        interaction=interaction_of(root),
        message_id=_ii(root.find(h("id"))),
        interaction_id=_attr(root.find(h("interactionId")), "extension"),
        processing_code=_attr(root.find(h("processingCode")), "code") or "P",
        processing_mode_code=_attr(root.find(h("processingModeCode")), "code") or "T",
        accept_ack_code=_attr(root.find(h("acceptAckCode")), "code"),
        sender_device=_device_id(root, "sender"),
        receiver_device=_device_id(root, "receiver"),
    )


def identifier_of(el: etree._Element) -> Identifier | None:
    """II → Identifier (root = authority OID, extension = value); None when it names no
    identifier of a domain (nullFlavor, no root, no extension)."""
    ii = _ii(el)
    if ii.null_flavor or not ii.root or not ii.extension:
        return None
    return Identifier(value=ii.extension, authority=ii.root, namespace=_attr(el, "assigningAuthorityName"))


def _check_header(root: etree._Element, interaction: str) -> MessageHeader:
    header = parse_header(root)
    if root.find(h("id")) is None:
        raise Hl7v3MessageError("the message has no id", location=f"/{interaction}/id")
    if root.find(h("controlActProcess")) is None:
        raise Hl7v3MessageError("the message has no controlActProcess", location=f"/{interaction}/controlActProcess")
    return header


def _name(person: etree._Element) -> tuple[str, tuple[str, ...], dict[str, str]]:
    names = _children(person, "name")
    if not names:
        return "", (), {}
    # the legal name (use="L") when there is one, else the first (ITI TF-2b §3.44.4.1.2)
    name = next((n for n in names if "L" in (n.get("use") or "").split()), names[0])
    family = next((t.text.strip() for t in _children(name, "family") if t.text and t.text.strip()), "")
    given = tuple(t.text.strip() for t in _children(name, "given") if t.text and t.text.strip())
    extra: dict[str, str] = {}
    if not family and not given and (name.text or "").strip():
        extra["name"] = name.text.strip()  # an unstructured name ("Unknown")
    return family, given, extra


def _reliability(patient: etree._Element) -> tuple[str, ...]:
    """The identity reliability codes (Carnet's convention, see the module docstring)."""
    codes = []
    for subject in _children(patient, "subjectOf"):
        obs = _child(subject, "administrativeObservation")
        if obs is None:
            continue
        code, value = _child(obs, "code"), _child(obs, "value")
        if value is None or not _attr(value, "code"):
            continue
        if _attr(value, "codeSystem") == TABLE_0445 or _attr(code, "code") == RELIABILITY_CODE:
            codes.append(_attr(value, "code").upper())
    return tuple(codes)


def _demographics(person: etree._Element | None) -> Demographics:
    if person is None:
        return Demographics()
    family, given, extra = _name(person)
    sex = _SEX_FROM_V3.get(_attr(person.find(h("administrativeGenderCode")), "code").upper(), "")
    if not sex and _attr(person.find(h("administrativeGenderCode")), "code"):
        sex = "U"
    birth_place = ""
    place = _child(person, "birthPlace", "birthplace")
    if place is not None:
        # INSEE commune code: birthplace/addr/county (CI-SIS CDA usage), else the place's id
        county = _child(place, "addr", "county")
        birth_place = (county.text or "").strip() if county is not None and county.text else ""
        if not birth_place:
            birth_place = _attr(place.find(h("id")), "extension")
        place_name = _child(place, "name")
        if place_name is not None and (place_name.text or "").strip():
            extra["birth_place_name"] = place_name.text.strip()
    return Demographics(
        family_name=family,
        given_names=given,
        birth_date=_attr(person.find(h("birthTime")), "value"),
        sex=sex,
        birth_place=birth_place,
        extra=extra,
    )


def parse_feed(root: etree._Element, expected: str | None = None) -> FeedMessage:
    """PRPA_IN201301UV02 / 201302UV02 / 201304UV02 → FeedMessage (ITI TF-2b §3.44.4.1.2,
    §3.44.4.2.2). Raises WrongInteraction (another message) or Hl7v3MessageError."""
    interaction = interaction_of(root)
    if interaction not in FEED_INTERACTIONS or (expected and interaction != expected):
        raise WrongInteraction(f"expected {expected or ' / '.join(FEED_INTERACTIONS)}, got {root.tag}")
    header = _check_header(root, interaction)
    subjects = _children(root.find(h("controlActProcess")), "subject")
    if not subjects:
        raise Hl7v3MessageError("controlActProcess has no subject", location=location("subject", interaction))
    if len(subjects) > 1:
        # ITI TF-2b §3.44.4.1.2: the message carries one registrationEvent, one patient
        raise Hl7v3MessageError(
            f"controlActProcess has {len(subjects)} subjects; one patient per message",
            location=location("subject", interaction),
            hl7_code=SEGMENT_SEQUENCE_ERROR,
        )
    event = _child(subjects[0], "registrationEvent")
    patient = _child(event, "subject1", "patient")
    if patient is None:
        raise Hl7v3MessageError("registrationEvent has no subject1/patient", location=location("patient", interaction))
    person = _child(patient, "patientPerson")
    identifiers = [i for el in _children(patient, "id") if (i := identifier_of(el)) is not None]
    if not identifiers:
        raise Hl7v3MessageError(
            "the patient has no id with both root (assigning authority) and extension",
            location=location("patient_id", interaction),
        )
    if person is not None:
        for other in _children(person, "asOtherIDs"):
            identifiers += [i for el in _children(other, "id") if (i := identifier_of(el)) is not None]
    record = PatientRecord(tuple(identifiers), _demographics(person), _reliability(patient))
    subsumed = None
    if interaction == MERGE:
        roles = [
            _child(r, "priorRegistration", "subject1", "priorRegisteredRole")
            for r in _children(event, "replacementOf")
        ]
        prior = [i for r in roles if r is not None for el in _children(r, "id") if (i := identifier_of(el)) is not None]
        if len(prior) != 1:
            raise Hl7v3MessageError(
                f"a merge names exactly one subsumed patient id (priorRegisteredRole/id), found {len(prior)}",
                location=location("prior", interaction),
            )
        subsumed = prior[0]
    return FeedMessage(header, record, subsumed)


def parse_query(root: etree._Element) -> PixQuery:
    """PRPA_IN201309UV02 → PixQuery (ITI TF-2b §3.45.4.1.2). Raises WrongInteraction or
    Hl7v3MessageError."""
    interaction = interaction_of(root)
    if interaction != QUERY:
        raise WrongInteraction(f"expected {QUERY}, got {root.tag}")
    header = _check_header(root, interaction)
    qbp = _child(root, "controlActProcess", "queryByParameter")
    if qbp is None:
        raise Hl7v3MessageError("controlActProcess has no queryByParameter", location=location("qbp", interaction))
    params = _child(qbp, "parameterList")
    values = [v for p in _children(params, "patientIdentifier") for v in _children(p, "value")]
    if len(values) != 1:
        # ITI TF-2b §3.45.4.1.2: exactly one PatientIdentifier parameter with one value
        raise Hl7v3MessageError(
            f"one patientIdentifier/value expected, found {len(values)}",
            location=location("patient_identifier", interaction),
        )
    ii = _ii(values[0])
    if not ii.root or not ii.extension or ii.null_flavor:
        raise Hl7v3MessageError(
            "patientIdentifier/value needs root (assigning authority) and extension",
            location=location("patient_identifier", interaction),
        )
    patient = Identifier(value=ii.extension, authority=ii.root, namespace=_attr(values[0], "assigningAuthorityName"))
    sources = []
    for n, source in enumerate(_children(params, "dataSource"), start=1):
        for value in _children(source, "value"):
            root_oid = _attr(value, "root")
            if not root_oid:
                raise Hl7v3MessageError(
                    "dataSource/value without root", location=location("data_source", interaction, n)
                )
            sources.append(root_oid)
    return PixQuery(header, patient, tuple(sources), _ii(qbp.find(h("queryId"))), qbp)


def data_source_positions(query: PixQuery) -> dict[str, int]:
    """Each dataSource root → the (1-based) position of its dataSource parameter."""
    params = _child(query.query_by_parameter, "parameterList")
    out: dict[str, int] = {}
    for n, source in enumerate(_children(params, "dataSource"), start=1):
        for value in _children(source, "value"):
            out.setdefault(_attr(value, "root"), n)
    return out


# --- building -----------------------------------------------------------------------------------


def _el(parent: etree._Element | None, tag: str, **attrs_: str) -> etree._Element:
    if parent is None:
        return etree.Element(h(tag), nsmap={None: NS}, **attrs_)
    return etree.SubElement(parent, h(tag), **attrs_)


def _append_ii(parent: etree._Element, ii: II, tag: str = "id") -> None:
    parent.append(ii.element(tag))


def _device(parent: etree._Element, role: str, device: II) -> None:
    node = _el(parent, role, typeCode="RCV" if role == "receiver" else "SND")
    dev = _el(node, "device", classCode="DEV", determinerCode="INSTANCE")
    _append_ii(dev, device)


def _wrapper(
    interaction: str,
    responder: Responder,
    *,
    receiver: II,
    processing_code: str = "P",
    processing_mode_code: str = "T",
    accept_ack_code: str = "NE",
) -> etree._Element:
    """MCCI_MT000100UV01/000300UV01 transmission wrapper up to the sender (ITI TF-2x Appendix O)."""
    root = _el(None, interaction, ITSVersion="XML_1.0")
    _append_ii(root, responder.message_id())
    _el(root, "creationTime", value=responder.timestamp())
    _el(root, "interactionId", root=INTERACTION_ROOT, extension=interaction)
    _el(root, "processingCode", code=processing_code)
    _el(root, "processingModeCode", code=processing_mode_code)
    _el(root, "acceptAckCode", code=accept_ack_code)
    _device(root, "receiver", receiver)
    _device(root, "sender", II(responder.device_id))
    return root


def _acknowledgement(root: etree._Element, type_code: str, target: II, details: Sequence[AckDetail]) -> None:
    ack = _el(root, "acknowledgement")
    _el(ack, "typeCode", code=type_code)
    target_el = _el(ack, "targetMessage")
    _append_ii(target_el, target)
    for detail in details:
        node = _el(ack, "acknowledgementDetail", typeCode=detail.type_code)
        _el(node, "code", code=detail.code, codeSystem=TABLE_0357)
        text = _el(node, "text")
        text.text = detail.text
        if detail.location:
            _el(node, "location").text = detail.location


def build_ack(request: MessageHeader, type_code: str, details: Sequence[AckDetail], responder: Responder) -> etree._Element:
    """MCCI_IN000002UV01 answering an ITI-44 message (or an ITI-46 notification): typeCode
    AA / AE / AR, targetMessage id = the request's id, one acknowledgementDetail per problem."""
    root = _wrapper(
        ACK,
        responder,
        receiver=request.sender_device,
        processing_code=request.processing_code,
        processing_mode_code=request.processing_mode_code,
    )
    _acknowledgement(root, type_code, request.message_id, details)
    return root


def _other_ids(person: etree._Element, authority: str, ids: Sequence[Identifier]) -> None:
    other = _el(person, "asOtherIDs", classCode="PAT")
    for identifier in ids:
        _el(other, "id", root=identifier.authority, extension=identifier.value)
    org = _el(other, "scopingOrganization", classCode="ORG", determinerCode="INSTANCE")
    _el(org, "id", root=authority)


def _by_authority(identifiers: Iterable[Identifier]) -> dict[str, list[Identifier]]:
    out: dict[str, list[Identifier]] = {}
    for identifier in identifiers:
        out.setdefault(identifier.authority, []).append(identifier)
    return out


def build_query_response(
    query: PixQuery | None,
    request: MessageHeader,
    *,
    type_code: str,
    query_response_code: str,
    identifiers: Sequence[Identifier] = (),
    details: Sequence[AckDetail] = (),
    responder: Responder,
) -> etree._Element:
    """PRPA_IN201310UV02 (ITI TF-2b §3.45.4.2): acknowledgement AA/AE/AR with its details,
    one registrationEvent when `identifiers` (OK), queryAck with `query_response_code`, and the
    query's queryByParameter echoed. The identifiers of the first domain go in Patient.id, those
    of each other domain in one asOtherIDs (§3.45.4.2.3 allows either; one OtherIDs per domain)."""
    root = _wrapper(
        QUERY_RESPONSE,
        responder,
        receiver=request.sender_device,
        processing_code=request.processing_code,
        processing_mode_code=request.processing_mode_code,
    )
    _acknowledgement(root, type_code, request.message_id, details)
    cap = _el(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    _el(cap, "code", code="PRPA_TE201310UV02", codeSystem=INTERACTION_ROOT)
    if identifiers:
        groups = _by_authority(identifiers)
        first, *others = groups
        subject = _el(cap, "subject", typeCode="SUBJ")
        event = _el(subject, "registrationEvent", classCode="REG", moodCode="EVN")
        _el(event, "id", nullFlavor="NA")
        _el(event, "statusCode", code="active")
        patient = _el(_el(event, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
        for identifier in groups[first]:
            _el(patient, "id", root=identifier.authority, extension=identifier.value)
        _el(patient, "statusCode", code="active")
        person = _el(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
        _el(person, "name", nullFlavor="NA")  # §3.45.4.2.2: no demographics in the response
        for authority in others:
            _other_ids(person, authority, groups[authority])
        custodian = _el(event, "custodian", typeCode="CST")
        entity = _el(custodian, "assignedEntity", classCode="ASSIGNED")
        _el(entity, "id", root=responder.device_id)
    query_ack = _el(cap, "queryAck")
    if query is not None:
        _append_ii(query_ack, query.query_id, "queryId")
    _el(query_ack, "queryResponseCode", code=query_response_code)
    if query is not None:
        cap.append(_copy(query.query_by_parameter))
    return root


def build_update_notification(
    identifiers: Sequence[Identifier], responder: Responder, *, receiver_device: str = ""
) -> etree._Element:
    """PRPA_IN201302UV02 of ITI-46 (ITI TF-2b §3.46.4.1.2): the cross-referenced identifiers of
    one patient in the consumer's domains of interest, all in Patient.id, and no demographics
    (Person.name nullFlavor NA)."""
    root = _wrapper(
        REVISE,
        responder,
        receiver=II(receiver_device) if receiver_device else II(null_flavor="UNK"),
        accept_ack_code="AL",
    )
    cap = _el(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    _el(cap, "code", code="PRPA_TE201302UV02", codeSystem=INTERACTION_ROOT)
    subject = _el(cap, "subject", typeCode="SUBJ")
    event = _el(subject, "registrationEvent", classCode="REG", moodCode="EVN")
    _el(event, "id", nullFlavor="NA")
    _el(event, "statusCode", code="active")
    patient = _el(_el(event, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
    for identifier in identifiers:
        _el(patient, "id", root=identifier.authority, extension=identifier.value)
    _el(patient, "statusCode", code="active")
    person = _el(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    _el(person, "name", nullFlavor="NA")
    custodian = _el(event, "custodian", typeCode="CST")
    entity = _el(custodian, "assignedEntity", classCode="ASSIGNED")
    _el(entity, "id", root=responder.device_id)
    return root


def build_feed(
    interaction: str,
    record: PatientRecord,
    responder: Responder,
    *,
    subsumed: Identifier | None = None,
    receiver_device: str = "",
) -> etree._Element:
    """A PRPA_IN201301/201302/201304UV02 of ITI-44 from a PatientRecord (for tests and tools;
    writes the identity reliability with Carnet's convention, see the module docstring)."""
    root = _wrapper(
        interaction,
        responder,
        receiver=II(receiver_device) if receiver_device else II(null_flavor="UNK"),
        accept_ack_code="AL",
    )
    cap = _el(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    _el(cap, "code", code="PRPA_TE" + interaction[7:], codeSystem=INTERACTION_ROOT)
    subject = _el(cap, "subject", typeCode="SUBJ")
    event = _el(subject, "registrationEvent", classCode="REG", moodCode="EVN")
    _el(event, "id", nullFlavor="NA")
    _el(event, "statusCode", code="active")
    patient = _el(_el(event, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
    first, *others = record.identifiers
    _el(patient, "id", root=first.authority, extension=first.value)
    _el(patient, "statusCode", code="active")
    person = _el(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    d = record.demographics
    name = _el(person, "name")
    for given in d.given_names:
        _el(name, "given").text = given
    if d.family_name:
        _el(name, "family").text = d.family_name
    if d.sex:
        _el(person, "administrativeGenderCode", code=_SEX_TO_V3.get(d.sex, "UN"))
    if d.birth_date:
        _el(person, "birthTime", value=d.birth_date)
    for authority, ids in _by_authority(others).items():
        _other_ids(person, authority, ids)
    if d.birth_place:
        place = _el(_el(person, "birthPlace", classCode="BIRTHPL"), "birthplace", classCode="CITY",
                    determinerCode="INSTANCE")
        _el(_el(place, "addr"), "county").text = d.birth_place
    org = _el(patient, "providerOrganization", classCode="ORG", determinerCode="INSTANCE")
    _el(org, "id", root=first.authority)
    _el(org, "contactParty", classCode="CON")
    for code in record.identity_reliability:
        subject_of = _el(patient, "subjectOf", typeCode="SBJ")
        obs = _el(subject_of, "administrativeObservation", classCode="VERIF")
        _el(obs, "code", code=RELIABILITY_CODE, codeSystem=TABLE_0445)
        value = _el(obs, "value", code=code, codeSystem=TABLE_0445)
        value.set(f"{{{NS_XSI}}}type", "CE")
    custodian = _el(event, "custodian", typeCode="CST")
    entity = _el(custodian, "assignedEntity", classCode="ASSIGNED")
    _el(entity, "id", root=first.authority)
    if subsumed is not None:
        prior = _el(_el(event, "replacementOf", typeCode="RPLC"), "priorRegistration", classCode="REG", moodCode="EVN")
        _el(prior, "statusCode", code="obsolete")
        role = _el(_el(prior, "subject1", typeCode="SBJ"), "priorRegisteredRole", classCode="PAT")
        _el(role, "id", root=subsumed.authority, extension=subsumed.value)
    return root


def build_query(patient: Identifier, responder: Responder, *, data_sources: Sequence[str] = ()) -> etree._Element:
    """A PRPA_IN201309UV02 (for tests and tools)."""
    root = _wrapper(QUERY, responder, receiver=II(null_flavor="UNK"), accept_ack_code="AL")
    cap = _el(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    _el(cap, "code", code="PRPA_TE201309UV02", codeSystem=INTERACTION_ROOT)
    qbp = _el(cap, "queryByParameter")
    _append_ii(qbp, responder.message_id(), "queryId")
    _el(qbp, "statusCode", code="new")
    _el(qbp, "responsePriorityCode", code="I")
    params = _el(qbp, "parameterList")
    for source in data_sources:
        ds = _el(params, "dataSource")
        _el(ds, "value", root=source)
        _el(ds, "semanticsText").text = "DataSource.id"
    pid = _el(params, "patientIdentifier")
    _el(pid, "value", root=patient.authority, extension=patient.value)
    _el(pid, "semanticsText").text = "Patient.Id"
    return root


def _copy(el: etree._Element) -> etree._Element:
    """A detached copy (namespace-clean) of an element of the request."""
    import copy

    return copy.deepcopy(el)


# --- reading answers (the ITI-46 client, tests) -------------------------------------------------


@attrs.frozen
class AckSummary:
    type_code: str
    target_message: II
    details: tuple[AckDetail, ...]
    query_response_code: str = ""
    identifiers: tuple[Identifier, ...] = ()


def read_ack(root: etree._Element) -> AckSummary:
    """MCCI_IN000002UV01 or PRPA_IN201310UV02 → its acknowledgement, queryAck and identifiers."""
    ack = root.find(h("acknowledgement"))
    details = tuple(
        AckDetail(
            code=_attr(d.find(h("code")), "code"),
            text=(d.findtext(h("text")) or "").strip(),
            location=(d.findtext(h("location")) or "").strip(),
            type_code=_attr(d, "typeCode"),
        )
        for d in _children(ack, "acknowledgementDetail")
    )
    patient = _child(root, "controlActProcess", "subject", "registrationEvent", "subject1", "patient")
    ids: list[Identifier] = []
    if patient is not None:
        ids += [i for el in _children(patient, "id") if (i := identifier_of(el)) is not None]
        for other in _children(_child(patient, "patientPerson"), "asOtherIDs"):
            ids += [i for el in _children(other, "id") if (i := identifier_of(el)) is not None]
    return AckSummary(
        type_code=_attr(_child(ack, "typeCode"), "code"),
        target_message=_ii(_child(ack, "targetMessage", "id")),
        details=details,
        query_response_code=_attr(_child(root, "controlActProcess", "queryAck", "queryResponseCode"), "code"),
        identifiers=tuple(ids),
    )
