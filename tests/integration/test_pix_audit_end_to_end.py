"""Issues 4 and 5 end to end, on a whole running Carnet (SQLite and PostgreSQL):

feed two patients with ITI-8 over MLLP (an IPP and an INS each), register a document for the
first INS with ITI-42, merge the first INS into the second with ADT^A40, then ITI-18 under the
surviving INS finds the document (its patientId rewritten), ITI-42 for the subsumed INS is
refused with XDSUnknownPatientId, and ITI-9 answers the IPP's cross-references. Every one of those
transactions reaches the built-in Audit Record Repository through the durable spool, where ITI-81
and the patient's access history find them.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from lxml import etree

from carnet_support import running_carnet
from pix.ins import INS_NIR_TEST, with_key
from pix.mllp import MllpDecoder, frame
from registry import constants as C
from support import need_shared, post_soap, registry_error_codes, soap_body, soap_envelope
from xds_messages import RIM, slot, valid_submission

IPP_DOMAIN = "1.2.250.1.999.1.1"
NIR_A = with_key("1840575123456")  # 13 characters + key
NIR_B = with_key("2910275123987")
INS_A = f"{NIR_A}^^^&{INS_NIR_TEST}&ISO"
INS_B = f"{NIR_B}^^^&{INS_NIR_TEST}&ISO"


def _adt(event: str, control_id: str, pid3: str, *, mrg: str | None = None) -> bytes:
    segments = [
        f"MSH|^~\\&|HIS_A|HOPITAL_A|CARNET|CARNET|20261123101500||ADT^{event}^ADT_{'A39' if event == 'A40' else 'A01'}"
        f"|{control_id}|P|2.5|||||FRA|UNICODE UTF-8",
        f"EVN||20261123101500",
        f"PID|||{pid3}||DUPONT^JEAN^^^^^L||19840512|M||||||||||||||||||||||||VALI",
    ]
    if mrg:
        segments.append(f"MRG|{mrg}")
    else:
        segments.append("PV1||N")
    return "\r".join(segments).encode() + b"\r"


def _qbp(control_id: str, ipp: str) -> bytes:
    return (
        f"MSH|^~\\&|HIS_A|HOPITAL_A|CARNET|CARNET|20261123101600||QBP^Q23^QBP_Q21|{control_id}|P|2.5\r"
        f"QPD|IHE PIX Query|Q-{control_id}|{ipp}^^^&{IPP_DOMAIN}&ISO\r"
        f"RCP|I\r"
    ).encode()


class _Mllp:
    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.decoder = MllpDecoder(1 << 20)

    def request(self, message: bytes) -> list[list[str]]:
        self.sock.sendall(frame(message))
        while True:
            data = self.sock.recv(65536)
            assert data, "the MLLP connection closed"
            got = [m for m in self.decoder.feed(data) if isinstance(m, bytes)]
            if got:
                text = got[0].decode("utf-8")
                return [seg.split("|") for seg in text.replace("\n", "\r").split("\r") if seg]

    def close(self) -> None:
        self.sock.close()


def _segment(answer: list[list[str]], name: str) -> list[str]:
    return next(s for s in answer if s[0] == name)


def _submission_for(cx: str) -> etree._Element:
    root = valid_submission()
    for ei in root.iter(RIM + "ExternalIdentifier"):
        if ei.get("identificationScheme") in (C.DE_PATIENT_ID, C.SS_PATIENT_ID):
            ei.set("value", cx)
    return root


def _register(carnet, root) -> list[str]:
    _, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(root), C.ACTION_ITI42))
    response = soap_body(env)
    return [e for e in registry_error_codes(response)]


def _find_documents(carnet, cx: str) -> etree._Element:
    body = etree.Element(f"{{{C.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    etree.SubElement(body, f"{{{C.NS_QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    q = etree.SubElement(body, RIM + "AdhocQuery", id=C.SQ_FIND_DOCUMENTS)
    q.append(slot("$XDSDocumentEntryPatientId", f"'{cx}'"))
    q.append(slot("$XDSDocumentEntryStatus", f"('{C.STATUS_APPROVED}')"))
    _, _, env = post_soap(carnet.registry_url, soap_envelope(etree.tostring(body), C.ACTION_ITI18))
    return soap_body(env)


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def _audit_events(carnet, **params) -> list[dict]:
    query = "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in params.items())
    bundle = _get_json(f"{carnet.base_url}/atna/AuditEvent?{query}&_count=1000")
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [e["resource"] for e in bundle.get("entry", [])]


def _wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _subtypes(events: list[dict]) -> set[str]:
    return {c.get("code") for e in events for c in e.get("subtype", [])}


@pytest.fixture
def carnet(engine, tmp_path):
    need_shared("samples", "iti42")
    with running_carnet(engine, tmp_path, real_audit=True, mllp=True, pix_domains=(IPP_DOMAIN,),
                        pix_authorities=({"oid": IPP_DOMAIN, "namespace": "HOPITAL_A"},)) as c:
        yield c


def test_feed_register_merge_query_and_every_step_audited(carnet):
    mllp = _Mllp(carnet.mllp_port)
    try:
        # ITI-8: two patients, each an IPP and a qualified INS (PID-32 VALI)
        for n, (ipp, nir) in enumerate((("IPP-A", NIR_A), ("IPP-B", NIR_B))):
            ack = mllp.request(_adt("A01", f"feed-{n}", f"{ipp}^^^HOPITAL_A&{IPP_DOMAIN}&ISO^PI~"
                                                       f"{nir}^^^&{INS_NIR_TEST}&ISO^NH"))
            assert _segment(ack, "MSA")[1:3] == ["AA", f"feed-{n}"]

        # ITI-42 for the first INS: known now
        assert _register(carnet, _submission_for(INS_A)) == []
        found = _find_documents(carnet, INS_A)
        assert len(found.findall(f".//{RIM}ExtrinsicObject")) == 1

        # ADT^A40: INS_A is merged into INS_B
        ack = mllp.request(_adt("A40", "merge-1", f"{NIR_B}^^^&{INS_NIR_TEST}&ISO^NH",
                                mrg=f"{NIR_A}^^^&{INS_NIR_TEST}&ISO^NH"))
        assert _segment(ack, "MSA")[1:3] == ["AA", "merge-1"]

        # ITI TF-2a §3.8.4.2.3: the entries are answered under the surviving id ...
        found = _find_documents(carnet, INS_B)
        entries = found.findall(f".//{RIM}ExtrinsicObject")
        assert len(entries) == 1
        pids = [ei.get("value") for ei in entries[0].iter(RIM + "ExternalIdentifier")
                if ei.get("identificationScheme") == C.DE_PATIENT_ID]
        assert pids == [INS_B]
        assert _find_documents(carnet, INS_A).findall(f".//{RIM}ExtrinsicObject") == []
        # ... and a submission for the subsumed id is refused
        assert _register(carnet, _submission_for(INS_A)) == ["XDSUnknownPatientId"]

        # ITI-9: the IPP of the first patient now cross-references the surviving INS
        rsp = mllp.request(_qbp("query-1", "IPP-A"))
        assert _segment(rsp, "MSA")[1] == "AA" and _segment(rsp, "QAK")[2] == "OK"
        assert f"{NIR_B}^^^" in _segment(rsp, "PID")[3]
    finally:
        mllp.close()

    # ATNA: every transaction reached the built-in ARR through the spool (ITI-81 finds them)
    def audited():
        events = _audit_events(carnet)
        wanted = {"ITI-8", "ITI-42", "ITI-18", "ITI-9"}
        return events if wanted <= _subtypes(events) else None

    events = _wait_for(audited)
    assert events, f"not every transaction was audited: {_subtypes(_audit_events(carnet))}"
    # the feeds are creations; the A40 is audited as two events: D of INS_A, U of INS_B
    iti8_actions = sorted(e.get("action") for e in events if "ITI-8" in _subtypes([e]))
    assert iti8_actions == ["C", "C", "D", "U"], iti8_actions
    failures = [e for e in events if e.get("outcome") not in (None, "0")
                and any(c.get("code") == "ITI-42" for c in e.get("subtype", []))]
    assert failures, "the refused ITI-42 is audited as a failure"

    # the spool's state is visible in the metrics (Prometheus text): drained into the local ARR
    with urllib.request.urlopen(f"{carnet.base_url}/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        metrics = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if line and line[0] != "#")
    assert float(metrics["carnet_audit_spool_appended"]) >= 10
    assert float(metrics['carnet_audit_spool_delivered{destination="local-arr"}']) >= 10
    assert float(metrics["carnet_mllp_answered"]) == 4  # two feeds, the merge, the query
    assert "carnet_audit_spool_depth" in metrics and "carnet_audit_spool_max_events" in metrics

    # each patient's access history lists what was done under its id (events keep the id they
    # were recorded under: the registration of INS_A, before and after the merge, and the query
    # made for INS_B)
    def history(cx: str) -> list[tuple[str, str]]:
        got = _get_json(f"{carnet.base_url}/atna/history/{urllib.parse.quote(cx)}")
        return sorted((t["code"], h["outcome"]) for h in got["entries"] for t in h["transaction"])

    assert ("ITI-18", "success") in history(INS_B)
    assert {("ITI-42", "success"), ("ITI-42", "minor-failure")} <= set(history(INS_A))



