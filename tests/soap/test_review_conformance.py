"""Conformance review of the SOAP wire layer against SOAP 1.2 Part 1/2, WS-Addressing 1.0 SOAP
Binding and Core, and what peers (Axis2, CXF, WCF, OpenSAML) do.

Each test names the rule it checks."""

from __future__ import annotations

import pytest
from lxml import etree

from reactor_support import serve, thread_pool
from soap.edge import SoapEndpoint
from soap.envelope import (
    NS_SOAP11,
    NS_SOAP12,
    NS_WSA,
    ActionNotSupported,
    InvalidAddressingHeader,
    NotAnEnvelope,
    VersionMismatchFault,
    build_fault,
    parse_soap,
)
from soap.operation import FunctionOperation
from support import post_soap

NS = {"env": NS_SOAP12, "wsa": NS_WSA, "s11": NS_SOAP11}
ECHO = "urn:test:Echo"
ANON = "http://www.w3.org/2005/08/addressing/anonymous"
WSA_FAULT = "http://www.w3.org/2005/08/addressing/fault"
SOAP_FAULT = "http://www.w3.org/2005/08/addressing/soap/fault"
SOAP11_REQUEST = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>'
)


def echo(request, context):
    return etree.Element("{urn:test}EchoResponse")


@pytest.fixture(scope="module")
def base_url():
    from reactor_support import reactor

    ops = {ECHO: FunctionOperation(ECHO, ECHO + "Response", echo)}
    with thread_pool(name="soap-review-test") as pool:
        with serve(SoapEndpoint(ops, reactor=reactor(), threadpool=pool)) as url:
            yield url + "/registry"


def envelope(headers: str, body: str = '<t:Ping xmlns:t="urn:test"/>') -> bytes:
    return (
        f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header>{headers}</env:Header>'
        f"<env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


# --- SOAP 1.2 Part 1 Appendix A, §5.4.7 (Example 7): a SOAP/1.1 message gets a SOAP/1.1 fault ----


def _check_soap11_version_mismatch(env: etree._Element) -> None:
    assert env.tag == f"{{{NS_SOAP11}}}Envelope"
    fault = env.find("s11:Body/s11:Fault", NS)
    code = fault.findtext("faultcode")
    prefix, _, local = code.partition(":")
    assert (fault.nsmap[prefix], local) == (NS_SOAP11, "VersionMismatch")
    assert fault.findtext("faultstring")
    supported = env.find("s11:Header/env:Upgrade/env:SupportedEnvelope", NS)
    prefix, _, local = supported.get("qname").partition(":")
    assert (supported.nsmap[prefix], local) == (NS_SOAP12, "Envelope")


def test_soap11_envelope_is_answered_with_a_soap11_version_mismatch_fault():
    with pytest.raises(VersionMismatchFault) as info:
        parse_soap(SOAP11_REQUEST)
    _check_soap11_version_mismatch(etree.fromstring(info.value.to_fault()))
    assert info.value.http_status == 500
    assert info.value.content_type.startswith("text/xml")


def test_soap11_over_http_gets_text_xml_500(base_url):
    status, ctype, env = post_soap(base_url, SOAP11_REQUEST, content_type="text/xml; charset=utf-8")
    assert status == 500 and ctype.split(";")[0] == "text/xml"
    _check_soap11_version_mismatch(env)


def test_unknown_envelope_namespace_stays_a_soap12_version_mismatch():
    with pytest.raises(VersionMismatchFault) as info:
        parse_soap(b'<e:Envelope xmlns:e="urn:other"><e:Body/></e:Envelope>')
    env = etree.fromstring(info.value.to_fault())
    assert env.findtext("env:Body/env:Fault/env:Code/env:Value", namespaces=NS) == "env:VersionMismatch"


# --- WS-Addressing 1.0 SOAP Binding §6: fault [action] --------------------------------------------


def test_soap_defined_faults_use_the_soap_fault_action_and_wsa_faults_the_wsa_one():
    for code in ("Sender", "Receiver", "MustUnderstand"):
        env = etree.fromstring(build_fault(code, "x"))
        assert env.findtext("env:Header/wsa:Action", namespaces=NS) == SOAP_FAULT, code
    env = etree.fromstring(ActionNotSupported("urn:nope").to_fault())
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT


# --- WS-Addressing Core §3.4, SOAP Binding §6: faults are replies, RelatesTo the request ----------


def test_must_understand_fault_relates_to_the_request(base_url):
    data = envelope(
        f"<wsa:Action>{ECHO}</wsa:Action><wsa:MessageID>urn:uuid:mu-1</wsa:MessageID>"
        '<x:Sec xmlns:x="urn:sec" env:mustUnderstand="true"/>'
    )
    status, _, env = post_soap(base_url, data)
    assert status == 500
    assert env.findtext("env:Body/env:Fault/env:Code/env:Value", namespaces=NS) == "env:MustUnderstand"
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:mu-1"


def test_missing_action_fault_relates_to_the_request(base_url):
    status, _, env = post_soap(base_url, envelope("<wsa:MessageID>urn:uuid:noaction</wsa:MessageID>"))
    assert status == 400
    assert (
        env.findtext("env:Body/env:Fault/env:Code/env:Subcode/env:Value", namespaces=NS)
        == "wsa:MessageAddressingHeaderRequired"
    )
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:noaction"


# --- WS-Addressing SOAP Binding §6.4.1: [Detail] of InvalidAddressingHeader ------------------------


def test_invalid_addressing_header_names_the_header():
    with pytest.raises(InvalidAddressingHeader) as info:
        parse_soap(envelope(f"<wsa:Action>{ECHO}</wsa:Action><wsa:Action>{ECHO}</wsa:Action>"))
    env = etree.fromstring(info.value.to_fault())
    assert env.findtext("env:Body/env:Fault/env:Detail/wsa:ProblemHeaderQName", namespaces=NS) == "wsa:Action"


# --- WS-Addressing Core §3.4 + SOAP Binding §6.4.1: a reply endpoint we cannot honour ---------------


@pytest.mark.parametrize("header", ["ReplyTo", "FaultTo"])
def test_non_anonymous_reply_endpoint_is_refused(base_url, header):
    data = envelope(
        f"<wsa:Action>{ECHO}</wsa:Action><wsa:MessageID>urn:uuid:async</wsa:MessageID>"
        f"<wsa:{header}><wsa:Address>http://client.example/callback</wsa:Address></wsa:{header}>"
    )
    status, _, env = post_soap(base_url, data)
    fault = env.find("env:Body/env:Fault", NS)
    assert status == 400 and fault.findtext("env:Code/env:Value", namespaces=NS) == "env:Sender"
    sub = fault.find("env:Code/env:Subcode", NS)
    assert sub.findtext("env:Value", namespaces=NS) == "wsa:InvalidAddressingHeader"
    assert sub.findtext("env:Subcode/env:Value", namespaces=NS) == "wsa:OnlyAnonymousAddressSupported"
    assert fault.findtext("env:Detail/wsa:ProblemHeaderQName", namespaces=NS) == f"wsa:{header}"
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:async"


def test_reply_to_without_address_is_missing_address_in_epr():
    with pytest.raises(InvalidAddressingHeader) as info:
        parse_soap(envelope(f"<wsa:Action>{ECHO}</wsa:Action><wsa:ReplyTo/>"))
    assert info.value.subcode == ("wsa:InvalidAddressingHeader", "wsa:MissingAddressInEPR")


def test_anonymous_or_absent_reply_to_is_accepted(base_url):
    for extra in ("", f"<wsa:ReplyTo><wsa:Address> {ANON} </wsa:Address></wsa:ReplyTo>"):
        status, _, env = post_soap(base_url, envelope(f"<wsa:Action>{ECHO}</wsa:Action>{extra}"))
        assert status == 200, etree.tostring(env)


# --- SOAP 1.2 Part 1 §5.2.1: header blocks are namespace-qualified ---------------------------------


def test_unqualified_header_block_is_a_sender_fault_not_a_crash(base_url):
    data = envelope(f'<wsa:Action>{ECHO}</wsa:Action><foo env:mustUnderstand="1"/>')
    with pytest.raises(NotAnEnvelope):
        parse_soap(data)
    status, _, env = post_soap(base_url, data)
    assert status == 400
    assert env.findtext("env:Body/env:Fault/env:Code/env:Value", namespaces=NS) == "env:Sender"
