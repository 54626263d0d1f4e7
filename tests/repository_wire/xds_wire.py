"""A small XDS.b Document Source / Consumer for wire tests: builds ITI-41 (inline base64 or MTOM),
ITI-43 and ITI-18 messages, sends them over HTTP with `http.client`, and reads the answers the
way a peer would (MTOM responses through `soap.mtom.parse_mtom`).

Import as `from repository_wire.xds_wire import ...` (tests/ is on the pythonpath).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import uuid
from typing import Iterable, Mapping, NamedTuple, Sequence
from urllib.parse import urlsplit

from lxml import etree

from registry import constants as C
from soap.envelope import parse_content_type
from soap.mtom import Attachment, build_mtom, parse_mtom
from support import need_shared, soap_envelope, xdsb_schema

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NS = {"rim": C.NS_RIM, "rs": C.NS_RS, "xdsb": C.NS_XDSB, "lcm": C.NS_LCM, "query": C.NS_QUERY,
      "env": NS_SOAP, "wsa": NS_WSA, "xop": NS_XOP}
RIM = f"{{{C.NS_RIM}}}"
XDSB = f"{{{C.NS_XDSB}}}"

ACTION_ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
ACTION_ITI43_RESPONSE = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"

REPO_UID = "1.2.250.1.999.43.1"  # the repositoryUniqueId of the Carnets these tests start
SELF5 = "SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
# A French INS (NIR, OID 1.2.250.1.213.1.4.10) as the DMP expects it (CI-SIS, XDS-FR).
INS = "1234567890123^^^&1.2.250.1.213.1.4.10&ISO"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def new_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


# --- HTTP ---------------------------------------------------------------------------------------


class HttpAnswer(NamedTuple):
    status: int
    content_type: str
    body: bytes


def post(url: str, body: bytes, content_type: str, *, timeout: float = 60) -> HttpAnswer:
    """POST `body` and read the whole answer (raises http.client.IncompleteRead / ConnectionError
    when the server aborts the response)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.getheader("Content-Type", ""), resp.read())
    finally:
        conn.close()


SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"


# --- reading answers ----------------------------------------------------------------------------


class SoapAnswer(NamedTuple):
    status: int
    envelope: etree._Element
    body: etree._Element  # first child of env:Body
    attachments: dict[str, bytes]  # MTOM parts by Content-ID (empty for a plain SOAP answer)
    mtom: bool


def read_soap(answer: HttpAnswer) -> SoapAnswer:
    mime, _ = parse_content_type(answer.content_type)
    if mime == "multipart/related":
        message = parse_mtom(answer.content_type, [answer.body])
        root, attachments, mtom = message.root, {c: a.data for c, a in message.attachments.items()}, True
    else:
        root, attachments, mtom = answer.body, {}, False
    envelope = etree.fromstring(root)
    body = next(c for c in envelope.find(f"{{{NS_SOAP}}}Body") if isinstance(c.tag, str))
    return SoapAnswer(answer.status, envelope, body, attachments, mtom)


def error_codes(element: etree._Element) -> list[str]:
    return [e.get("errorCode") for e in element.iter(f"{{{C.NS_RS}}}RegistryError")]


def inline_xop(element: etree._Element, attachments: Mapping[str, bytes]) -> etree._Element:
    """A copy of `element` with each xop:Include replaced by the base64 of its part: the XOP
    infoset (XOP 1.0 §3.2), which is what the schema describes (xs:base64Binary)."""
    out = copy.deepcopy(element)
    for include in list(out.iter(f"{{{NS_XOP}}}Include")):
        parent = include.getparent()
        parent.remove(include)
        parent.text = base64.b64encode(attachments[include.get("href")[4:]]).decode()
    return out


def assert_schema_valid(element: etree._Element, attachments: Mapping[str, bytes] | None = None) -> None:
    """`element` (a RegistryResponse or RetrieveDocumentSetResponse) validates against
    XDS.b_DocumentRepository.xsd (which imports ebRS 3.0). The schema types xdsb:Document as
    xs:base64Binary, so an xop:Include child is not schema-valid as such: the XOP infoset (each
    Include replaced by the base64 of its part) is what is validated."""
    schema = xdsb_schema()
    doc = inline_xop(element, attachments or {})
    assert schema.validate(doc), f"{etree.QName(doc).localname} is not schema-valid: {schema.error_log}"


# --- ITI-41 -------------------------------------------------------------------------------------


def _template() -> etree._Element:
    path = need_shared("samples", "iti41", "ihe__ProvideAndRegisterDocumentSet-bRequest.xml")
    return etree.parse(str(path)).getroot()


class Doc(NamedTuple):
    content: bytes
    unique_id: str
    mime_type: str = "text/xml"


def pnr(patient: str, docs: Sequence[Doc], *, inline: bool = True) -> etree._Element:
    """A ProvideAndRegisterDocumentSetRequest: IHE's example (ITI TF-2b §3.41 sample) with one
    DocumentEntry per `doc` (cloned from the example's, fresh ids and uniqueId), the SubmissionSet
    with a fresh uniqueId and a HasMember association per document, all for `patient`.
    `inline`: documents as base64 text; else empty xdsb:Document elements (for `as_mtom`)."""
    root = _template()
    ol = root.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    template_eo = ol.find("rim:ExtrinsicObject", NS)
    template_assoc = ol.find("rim:Association", NS)
    template_document = root.find("xdsb:Document", NS)
    for el in (template_eo, template_assoc):
        ol.remove(el)
    root.remove(template_document)
    for ei in ol.iterfind(".//rim:ExternalIdentifier", NS):
        if ei.get("identificationScheme") == C.SS_UNIQUE_ID:
            ei.set("value", new_oid())
        elif ei.get("identificationScheme") == C.SS_PATIENT_ID:
            ei.set("value", patient)
    for n, doc in enumerate(docs, start=1):
        doc_id = f"Document{n:02d}"
        eo = copy.deepcopy(template_eo)
        eo.set("id", doc_id)
        eo.set("mimeType", doc.mime_type)
        for child in eo.iter(f"{RIM}Classification", f"{RIM}ExternalIdentifier"):
            child.set("id", f"{child.get('id')}-{n}")
            child.set("classifiedObject" if child.tag.endswith("Classification") else "registryObject", doc_id)
            if child.get("identificationScheme") == C.DE_UNIQUE_ID:
                child.set("value", doc.unique_id)
            elif child.get("identificationScheme") == C.DE_PATIENT_ID:
                child.set("value", patient)
        ol.insert(n - 1, eo)
        assoc = copy.deepcopy(template_assoc)
        assoc.set("id", f"as-{n}")
        assoc.set("targetObject", doc_id)
        ol.append(assoc)
        document = etree.SubElement(root, XDSB + "Document", id=doc_id)
        if inline:
            document.text = base64.b64encode(doc.content).decode()
    return root


def as_mtom(pnr_element: etree._Element, contents: Mapping[str, bytes], *, mime_type: str = "application/octet-stream",
            message_id: str | None = None) -> tuple[str, bytes]:
    """An MTOM/XOP ITI-41 request (ITI TF-2b §3.41.5.1, ITI TF-2x V.3.6): each xdsb:Document of
    `pnr_element` refers by xop:Include to a part holding `contents[document id]`."""
    body = copy.deepcopy(pnr_element)
    attachments = []
    for document in body.iterfind("xdsb:Document", NS):
        document.text = None
        cid = f"{document.get('id')}.{uuid.uuid4().hex}@carnet.test"
        etree.SubElement(document, f"{{{NS_XOP}}}Include", nsmap={"xop": NS_XOP}, href=f"cid:{cid}")
        attachments.append(Attachment(cid, mime_type, contents[document.get("id")]))
    envelope = soap_envelope(etree.tostring(body), ACTION_ITI41, message_id=message_id)
    return build_mtom(envelope, attachments, action=ACTION_ITI41)


def provide(url: str, pnr_element: etree._Element, *, mtom: bool = False, timeout: float = 60) -> SoapAnswer:
    """Send ITI-41 (inline base64, or MTOM with the inline contents moved to parts)."""
    if mtom:
        contents = {d.get("id"): base64.b64decode(d.text or "") for d in pnr_element.iterfind("xdsb:Document", NS)}
        content_type, data = as_mtom(pnr_element, contents)
    else:
        content_type, data = SOAP_CONTENT_TYPE, soap_envelope(etree.tostring(pnr_element), ACTION_ITI41)
    return read_soap(post(url, data, content_type, timeout=timeout))


def assert_success(answer: SoapAnswer) -> None:
    assert answer.status == 200, answer
    assert answer.body.tag == f"{{{C.NS_RS}}}RegistryResponse", etree.tostring(answer.body)
    assert answer.body.get("status") == C.RESPONSE_SUCCESS, etree.tostring(answer.body)
    assert_schema_valid(answer.body)


# --- ITI-43 -------------------------------------------------------------------------------------


def retrieve_request(requests: Iterable[tuple[str, str]], *, home: str | None = None) -> etree._Element:
    """RetrieveDocumentSetRequest for (repositoryUniqueId, documentUniqueId) pairs (ITI TF-2b §3.43.4.1)."""
    root = etree.Element(XDSB + "RetrieveDocumentSetRequest", nsmap={"xdsb": C.NS_XDSB})
    for repository_uid, document_uid in requests:
        dr = etree.SubElement(root, XDSB + "DocumentRequest")
        if home:
            etree.SubElement(dr, XDSB + "HomeCommunityId").text = home
        etree.SubElement(dr, XDSB + "RepositoryUniqueId").text = repository_uid
        etree.SubElement(dr, XDSB + "DocumentUniqueId").text = document_uid
    return root


class Retrieved(NamedTuple):
    status: str
    errors: list[tuple[str, str | None]]  # (errorCode, location)
    documents: dict[str, tuple[str, str, bytes]]  # documentUniqueId -> (repositoryUniqueId, mimeType, bytes)
    answer: SoapAnswer


def read_retrieve(answer: SoapAnswer, *, validate: bool = True) -> Retrieved:
    assert answer.status == 200, answer
    body = answer.body
    assert body.tag == XDSB + "RetrieveDocumentSetResponse", etree.tostring(body)[:500]
    assert answer.envelope.findtext("env:Header/wsa:Action", namespaces=NS) == ACTION_ITI43_RESPONSE
    if validate:
        assert_schema_valid(body, answer.attachments)
    rr = body.find("rs:RegistryResponse", NS)
    errors = [(e.get("errorCode"), e.get("location")) for e in rr.iter(f"{{{C.NS_RS}}}RegistryError")]
    docs = {}
    for dr in body.iterfind("xdsb:DocumentResponse", NS):
        document = dr.find("xdsb:Document", NS)
        include = document.find("xop:Include", NS)
        data = answer.attachments[include.get("href")[4:]] if include is not None else base64.b64decode(document.text)
        docs[dr.findtext("xdsb:DocumentUniqueId", namespaces=NS)] = (
            dr.findtext("xdsb:RepositoryUniqueId", namespaces=NS), dr.findtext("xdsb:mimeType", namespaces=NS), data,
        )
    return Retrieved(rr.get("status"), errors, docs, answer)


def retrieve(url: str, requests: Iterable[tuple[str, str]], *, home: str | None = None,
             validate: bool = True, timeout: float = 60) -> Retrieved:
    envelope = soap_envelope(etree.tostring(retrieve_request(requests, home=home)), ACTION_ITI43)
    return read_retrieve(read_soap(post(url, envelope, SOAP_CONTENT_TYPE, timeout=timeout)), validate=validate)


# --- ITI-18 -------------------------------------------------------------------------------------


class Entry(NamedTuple):
    """What the registry says of a DocumentEntry (ITI TF-3 Table 4.3.1-3)."""

    unique_id: str
    repository_unique_id: str | None
    hash: str | None
    size: int | None
    mime_type: str


def find_documents(registry_url: str, patient: str) -> list[Entry]:
    """ITI-18 FindDocuments (LeafClass, Approved) for `patient`."""
    query = f"""<query:AdhocQueryRequest xmlns:query="{C.NS_QUERY}" xmlns:rim="{C.NS_RIM}">
      <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
      <rim:AdhocQuery id="{C.SQ_FIND_DOCUMENTS}">
        <rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>
          <rim:Value>'{patient.replace('&', '&amp;')}'</rim:Value></rim:ValueList></rim:Slot>
        <rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>
          <rim:Value>('{C.STATUS_APPROVED}')</rim:Value></rim:ValueList></rim:Slot>
      </rim:AdhocQuery></query:AdhocQueryRequest>""".encode()
    answer = read_soap(post(registry_url, soap_envelope(query, C.ACTION_ITI18), SOAP_CONTENT_TYPE))
    assert answer.status == 200 and answer.body.get("status") == C.RESPONSE_SUCCESS, etree.tostring(answer.body)
    entries = []
    for eo in answer.body.iterfind(".//rim:ExtrinsicObject", NS):
        slots = {s.get("name"): s.findtext("rim:ValueList/rim:Value", namespaces=NS) for s in eo.iterfind("rim:Slot", NS)}
        uid = next(ei.get("value") for ei in eo.iterfind("rim:ExternalIdentifier", NS)
                   if ei.get("identificationScheme") == C.DE_UNIQUE_ID)
        size = slots.get("size")
        entries.append(Entry(uid, slots.get("repositoryUniqueId"), slots.get("hash"),
                             int(size) if size is not None else None, eo.get("mimeType")))
    return entries


def entry_of(registry_url: str, patient: str, unique_id: str) -> Entry:
    [entry] = [e for e in find_documents(registry_url, patient) if e.unique_id == unique_id]
    return entry
