"""Our own WSDL 1.1 documents (SOAP 1.2 binding, WS-Addressing actions), served at `?wsdl`.

Operation, port type, binding and action names follow IHE's published WSDLs (ITI TF-2x Appendix V,
XDS.b_DocumentRegistry.wsdl / XDS.b_DocumentRepository.wsdl). The official XSDs are NOT embedded:
each message element is declared in its real namespace with permissive content (xsd:any lax +
anyAttribute), enough for a SOAP toolkit such as zeep to load the WSDL and send any ebXML content.
"""

from __future__ import annotations

from typing import Sequence

import attrs
from lxml import etree

from registry import constants as C

NS_WSDL = "http://schemas.xmlsoap.org/wsdl/"
NS_WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
NS_XSD = "http://www.w3.org/2001/XMLSchema"
NS_WSAW = "http://www.w3.org/2006/05/addressing/wsdl"
NS_WSAM = "http://www.w3.org/2007/05/addressing/metadata"
SOAP_HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"
TARGET_NS = C.NS_XDSB  # IHE's WSDLs use urn:ihe:iti:xds-b:2007

# Message elements and their namespaces (ebRS 3.0; IHE XDS.b).
LCM_SUBMIT_OBJECTS_REQUEST = f"{{{C.NS_LCM}}}SubmitObjectsRequest"
RS_REGISTRY_RESPONSE = f"{{{C.NS_RS}}}RegistryResponse"
QUERY_ADHOC_QUERY_REQUEST = f"{{{C.NS_QUERY}}}AdhocQueryRequest"
QUERY_ADHOC_QUERY_RESPONSE = f"{{{C.NS_QUERY}}}AdhocQueryResponse"
XDSB_PROVIDE_AND_REGISTER_REQUEST = f"{{{C.NS_XDSB}}}ProvideAndRegisterDocumentSetRequest"
XDSB_RETRIEVE_DOCUMENT_SET_REQUEST = f"{{{C.NS_XDSB}}}RetrieveDocumentSetRequest"
XDSB_RETRIEVE_DOCUMENT_SET_RESPONSE = f"{{{C.NS_XDSB}}}RetrieveDocumentSetResponse"

_PREFERRED_PREFIX = {C.NS_LCM: "lcm", C.NS_RS: "rs", C.NS_QUERY: "query", C.NS_RIM: "rim", C.NS_XDSB: "ihe"}


@attrs.frozen
class WsdlOperation:
    """One operation: WSDL name, request/response wsa:Action, request/response element ("{ns}local")."""

    name: str
    action: str
    response_action: str
    input_element: str
    output_element: str
    # Message names as in IHE's WSDLs ("RegisterDocumentSet-b_Message"); derived from `name` if None.
    message_name: str | None = None

    @property
    def messages(self) -> tuple[str, str]:
        base = self.message_name or self.name.split("_", 1)[-1]
        return f"{base}_Message", f"{base}Response_Message"


# ITI TF-2b §3.42 (ITI-42) and ITI TF-2a §3.18 (ITI-18), names from XDS.b_DocumentRegistry.wsdl.
REGISTER_DOCUMENT_SET_B = WsdlOperation(
    "DocumentRegistry_RegisterDocumentSet-b",
    "urn:ihe:iti:2007:RegisterDocumentSet-b",
    "urn:ihe:iti:2007:RegisterDocumentSet-bResponse",
    LCM_SUBMIT_OBJECTS_REQUEST,
    RS_REGISTRY_RESPONSE,
)
REGISTRY_STORED_QUERY = WsdlOperation(
    "DocumentRegistry_RegistryStoredQuery",
    "urn:ihe:iti:2007:RegistryStoredQuery",
    "urn:ihe:iti:2007:RegistryStoredQueryResponse",
    QUERY_ADHOC_QUERY_REQUEST,
    QUERY_ADHOC_QUERY_RESPONSE,
)
# ITI-41 and ITI-43, names from XDS.b_DocumentRepository.wsdl (for the repository issue).
PROVIDE_AND_REGISTER_DOCUMENT_SET_B = WsdlOperation(
    "DocumentRepository_ProvideAndRegisterDocumentSet-b",
    "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b",
    "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse",
    XDSB_PROVIDE_AND_REGISTER_REQUEST,
    RS_REGISTRY_RESPONSE,
)
RETRIEVE_DOCUMENT_SET = WsdlOperation(
    "DocumentRepository_RetrieveDocumentSet",
    "urn:ihe:iti:2007:RetrieveDocumentSet",
    "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
    XDSB_RETRIEVE_DOCUMENT_SET_REQUEST,
    XDSB_RETRIEVE_DOCUMENT_SET_RESPONSE,
)


def _w(tag: str) -> str:
    return f"{{{NS_WSDL}}}{tag}"


def _x(tag: str) -> str:
    return f"{{{NS_XSD}}}{tag}"


def _s12(tag: str) -> str:
    return f"{{{NS_WSDL_SOAP12}}}{tag}"


def wsdl_for(
    service_name: str,
    endpoint_url: str,
    operations: Sequence[WsdlOperation],
    *,
    target_namespace: str = TARGET_NS,
    documentation: str | None = None,
) -> bytes:
    """A WSDL 1.1 document: `<service_name>_PortType`, `_Binding_Soap12`, `_Service`, `_Port_Soap12`."""
    element_ns = sorted(
        {etree.QName(q).namespace for op in operations for q in (op.input_element, op.output_element)}
    )
    nsmap = {
        None: NS_WSDL,
        "xsd": NS_XSD,
        "soap12": NS_WSDL_SOAP12,
        "wsaw": NS_WSAW,
        "wsam": NS_WSAM,
        "tns": target_namespace,
    }
    prefixes = {}
    for i, ns in enumerate(element_ns):
        prefix = _PREFERRED_PREFIX.get(ns, f"m{i}")
        if ns == target_namespace:
            prefix = "tns"
        nsmap.setdefault(prefix, ns)
        prefixes[ns] = prefix

    def qref(clark: str) -> str:
        q = etree.QName(clark)
        return f"{prefixes[q.namespace]}:{q.localname}"

    defs = etree.Element(_w("definitions"), nsmap=nsmap, name=service_name, targetNamespace=target_namespace)
    if documentation:
        etree.SubElement(defs, _w("documentation")).text = documentation
    _types(etree.SubElement(defs, _w("types")), operations)

    for op in operations:
        for msg_name, element in zip(op.messages, (op.input_element, op.output_element)):
            if defs.find(f"{_w('message')}[@name='{msg_name}']") is None:
                msg = etree.SubElement(defs, _w("message"), name=msg_name)
                etree.SubElement(msg, _w("part"), name="body", element=qref(element))

    port_type = etree.SubElement(defs, _w("portType"), name=f"{service_name}_PortType")
    for op in operations:
        node = etree.SubElement(port_type, _w("operation"), name=op.name)
        for tag, msg_name, action in (("input", op.messages[0], op.action), ("output", op.messages[1], op.response_action)):
            io = etree.SubElement(node, _w(tag), message=f"tns:{msg_name}")
            io.set(f"{{{NS_WSAW}}}Action", action)
            io.set(f"{{{NS_WSAM}}}Action", action)

    binding = etree.SubElement(
        defs, _w("binding"), name=f"{service_name}_Binding_Soap12", type=f"tns:{service_name}_PortType"
    )
    etree.SubElement(binding, _s12("binding"), style="document", transport=SOAP_HTTP_TRANSPORT)
    etree.SubElement(binding, f"{{{NS_WSAW}}}UsingAddressing")
    for op in operations:
        node = etree.SubElement(binding, _w("operation"), name=op.name)
        etree.SubElement(node, _s12("operation"), soapAction=op.action, soapActionRequired="false")
        for tag in ("input", "output"):
            etree.SubElement(etree.SubElement(node, _w(tag)), _s12("body"), use="literal")

    service = etree.SubElement(defs, _w("service"), name=f"{service_name}_Service")
    port = etree.SubElement(
        service, _w("port"), name=f"{service_name}_Port_Soap12", binding=f"tns:{service_name}_Binding_Soap12"
    )
    etree.SubElement(port, _s12("address"), location=endpoint_url)
    return etree.tostring(defs, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _types(types: etree._Element, operations: Sequence[WsdlOperation]) -> None:
    """One permissive inline schema per message namespace (our own; not the official XSDs)."""
    by_ns: dict[str, list[str]] = {}
    for op in operations:
        for clark in (op.input_element, op.output_element):
            q = etree.QName(clark)
            names = by_ns.setdefault(q.namespace, [])
            if q.localname not in names:
                names.append(q.localname)
    for ns in sorted(by_ns):
        schema = etree.SubElement(
            types, _x("schema"), targetNamespace=ns, elementFormDefault="qualified", nsmap={"xsd": NS_XSD}
        )
        for name in by_ns[ns]:
            element = etree.SubElement(schema, _x("element"), name=name)
            ctype = etree.SubElement(element, _x("complexType"))
            seq = etree.SubElement(ctype, _x("sequence"))
            etree.SubElement(
                seq, _x("any"), namespace="##any", processContents="lax", minOccurs="0", maxOccurs="unbounded"
            )
            etree.SubElement(ctype, _x("anyAttribute"), namespace="##any", processContents="lax")


def registry_wsdl(endpoint_url: str) -> bytes:
    """The Document Registry endpoint: ITI-42 and ITI-18 (names as in XDS.b_DocumentRegistry.wsdl)."""
    return wsdl_for(
        "DocumentRegistry",
        endpoint_url,
        [REGISTER_DOCUMENT_SET_B, REGISTRY_STORED_QUERY],
        documentation="Carnet XDS.b Document Registry (ITI-42 Register Document Set-b, ITI-18 Registry Stored Query)",
    )


def repository_wsdl(endpoint_url: str) -> bytes:
    """The Document Repository endpoint: ITI-41 and ITI-43 (names as in XDS.b_DocumentRepository.wsdl)."""
    return wsdl_for(
        "DocumentRepository",
        endpoint_url,
        [PROVIDE_AND_REGISTER_DOCUMENT_SET_B, RETRIEVE_DOCUMENT_SET],
        documentation="Carnet XDS.b Document Repository (ITI-41, ITI-43)",
    )
