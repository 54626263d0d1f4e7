"""SOAP 1.2 + WS-Addressing: parsing requests, building responses and faults (wire bytes in/out)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from lxml import etree

from soap.envelope import (
    NS_SOAP12,
    NS_WSA,
    WSA_FAULT_ACTION,
    ActionNotSupported,
    EmptyBody,
    InvalidAddressingHeader,
    MalformedMessage,
    MessageAddressingHeaderRequired,
    MustUnderstandFault,
    NotAnEnvelope,
    SoapFaultError,
    UnsupportedMediaType,
    VersionMismatchFault,
    build_fault,
    build_response,
    classify_content_type,
    parse_content_type,
    parse_soap,
)
from support import need_shared

NS = {"env": NS_SOAP12, "wsa": NS_WSA}
RSQ = "urn:ihe:iti:2007:RegistryStoredQuery"


def envelope(headers: str = f"<wsa:Action>{RSQ}</wsa:Action>", body: str = "<q:Req xmlns:q='urn:q'/>") -> bytes:
    return (
        f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}">'
        f"<env:Header>{headers}</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def test_parse_addressing_and_body():
    req = parse_soap(
        envelope(
            f'<wsa:Action env:mustUnderstand="1">{RSQ}</wsa:Action><wsa:MessageID>urn:uuid:1</wsa:MessageID>'
            "<wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>"
            '<wsa:To env:mustUnderstand="true">http://x/reg</wsa:To>'
        )
    )
    assert (req.action, req.message_id, req.to) == (RSQ, "urn:uuid:1", "http://x/reg")
    assert req.reply_to == "http://www.w3.org/2005/08/addressing/anonymous"
    assert req.body.tag == "{urn:q}Req"
    assert len(req.header_elements) == 4
    assert req.envelope.tag == f"{{{NS_SOAP12}}}Envelope"


@pytest.mark.parametrize(
    "path, action",
    [
        ("iti18/ihe__RegistryStoredQueryRequest_SOAP.xml", RSQ),
        ("iti18/nist-validator__soap-sq-req.xml", RSQ),
        ("iti42/ihe__RegisterDocumentSet-bRequest_SOAP.xml", "urn:ihe:iti:2007:RegisterDocumentSet-b"),
        ("iti18/ihe__RegistryStoredQueryResponse_SOAP.xml", "urn:ihe:iti:2007:RegistryStoredQueryResponse"),
        ("iti42/ihe__RegisterDocumentSet-bResponse_SOAP.xml", "urn:ihe:iti:2007:RegisterDocumentSet-bResponse"),
    ],
)
def test_shared_soap_samples_parse_with_their_action(path, action):
    req = parse_soap(need_shared("samples", path).read_bytes())
    assert req.action == action
    assert etree.QName(req.body).localname in (
        "AdhocQueryRequest", "AdhocQueryResponse", "SubmitObjectsRequest", "RegistryResponse"
    )


def test_all_shared_iti18_iti42_soap_samples_parse():
    folder = need_shared("samples")
    files = sorted(folder.glob("iti18/*_SOAP.xml")) + sorted(folder.glob("iti42/*_SOAP.xml"))
    assert files
    for f in files:
        assert parse_soap(f.read_bytes()).action.startswith("urn:ihe:iti:2007:")


def test_empty_body_sample():
    with pytest.raises(EmptyBody) as info:
        parse_soap(need_shared("samples", "iti18", "nist-validator__empty-soap-wrapper.xml").read_bytes())
    assert info.value.code == "Sender" and info.value.http_status == 400


def test_truncated_xml_sample():
    with pytest.raises(MalformedMessage) as info:
        parse_soap(need_shared("samples", "iti18", "nist-validator__xml-parse-error.xml").read_bytes())
    assert info.value.code == "Sender"


def test_missing_action_sample_and_fault():
    with pytest.raises(MessageAddressingHeaderRequired) as info:
        parse_soap(need_shared("samples", "iti41", "nist-validator__soap-noaction-pnr.xml").read_bytes())
    fault = etree.fromstring(info.value.to_fault())
    assert fault.findtext(".//env:Subcode/env:Value", namespaces=NS) == "wsa:MessageAddressingHeaderRequired"
    assert fault.findtext(".//env:Detail/wsa:ProblemHeaderQName", namespaces=NS) == "wsa:Action"


def test_header_after_body_sample():
    with pytest.raises(NotAnEnvelope):
        parse_soap(need_shared("samples", "iti41", "nist-validator__soap-pnr-soap-order.xml").read_bytes())


def test_soap11_is_version_mismatch():
    doc = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>'
    )
    with pytest.raises(VersionMismatchFault) as info:
        parse_soap(doc)
    # SOAP 1.2 Part 1 Appendix A: the fault to a SOAP/1.1 message is a SOAP/1.1 one
    fault = etree.fromstring(info.value.to_fault())
    assert fault.findtext(".//faultcode") == "s:VersionMismatch"
    upgrade = fault.find("{http://schemas.xmlsoap.org/soap/envelope/}Header/env:Upgrade/env:SupportedEnvelope", NS)
    assert upgrade is not None and upgrade.get("qname") == "ns1:Envelope"


def test_not_an_envelope():
    with pytest.raises(NotAnEnvelope):
        parse_soap(b"<x/>")
    with pytest.raises(NotAnEnvelope):
        parse_soap(f'<env:Envelope xmlns:env="{NS_SOAP12}"><env:Header/></env:Envelope>'.encode())
    with pytest.raises(NotAnEnvelope):
        parse_soap(envelope().replace(b"</env:Envelope>", b"<env:Body/></env:Envelope>"))


def test_empty_body_and_missing_action():
    with pytest.raises(EmptyBody):
        parse_soap(envelope(body=" <!-- nothing --> "))
    with pytest.raises(MessageAddressingHeaderRequired):
        parse_soap(envelope(headers="<wsa:MessageID>urn:uuid:1</wsa:MessageID>"))
    with pytest.raises(MessageAddressingHeaderRequired):
        parse_soap(envelope(headers="<wsa:Action>  </wsa:Action>"))


def test_duplicate_action_is_invalid_addressing_header():
    with pytest.raises(InvalidAddressingHeader):
        parse_soap(envelope(headers=f"<wsa:Action>{RSQ}</wsa:Action><wsa:Action>{RSQ}</wsa:Action>"))


def test_action_mismatch_with_media_type():
    assert parse_soap(envelope(), content_type_action=RSQ).action == RSQ
    with pytest.raises(InvalidAddressingHeader) as info:
        parse_soap(envelope(), content_type_action="urn:other")
    assert info.value.subcode == ("wsa:InvalidAddressingHeader", "wsa:ActionMismatch")


SEC = "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"


@pytest.mark.parametrize("mu", ["1", "true"])
def test_must_understand_unknown_header(mu):
    headers = (
        f"<wsa:Action>{RSQ}</wsa:Action>"
        f'<wsse:Security xmlns:wsse="{SEC[1:].split("}")[0]}" env:mustUnderstand="{mu}"/>'
    )
    with pytest.raises(MustUnderstandFault) as info:
        parse_soap(envelope(headers))
    assert info.value.not_understood == (SEC,)
    fault = etree.fromstring(info.value.to_fault(relates_to="urn:uuid:9"))
    assert fault.findtext(".//env:Code/env:Value", namespaces=NS) == "env:MustUnderstand"
    nu = fault.find("env:Header/env:NotUnderstood", NS)
    prefix, local = nu.get("qname").split(":")
    assert etree.QName(nu.nsmap[prefix], local).text == SEC
    assert fault.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:9"
    # understood when the caller says so; ignored when not for us or optional
    assert parse_soap(envelope(headers), understood={SEC}).action == RSQ
    assert parse_soap(envelope(headers.replace(f'mustUnderstand="{mu}"', 'mustUnderstand="false"'))).action == RSQ
    other_role = headers.replace("env:mustUnderstand", 'env:role="urn:some:role" env:mustUnderstand')
    assert parse_soap(envelope(other_role)).action == RSQ


def _parse_back(data: bytes) -> etree._Element:
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return etree.fromstring(data)


def test_build_response_from_element_and_bytes_is_the_same_message():
    body = etree.fromstring(b'<rs:RegistryResponse xmlns:rs="urn:rs" status="ok"><rs:x>&amp;</rs:x></rs:RegistryResponse>')
    a = build_response("urn:act", body, relates_to="urn:uuid:<1>&", message_id="urn:uuid:m")
    b = build_response("urn:act", etree.tostring(body, xml_declaration=True, encoding="UTF-8"),
                       relates_to="urn:uuid:<1>&", message_id="urn:uuid:m")
    assert a == b
    env = _parse_back(a)
    action = env.find("env:Header/wsa:Action", NS)
    assert action.text == "urn:act"
    assert action.get(f"{{{NS_SOAP12}}}mustUnderstand") == "1"
    assert env.findtext("env:Header/wsa:MessageID", namespaces=NS) == "urn:uuid:m"
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:<1>&"
    (resp,) = env.find("env:Body", NS)
    assert resp.tag == "{urn:rs}RegistryResponse" and resp[0].text == "&"
    # and it parses back with our own parser
    assert parse_soap(a).action == "urn:act"


def test_build_response_fresh_message_id_and_no_relates_to():
    env = _parse_back(build_response("urn:a", b"<x/>", relates_to=None))
    mid = env.findtext("env:Header/wsa:MessageID", namespaces=NS)
    assert mid.startswith("urn:uuid:") and len(mid) == 45
    assert env.find("env:Header/wsa:RelatesTo", NS) is None
    assert mid != _parse_back(build_response("urn:a", b"<x/>", relates_to=None)).findtext(
        "env:Header/wsa:MessageID", namespaces=NS
    )


def test_build_response_does_not_take_the_tail_of_an_element():
    parent = etree.fromstring(b"<p><x>1</x>TAIL</p>")
    env = _parse_back(build_response("urn:a", parent[0], relates_to=None))
    assert env.find("env:Body/x", NS).tail is None


def test_action_not_supported_fault():
    fault_bytes = ActionNotSupported("urn:nope").to_fault(relates_to="urn:uuid:req")
    env = _parse_back(fault_bytes)
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT_ACTION
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:req"
    fault = env.find("env:Body/env:Fault", NS)
    assert fault.findtext("env:Code/env:Value", namespaces=NS) == "env:Sender"
    assert fault.findtext("env:Code/env:Subcode/env:Value", namespaces=NS) == "wsa:ActionNotSupported"
    assert fault.findtext("env:Detail/wsa:ProblemAction/wsa:Action", namespaces=NS) == "urn:nope"
    assert fault.find("env:Reason/env:Text", NS).get("{http://www.w3.org/XML/1998/namespace}lang") == "en"


def test_build_fault_codes_and_subcode_chain():
    env = _parse_back(build_fault("Receiver", "oops \x00 <&>", subcode=("{urn:x}A", "wsa:B")))
    code = env.find("env:Body/env:Fault/env:Code", NS)
    assert code.findtext("env:Value", namespaces=NS) == "env:Receiver"
    sub = code.find("env:Subcode", NS)
    value = sub.find("env:Value", NS)
    prefix, local = value.text.split(":")
    assert (value.nsmap[prefix], local) == ("urn:x", "A")
    assert sub.findtext("env:Subcode/env:Value", namespaces=NS) == "wsa:B"
    assert env.findtext(".//env:Reason/env:Text", namespaces=NS) == "oops  <&>"
    with pytest.raises(ValueError):
        build_fault("Client", "soap 1.1 code")


def test_content_types():
    mime, params = parse_content_type('application/soap+xml; charset=UTF-8; action="urn:a;b"')
    assert mime == "application/soap+xml" and params == {"charset": "UTF-8", "action": "urn:a;b"}
    assert classify_content_type("application/soap+xml;charset=utf-8;action=\"urn:x\"").action == "urn:x"
    assert not classify_content_type("application/soap+xml").is_mtom
    mtom = classify_content_type(
        'multipart/related; boundary=MIME_b; type="application/xop+xml"; start="<0@x>"; '
        'start-info="application/soap+xml; action=\\"urn:y\\""'
    )
    assert mtom.is_mtom and mtom.params["boundary"] == "MIME_b" and mtom.action == "urn:y"
    for bad in (None, "text/plain", 'multipart/related; boundary=x; type="text/xml"', 'multipart/related; type="application/xop+xml"'):
        with pytest.raises(UnsupportedMediaType) as info:
            classify_content_type(bad)
        assert info.value.http_status == 415


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_garbage_only_raises_fault_errors(data):
    try:
        parse_soap(data)
    except SoapFaultError:
        pass


_pieces = st.sampled_from([
    "<env:Header>", "</env:Header>", "<env:Body>", "</env:Body>", f"<wsa:Action>{RSQ}</wsa:Action>",
    '<h xmlns="urn:h" env:mustUnderstand="1"/>', "<x/>", "<wsa:MessageID>m</wsa:MessageID>", "text", "<!--c-->",
])


@settings(max_examples=300)
@given(st.lists(_pieces, max_size=10))
def test_envelope_shaped_input_only_raises_fault_errors(pieces):
    doc = f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}">{"".join(pieces)}</env:Envelope>'
    try:
        req = parse_soap(doc.encode())
    except SoapFaultError:
        return
    assert req.action == RSQ
