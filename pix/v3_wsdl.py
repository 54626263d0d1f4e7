"""The WSDL served at `/pix/v3?wsdl`: the PIX Manager of PIXV3 (ITI-44 and ITI-45).

Operation, port type, binding, service and action names are those of IHE's PIXManager.wsdl
(ITI TF-2b §3.44.5, §3.45.5: `PIXManager_PRPA_IN201301UV02` …, input actions
`urn:hl7-org:v3:PRPA_IN2013xxUV02`, output actions `urn:hl7-org:v3:MCCI_IN000002UV01` and
`urn:hl7-org:v3:PRPA_IN201310UV02`). As for the XDS WSDLs (`soap.wsdl`), the HL7 v3 schemas are not
embedded: each message element is declared in urn:hl7-org:v3 with permissive content.
"""

from __future__ import annotations

from soap.wsdl import WsdlOperation, wsdl_for

NS_HL7 = "urn:hl7-org:v3"
TARGET_NS = "urn:ihe:iti:pixv3:2007"  # PIXManager.wsdl's targetNamespace

ACK_ACTION = "urn:hl7-org:v3:MCCI_IN000002UV01"
QUERY_RESPONSE_ACTION = "urn:hl7-org:v3:PRPA_IN201310UV02"


def _op(request: str, response: str) -> WsdlOperation:
    return WsdlOperation(
        f"PIXManager_{request}",
        f"urn:hl7-org:v3:{request}",
        f"urn:hl7-org:v3:{response}",
        f"{{{NS_HL7}}}{request}",
        f"{{{NS_HL7}}}{response}",
        message_name=request,
    )


PATIENT_REGISTRY_RECORD_ADDED = _op("PRPA_IN201301UV02", "MCCI_IN000002UV01")
PATIENT_REGISTRY_RECORD_REVISED = _op("PRPA_IN201302UV02", "MCCI_IN000002UV01")
PATIENT_REGISTRY_DUPLICATES_RESOLVED = _op("PRPA_IN201304UV02", "MCCI_IN000002UV01")
PATIENT_REGISTRY_GET_IDENTIFIERS_QUERY = _op("PRPA_IN201309UV02", "PRPA_IN201310UV02")

OPERATIONS = (
    PATIENT_REGISTRY_RECORD_ADDED,
    PATIENT_REGISTRY_RECORD_REVISED,
    PATIENT_REGISTRY_DUPLICATES_RESOLVED,
    PATIENT_REGISTRY_GET_IDENTIFIERS_QUERY,
)


def pix_manager_wsdl(endpoint_url: str) -> bytes:
    """The PIX Manager endpoint (HL7 v3): ITI-44 feed and ITI-45 query."""
    return wsdl_for(
        "PIXManager",
        endpoint_url,
        list(OPERATIONS),
        target_namespace=TARGET_NS,
        documentation="Carnet PIX Manager, HL7 v3 (ITI-44 Patient Identity Feed HL7 V3, ITI-45 PIXV3 Query)",
    )
