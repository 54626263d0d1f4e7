"""A Carnet node audits to a remote Audit Record Repository over syslog TLS with mutual
authentication (ITI-20 over RFC 5425, ITI-19): `[[atna.destinations]]` with the node's `[tls]`
certificate; the remote ARR (another ArrStore behind a TLS receiver that requires client
certificates) stores the node's events."""

from __future__ import annotations

import time

from atna.arr.receiver import BatchedIngest, listen_tls
from atna.arr.store import ArrStore
from carnet_support import running_carnet
from config.tls import TlsSettings, server_context_factory
from pki_support import write_pki
from reactor_support import call_in_reactor, reactor, thread_pool
from registry.db import create_schema, make_engine
from xds_messages import SELF5


def test_events_reach_a_remote_arr_over_mutual_tls(engine, tmp_path):
    pki = write_pki(tmp_path / "pki")
    remote_engine = make_engine(f"sqlite:///{tmp_path / 'remote-arr.db'}")
    create_schema(remote_engine)
    remote = ArrStore(remote_engine)
    refused = []
    with thread_pool() as pool:
        ingest = BatchedIngest(remote, reactor=reactor(), threadpool=pool)
        creator = server_context_factory(
            TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle), on_failure=refused.append)
        port = call_in_reactor(lambda: listen_tls(reactor(), ingest, creator, port=0, interface="127.0.0.1"))
        try:
            with running_carnet(
                engine, tmp_path / "node", real_audit=True,
                tls_certificate=pki.client.certificate, tls_private_key=pki.client.private_key,
                tls_ca_bundle=pki.ca_bundle, tls_verify_server_hostname=False,
                audit_destinations=({"transport": "tls", "host": "127.0.0.1", "port": port.getHost().port},),
            ) as carnet:
                carnet.store.add_patient(SELF5)
                app = carnet.app
                from registry.ports import AuditRecord, TransactionContext

                for n in range(5):
                    app.audit.record(AuditRecord(
                        "ITI-18", "success", TransactionContext("ITI-18", remote_host="127.0.0.1",
                                                                endpoint=carnet.registry_url),
                        patient_ids=(SELF5,), query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
                        query_body=b"<query/>",
                    ))
                deadline = time.monotonic() + 30
                while remote.count() < 5 and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            call_in_reactor(port.stopListening)
            call_in_reactor(ingest.stop)
    assert remote.count() == 5
    assert refused == []
    remote_engine.dispose()
