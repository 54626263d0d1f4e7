"""Signed CDA end to end (issue 3): a Carnet configured with `[repository.signatures]` verifies the
signature of each CDA it is given over the wire; in `record` mode the verdict is stored on the
DocumentEntry and returned by ITI-18 as the slot `urn:carnet:signatureVerification`; in `reject`
mode a tampered document is refused and nothing is stored."""

from __future__ import annotations

import pytest
from lxml import etree
from signxml import XMLSigner

from carnet_support import running_carnet
from pki_support import make_signing_pki
from registry import constants as C
from repository.signatures import SIGNATURE_VERIFICATION_SLOT
from repository_wire.xds_wire import (
    INS,
    NS,
    REPO_UID,
    SOAP_CONTENT_TYPE,
    Doc,
    assert_success,
    new_oid,
    pnr,
    post,
    provide,
    read_soap,
)
from support import need_shared, soap_envelope


@pytest.fixture(scope="module")
def signed_and_tampered(tmp_path_factory):
    pki = make_signing_pki()
    anchors = tmp_path_factory.mktemp("anchors")
    (anchors / "ca.pem").write_bytes(pki.ca.cert_pem)
    cda = need_shared("samples", "cda", "ihe__XDS-SD.TEXT.xml").read_bytes()
    signed = etree.tostring(XMLSigner(signature_algorithm="rsa-sha256").sign(
        etree.fromstring(cda), key=pki.leaf.key, cert=[pki.leaf.cert]))
    tree = etree.fromstring(signed)
    title = next(el for el in tree.iter() if isinstance(el.tag, str) and el.tag.endswith("}title"))
    title.text = (title.text or "") + " (altered)"
    return anchors, signed, etree.tostring(tree)


def _slot_values(registry_url: str, uid: str) -> list[str]:
    query = f"""<query:AdhocQueryRequest xmlns:query="{C.NS_QUERY}" xmlns:rim="{C.NS_RIM}">
      <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
      <rim:AdhocQuery id="{C.SQ_GET_DOCUMENTS}">
        <rim:Slot name="$XDSDocumentEntryUniqueId"><rim:ValueList>
          <rim:Value>('{uid}')</rim:Value></rim:ValueList></rim:Slot>
      </rim:AdhocQuery></query:AdhocQueryRequest>""".encode()
    answer = read_soap(post(registry_url, soap_envelope(query, C.ACTION_ITI18), SOAP_CONTENT_TYPE))
    [eo] = answer.body.iterfind(".//rim:ExtrinsicObject", NS)
    return [v.text for s in eo.iterfind("rim:Slot", NS) if s.get("name") == SIGNATURE_VERIFICATION_SLOT
            for v in s.iterfind("rim:ValueList/rim:Value", NS)]


def test_record_mode_returns_each_verdict_through_iti18(engine, tmp_path, signed_and_tampered):
    anchors, signed, tampered = signed_and_tampered
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID,
                        signatures={"mode": "record", "trust_anchors": [str(anchors)]}) as carnet:
        carnet.store.add_patient(INS)
        good, bad = new_oid(), new_oid()
        assert_success(provide(carnet.repository_url, pnr(INS, [Doc(signed, good)]), mtom=True))
        assert_success(provide(carnet.repository_url, pnr(INS, [Doc(tampered, bad)]), mtom=True))
        assert _slot_values(carnet.registry_url, good)[0] == "status=valid"
        values = _slot_values(carnet.registry_url, bad)
        assert values[0] == "status=invalid" and any(v.startswith("reason=") for v in values)


def test_reject_mode_refuses_a_tampered_document_and_stores_nothing(engine, tmp_path, signed_and_tampered):
    anchors, signed, tampered = signed_and_tampered
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID,
                        signatures={"mode": "reject", "trust_anchors": [str(anchors)]}) as carnet:
        carnet.store.add_patient(INS)
        uid = new_oid()
        answer = provide(carnet.repository_url, pnr(INS, [Doc(tampered, uid)]), mtom=True)
        assert answer.body.get("status") == C.RESPONSE_FAILURE
        codes = [e.get("errorCode") for e in answer.body.iter(f"{{{C.NS_RS}}}RegistryError")]
        assert codes == ["XDSRepositoryMetadataError"]
        assert carnet.store.documents_by_unique_id([uid]) == {}
        assert_success(provide(carnet.repository_url, pnr(INS, [Doc(signed, new_oid())]), mtom=True))
