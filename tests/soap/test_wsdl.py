"""Our own WSDL: zeep loads it, finds the IHE operations and actions, and builds requests."""

from __future__ import annotations

import zeep
from lxml import etree

from soap.envelope import NS_SOAP12, NS_WSA, parse_soap
from soap.wsdl import registry_wsdl, repository_wsdl
from support import need_shared

URL = "http://127.0.0.1:8080/registry"


def zeep_client(tmp_path, wsdl: bytes) -> zeep.Client:
    path = tmp_path / "service.wsdl"
    path.write_bytes(wsdl)
    return zeep.Client(str(path))


def canonical(element) -> bytes:
    return etree.tostring(etree.fromstring(etree.tostring(element)), method="c14n", exclusive=True, with_comments=False)


def operations(client):
    (binding,) = client.wsdl.bindings.values()
    return binding._operations


def test_registry_wsdl_operations_and_actions(tmp_path):
    client = zeep_client(tmp_path, registry_wsdl(URL))
    ops = operations(client)
    assert set(ops) == {"DocumentRegistry_RegisterDocumentSet-b", "DocumentRegistry_RegistryStoredQuery"}
    reg, rsq = ops["DocumentRegistry_RegisterDocumentSet-b"], ops["DocumentRegistry_RegistryStoredQuery"]
    assert reg.soapaction == reg.abstract.wsa_action == "urn:ihe:iti:2007:RegisterDocumentSet-b"
    assert rsq.soapaction == rsq.abstract.wsa_action == "urn:ihe:iti:2007:RegistryStoredQuery"
    assert client.service._binding_options["address"] == URL
    doc = etree.fromstring(registry_wsdl(URL))
    outputs = doc.findall(".//{http://schemas.xmlsoap.org/wsdl/}portType/*/{http://schemas.xmlsoap.org/wsdl/}output")
    assert [o.get("{http://www.w3.org/2006/05/addressing/wsdl}Action") for o in outputs] == [
        "urn:ihe:iti:2007:RegisterDocumentSet-bResponse",
        "urn:ihe:iti:2007:RegistryStoredQueryResponse",
    ]


def test_zeep_builds_a_request_around_a_given_submit_objects_request(tmp_path):
    client = zeep_client(tmp_path, registry_wsdl(URL))
    source = need_shared("samples", "iti42", "ihe__RegisterDocumentSet-bRequest.xml").read_bytes()
    sor = etree.fromstring(source)
    envelope = client.create_message(
        client.service, "DocumentRegistry_RegisterDocumentSet-b", _value_1=list(sor), _attr_1=dict(sor.attrib)
    )
    assert envelope.tag == f"{{{NS_SOAP12}}}Envelope"
    request = parse_soap(etree.tostring(envelope))
    assert request.action == "urn:ihe:iti:2007:RegisterDocumentSet-b"
    assert request.to == URL and request.message_id.startswith("urn:uuid:")
    original = etree.fromstring(source)
    assert request.body.tag == original.tag == "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest"
    # the body is the given SubmitObjectsRequest: same attributes, same children (compared canonically;
    # zeep may choose its own prefix for the SubmitObjectsRequest element itself)
    assert dict(request.body.attrib) == dict(original.attrib)
    assert [canonical(c) for c in request.body] == [canonical(c) for c in original]
    assert len(original.findall(".//{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ExtrinsicObject")) == 1
    assert etree.fromstring(etree.tostring(envelope)).find(f".//{{{NS_WSA}}}Action") is not None


def test_repository_wsdl_has_the_same_shape(tmp_path):
    client = zeep_client(tmp_path, repository_wsdl("http://h/repo"))
    ops = operations(client)
    assert ops["DocumentRepository_ProvideAndRegisterDocumentSet-b"].abstract.wsa_action == (
        "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    )
    assert ops["DocumentRepository_RetrieveDocumentSet"].soapaction == "urn:ihe:iti:2007:RetrieveDocumentSet"
