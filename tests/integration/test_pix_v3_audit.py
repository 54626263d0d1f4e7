"""ITI-44 and ITI-45 on a whole Carnet with its real audit pipeline: IHE's PIXV3 add, revise and
merge examples then the query example, each audited by the PIX Manager and found in the built-in
ARR (ITI-81); the merge as two events (D of the subsumed id, U of the surviving one)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from carnet_support import running_carnet
from pix_v3.pixv3_support import DOMAINS, PixService, ack_of, action_of, sample_bytes


def _events(carnet) -> list[dict]:
    with urllib.request.urlopen(f"{carnet.base_url}/atna/AuditEvent?_count=200", timeout=30) as r:
        return [e["resource"] for e in json.loads(r.read()).get("entry", [])]


def _iti(event: dict) -> str:
    return next(c["code"] for c in event.get("subtype", []))


def test_iti44_and_iti45_reach_the_arr(engine, tmp_path):
    with running_carnet(engine, tmp_path, real_audit=True, pix_domains=tuple(sorted(DOMAINS))) as carnet:
        pix = PixService(carnet.base_url + "/pix/v3", carnet.app.xref, carnet.app.pix_v3)
        for folder, name in (("iti44", "ihe__01_PatientRegistryRecordAdded1.xml"),
                             ("iti44", "ihe__03_PatientRegistryRecordAdded2.xml"),
                             ("iti44", "ihe__04_PatientRegistryRecordRevised2.xml"),
                             ("iti44", "ihe__05_PatientRegistryDuplicatesResolved.xml"),
                             ("iti45", "ihe__06_PIXQuery1.xml")):
            data = sample_bytes(folder, name)
            _, answer = pix.call(action_of(data), data)
            assert ack_of(answer).type_code == "AA", name

        deadline = time.monotonic() + 30
        events = _events(carnet)
        while len([e for e in events if _iti(e) in ("ITI-44", "ITI-45")]) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
            events = _events(carnet)
    actions = sorted(e["action"] for e in events if _iti(e) == "ITI-44")
    assert actions == ["C", "C", "D", "U", "U"], actions  # two adds, a revise, the merge as D + U
    queries = [e for e in events if _iti(e) == "ITI-45"]
    assert len(queries) == 1 and queries[0]["outcome"] == "0"
    patients = [ent for ent in queries[0]["entity"] if ent.get("type", {}).get("code") == "1"]
    assert patients, queries[0]["entity"]
