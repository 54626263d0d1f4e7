"""ITI-10 and ITI-46 update notifications sent by a whole Carnet (configured `[[pix.consumers]]`,
one over MLLP, one over SOAP) are audited by the PIX Manager once each consumer has answered, and
found in the built-in ARR. An ITI-8 feed reaches both kinds of consumer (a PIX Manager notifies every
consumer of a change, whichever feed made it)."""

from __future__ import annotations

import json
import time
import urllib.request

from carnet_support import running_carnet
from pix.mllp_edge import MllpFactory
from pix_v2.v2_support import HZLN, Recorder, a01, mllp_client
from pix_v3.pixv3_support import ConsumerEndpoint
from reactor_support import listen, reactor, serve, thread_pool


def _iti(event: dict) -> str:
    return next(c["code"] for c in event.get("subtype", []))


def test_iti10_and_iti46_notifications_are_audited(engine, tmp_path):
    mllp_consumer, soap_consumer = Recorder(), ConsumerEndpoint()
    with thread_pool() as pool, listen(MllpFactory(mllp_consumer, reactor=reactor(), threadpool=pool)) as port, \
            serve(soap_consumer) as soap_url:
        consumers = (
            {"protocol": "mllp", "host": "127.0.0.1", "port": port.getHost().port, "domains": [HZLN]},
            {"protocol": "soap", "url": soap_url + "/", "domains": [HZLN]},
        )
        with running_carnet(engine, tmp_path, real_audit=True, mllp=True, pix_domains=(HZLN,),
                            pix_authorities=({"oid": HZLN, "namespace": "HZLN"},),
                            pix_consumers=consumers) as carnet:
            with mllp_client(carnet.mllp_port) as c:
                assert b"MSA|AA|N-9" in c.request(a01("N-9", "999"))
            assert mllp_consumer.arrived.wait(30)
            deadline = time.monotonic() + 30
            events: list[dict] = []
            while time.monotonic() < deadline:
                with urllib.request.urlopen(f"{carnet.base_url}/atna/AuditEvent?_count=100", timeout=30) as r:
                    events = [e["resource"] for e in json.loads(r.read()).get("entry", [])]
                if {"ITI-10", "ITI-46"} <= {_iti(e) for e in events}:
                    break
                time.sleep(0.2)
    sent = {_iti(e): e for e in events if _iti(e) in ("ITI-10", "ITI-46")}
    assert set(sent) == {"ITI-10", "ITI-46"}, sorted(_iti(e) for e in events)
    assert all(e["outcome"] == "0" for e in sent.values())
    assert len(soap_consumer.received) == 1
