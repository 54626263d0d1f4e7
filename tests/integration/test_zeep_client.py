"""A SOAP client nobody here wrote (zeep) calls ITI-42 and ITI-18 through the served WSDL."""

from __future__ import annotations

import zeep
from lxml import etree
from zeep.plugins import HistoryPlugin

from registry import constants as C
from support import WSA_NS, need_shared, soap_body

SELF5 = "SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"


def _client(carnet) -> tuple[zeep.Client, HistoryPlugin]:
    history = HistoryPlugin()
    # No WsAddressingPlugin: the WSDL declares wsam:Action, so zeep adds WS-Addressing itself.
    client = zeep.Client(carnet.registry_url + "?wsdl", plugins=[history])
    return client, history


def _call(client, operation: str, request: etree._Element):
    return client.service[operation](_value_1=list(request), _attr_1=dict(request.attrib))


def test_zeep_registers_then_queries(relaxed_carnet):
    carnet = relaxed_carnet
    carnet.store.add_patient(SELF5)
    client, history = _client(carnet)
    sor = etree.parse(str(need_shared("samples", "iti42", "ihe__RegisterDocumentSet-bRequest.xml"))).getroot()

    _call(client, "DocumentRegistry_RegisterDocumentSet-b", sor)
    sent = history.last_sent["envelope"]
    assert sent.find(f".//{{{WSA_NS}}}Action").text == C.ACTION_ITI42  # zeep sent the IHE action
    reply = soap_body(history.last_received["envelope"])
    assert reply.tag == f"{{{C.NS_RS}}}RegistryResponse"
    assert reply.get("status") == C.RESPONSE_SUCCESS
    assert carnet.store.count_rows()["document_entry"] == 1

    query = etree.fromstring(
        f"""<query:AdhocQueryRequest xmlns:query="{C.NS_QUERY}" xmlns:rim="{C.NS_RIM}">
      <query:ResponseOption returnComposedObjects="true" returnType="ObjectRef"/>
      <rim:AdhocQuery id="{C.SQ_FIND_DOCUMENTS}">
        <rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>
          <rim:Value>'SELF-5^^^&amp;1.3.6.1.4.1.21367.2005.3.7&amp;ISO'</rim:Value></rim:ValueList></rim:Slot>
        <rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>
          <rim:Value>('{C.STATUS_APPROVED}')</rim:Value></rim:ValueList></rim:Slot>
      </rim:AdhocQuery></query:AdhocQueryRequest>"""
    )
    _call(client, "DocumentRegistry_RegistryStoredQuery", query)
    reply = soap_body(history.last_received["envelope"])
    assert reply.tag == f"{{{C.NS_QUERY}}}AdhocQueryResponse"
    assert reply.get("status") == C.RESPONSE_SUCCESS
    refs = [r.get("id") for r in reply.iter(f"{{{C.NS_RIM}}}ObjectRef")]
    assert len(refs) == 1 and refs[0].startswith("urn:uuid:")


def test_zeep_sees_a_registry_error_as_a_normal_response(carnet):
    """An XDS failure is a RegistryResponse, not a SOAP fault: zeep returns it, it does not raise."""
    client, history = _client(carnet)
    sor = etree.parse(str(need_shared("samples", "iti42", "ihe__RegisterDocumentSet-bRequest.xml"))).getroot()
    _call(client, "DocumentRegistry_RegisterDocumentSet-b", sor)
    reply = soap_body(history.last_received["envelope"])
    assert reply.get("status") == C.RESPONSE_FAILURE
    codes = {e.get("errorCode") for e in reply.iter(f"{{{C.NS_RS}}}RegistryError")}
    assert "XDSUnknownPatientId" in codes
