"""A SOAP client nobody here wrote (zeep) loads /pix/v3?wsdl and calls ITI-44 and ITI-45."""

from __future__ import annotations

import urllib.request

import zeep
from lxml import etree
from zeep.plugins import HistoryPlugin

from pix import hl7v3 as V
from pix.identities import MemoryCrossReferences
from pix.xref import Demographics, Identifier, PatientRecord
from pix_v3.pixv3_support import DOMAINS, IPP, IPP2, POLICY, assert_schema_valid, served
from support import WSA_NS, soap_body

R = V.Responder("1.2.250.1.999.9.9")


def _call(client, operation: str, message: etree._Element):
    return client.service[operation](_value_1=list(message), _attr_1=dict(message.attrib))


def test_wsdl_names_follow_ihe_pixmanager_wsdl():
    with served(MemoryCrossReferences(DOMAINS, POLICY)) as pix:
        wsdl = etree.fromstring(urllib.request.urlopen(pix.url + "?wsdl").read())
    ns = {"w": "http://schemas.xmlsoap.org/wsdl/", "wsaw": "http://www.w3.org/2006/05/addressing/wsdl"}
    assert wsdl.get("targetNamespace") == "urn:ihe:iti:pixv3:2007"
    ops = {
        op.get("name"): (op.find("w:input", ns).get(f"{{{ns['wsaw']}}}Action"), op.find("w:output", ns).get(f"{{{ns['wsaw']}}}Action"))
        for op in wsdl.iterfind("w:portType/w:operation", ns)
    }
    assert ops == {
        "PIXManager_PRPA_IN201301UV02": ("urn:hl7-org:v3:PRPA_IN201301UV02", "urn:hl7-org:v3:MCCI_IN000002UV01"),
        "PIXManager_PRPA_IN201302UV02": ("urn:hl7-org:v3:PRPA_IN201302UV02", "urn:hl7-org:v3:MCCI_IN000002UV01"),
        "PIXManager_PRPA_IN201304UV02": ("urn:hl7-org:v3:PRPA_IN201304UV02", "urn:hl7-org:v3:MCCI_IN000002UV01"),
        "PIXManager_PRPA_IN201309UV02": ("urn:hl7-org:v3:PRPA_IN201309UV02", "urn:hl7-org:v3:PRPA_IN201310UV02"),
    }


def test_zeep_feeds_then_queries():
    with served(MemoryCrossReferences(DOMAINS, POLICY)) as pix:
        history = HistoryPlugin()
        client = zeep.Client(pix.url + "?wsdl", plugins=[history])
        record = PatientRecord((Identifier("Z1", IPP), Identifier("Z2", IPP2)), Demographics("ZEEP", ("Client",)))
        _call(client, "PIXManager_PRPA_IN201301UV02", V.build_feed(V.ADD, record, R))
        assert history.last_sent["envelope"].find(f".//{{{WSA_NS}}}Action").text == "urn:hl7-org:v3:PRPA_IN201301UV02"
        ack = soap_body(history.last_received["envelope"])
        assert_schema_valid(ack)
        assert V.read_ack(ack).type_code == "AA"

        _call(client, "PIXManager_PRPA_IN201309UV02", V.build_query(Identifier("Z1", IPP), R))
        response = soap_body(history.last_received["envelope"])
        assert history.last_received["envelope"].find(f".//{{{WSA_NS}}}Action").text == "urn:hl7-org:v3:PRPA_IN201310UV02"
        assert_schema_valid(response)
        summary = V.read_ack(response)
        assert (summary.type_code, summary.query_response_code, summary.identifiers) == ("AA", "OK", (Identifier("Z2", IPP2),))
