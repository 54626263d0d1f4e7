"""ATNA for the repository on a whole Carnet with its real audit pipeline (durable spool, built-in
ARR): ITI-41 is audited by the repository (ITI-41 import), the registry (ITI-42 import) and the
repository as Document Source (ITI-42 export), all spooled together before the answer; ITI-43 by
the repository (export), naming each document with its repository and home community."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

from carnet_support import running_carnet
from registry import constants as C
from repository_wire.xds_wire import INS, REPO_UID, Doc, assert_success, new_oid, pnr, provide, retrieve


@pytest.fixture
def audited_carnet(engine, tmp_path):
    with running_carnet(engine, tmp_path, real_audit=True, repository_unique_id=REPO_UID,
                        home_community_id="urn:oid:1.2.250.1.999.9") as c:
        yield c


def _events(carnet, **params) -> list[dict]:
    url = f"{carnet.base_url}/atna/AuditEvent?{urllib.parse.urlencode(params)}&_count=100"
    with urllib.request.urlopen(url, timeout=30) as r:
        return [e["resource"] for e in json.loads(r.read()).get("entry", [])]


def _key(event: dict) -> tuple[str, str, str]:
    return (next(c["code"] for c in event["subtype"]), event["type"]["code"], event["action"])


def test_provide_and_retrieve_are_audited_by_each_actor(audited_carnet):
    carnet = audited_carnet
    carnet.store.add_patient(INS)
    uid = new_oid()
    assert_success(provide(carnet.repository_url, pnr(INS, [Doc(b"<ClinicalDocument/>", uid)])))
    got = retrieve(carnet.repository_url, [(REPO_UID, uid)], home="urn:oid:1.2.250.1.999.9")
    assert got.status == C.RESPONSE_SUCCESS

    wanted = {("ITI-41", "110107", "C"), ("ITI-42", "110107", "C"), ("ITI-42", "110106", "R"),
              ("ITI-43", "110106", "R")}
    deadline = time.monotonic() + 30
    events = _events(carnet, patient=INS)
    while not wanted <= {_key(e) for e in events} and time.monotonic() < deadline:
        time.sleep(0.2)
        events = _events(carnet, patient=INS)
    assert wanted <= {_key(e) for e in events}, sorted(_key(e) for e in events)
    assert all(e["outcome"] == "0" for e in events)
    retrieve_event = next(e for e in events if _key(e)[0] == "ITI-43")
    documents = [ent for ent in retrieve_event["entity"] if ent.get("what", {}).get("identifier", {}).get("value") == uid]
    assert documents, retrieve_event["entity"]


def test_an_iti41_body_that_is_not_a_provide_and_register_request_is_a_sender_fault_and_audited(engine, tmp_path):
    from support import SOAP_NS, post_soap, soap_envelope

    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as carnet:
        body = b'<x:SomethingElse xmlns:x="urn:example:other"/>'
        status, _, root = post_soap(carnet.repository_url, soap_envelope(body, "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"))
        assert status == 400
        assert root.find(f".//{{{SOAP_NS}}}Fault/{{{SOAP_NS}}}Code/{{{SOAP_NS}}}Value").text.endswith("Sender")
        [event] = carnet.audit.events
        assert (event.transaction, event.outcome, event.error_codes) == ("ITI-41", "minor-failure", ("env:Sender",))

