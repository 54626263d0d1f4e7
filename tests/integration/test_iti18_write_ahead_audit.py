"""ITI-18's write-ahead audit on a whole running Carnet (SQLite and PostgreSQL): the event of a
successful query is spooled held while the SQL runs (atna/spool.py "Held events"). The built-in ARR
receives exactly one event per query, with the outcome the query actually had: success (0) for a
query that found nothing, minor failure (4) for one refused after the event was spooled (a missing
required parameter is found by the query's execution, not by the request's parsing)."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
import urllib.request

from lxml import etree

from carnet_support import running_carnet
from registry import constants as C
from support import post_soap, registry_error_codes, soap_body, soap_envelope
from xds_messages import RIM, SELF5, slot


def _query(carnet, *slots) -> etree._Element:
    body = etree.Element(f"{{{C.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    etree.SubElement(body, f"{{{C.NS_QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    q = etree.SubElement(body, RIM + "AdhocQuery", id=C.SQ_FIND_DOCUMENTS)
    for s in slots:
        q.append(s)
    _, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(body), C.ACTION_ITI18))
    return soap_body(env)


def _iti18_events(carnet) -> list[dict]:
    with urllib.request.urlopen(f"{carnet.base_url}/atna/AuditEvent?subtype=ITI-18&_count=100", timeout=30) as r:
        bundle = json.loads(r.read())
    return [e["resource"] for e in bundle.get("entry", [])]


def test_each_query_is_audited_once_with_its_actual_outcome(engine, tmp_path):
    with running_carnet(engine, tmp_path, real_audit=True) as carnet:
        carnet.store.add_patient(SELF5)
        patient = slot("$XDSDocumentEntryPatientId", f"'{SELF5}'")
        found = _query(carnet, patient, slot("$XDSDocumentEntryStatus", f"('{C.STATUS_APPROVED}')"))
        assert found.get("status") == C.RESPONSE_SUCCESS
        refused = _query(carnet, slot("$XDSDocumentEntryPatientId", f"'{SELF5}'"))  # no $XDSDocumentEntryStatus
        assert refused.get("status") == C.RESPONSE_FAILURE and registry_error_codes(refused)

        deadline = time.monotonic() + 30
        while len(_iti18_events(carnet)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a third event (the expected one of the refused query) would be there by now
        events = _iti18_events(carnet)
        assert sorted(e.get("outcome") for e in events) == ["0", "4"], [e.get("outcome") for e in events]
        # and the spool holds nothing back
        spool = sqlite3.connect(tmp_path / "audit-spool.db")
        try:
            assert spool.execute("SELECT COUNT(*) FROM spooled_event WHERE held = 1").fetchone()[0] == 0
        finally:
            spool.close()
