"""Golden files: the exact messages Carnet answers, compared after canonicalisation.

Registry-assigned entryUUIDs and times are random or moving, so they are replaced by stable
placeholders (in order of first appearance) before comparing. Regenerate after an intended change
with `CARNET_UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_golden_messages.py` and review
the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from lxml import etree

from registry import constants as C
from support import post_soap, soap_body, soap_envelope

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
UUID = re.compile(r"urn:uuid:[0-9a-fA-F-]{36}")
FIXED_IDS = {
    C.DE_UNIQUE_ID, C.DE_PATIENT_ID, C.SS_UNIQUE_ID, C.SS_PATIENT_ID, C.SS_SOURCE_ID,
    C.DOC_ENTRY_STABLE, C.SS_CLASSIFICATION_NODE, *C.DE_CODE_SCHEMES.values(),
    C.DE_AUTHOR, C.SS_AUTHOR, C.SS_CONTENT_TYPE_CODE, C.SQ_FIND_DOCUMENTS,
}


def normalise(element: etree._Element) -> str:
    text = etree.canonicalize(etree.tostring(element).decode(), strip_text=True)
    seen: dict[str, str] = {}

    def placeholder(m: re.Match) -> str:
        value = m.group(0)
        if value in FIXED_IDS:
            return value
        return seen.setdefault(value, f"urn:uuid:ASSIGNED-{len(seen) + 1}")

    text = UUID.sub(placeholder, text)
    # lastUpdateTime-like registry times are not in these messages; keep the rest verbatim.
    return text


def check_golden(name: str, element: etree._Element) -> None:
    path = GOLDEN / name
    got = normalise(element)
    if os.environ.get("CARNET_UPDATE_GOLDEN") == "1":
        path.write_text(got + "\n", encoding="utf-8")
    assert path.exists(), f"{path} missing: run with CARNET_UPDATE_GOLDEN=1 to create it"
    assert got == path.read_text(encoding="utf-8").rstrip("\n")


def _register_completed_sample(carnet) -> etree._Element:
    from xds_messages import SELF5, valid_submission  # the completed IHE example

    carnet.store.add_patient(SELF5)
    root = valid_submission(doc_uid="1.3.6.1.4.1.21367.2005.3.9999.32", ss_uid="1.3.6.1.4.1.21367.2005.3.9999.33")
    _, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(root), C.ACTION_ITI42))
    return soap_body(env)


def _find_documents(carnet, return_type: str) -> etree._Element:
    body = f"""<query:AdhocQueryRequest xmlns:query="{C.NS_QUERY}" xmlns:rim="{C.NS_RIM}">
      <query:ResponseOption returnComposedObjects="true" returnType="{return_type}"/>
      <rim:AdhocQuery id="{C.SQ_FIND_DOCUMENTS}">
        <rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>
          <rim:Value>'SELF-5^^^&amp;1.3.6.1.4.1.21367.2005.3.7&amp;ISO'</rim:Value></rim:ValueList></rim:Slot>
        <rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>
          <rim:Value>('{C.STATUS_APPROVED}')</rim:Value></rim:ValueList></rim:Slot>
      </rim:AdhocQuery></query:AdhocQueryRequest>""".encode()
    _, _, env = post_soap(carnet.registry_url, soap_envelope(body, C.ACTION_ITI18))
    return soap_body(env)


@pytest.fixture
def sqlite_only(db_url):
    # The answers do not depend on the engine (the wire tests run on both); one golden run is enough.
    if db_url[1] is not None:
        pytest.skip("golden messages are checked once, on SQLite")


def test_golden_iti42_success_and_iti18_answers(sqlite_only, carnet):
    check_golden("iti42_register_success.xml", _register_completed_sample(carnet))
    check_golden("iti18_find_documents_leafclass.xml", _find_documents(carnet, "LeafClass"))
    check_golden("iti18_find_documents_objectref.xml", _find_documents(carnet, "ObjectRef"))


def test_golden_iti42_unknown_patient(sqlite_only, carnet):
    from xds_messages import valid_submission

    root = valid_submission(doc_uid="1.2.3.4", ss_uid="1.2.3.5")
    _, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(root), C.ACTION_ITI42))
    check_golden("iti42_unknown_patient.xml", soap_body(env))


def test_golden_fault_for_unknown_action(sqlite_only, carnet):
    _, _, env = post_soap(carnet.registry_url, soap_envelope(b"<x/>", "urn:example:unknown"))
    fault = env.find("{http://www.w3.org/2003/05/soap-envelope}Body")[0]
    check_golden("fault_action_not_supported.xml", fault)
