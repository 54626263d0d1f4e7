"""A running ARR for the wire tests: TLS (mutual auth), TCP and UDP syslog listeners and the
HTTP resources, on 127.0.0.1 and free ports, over the `engine` fixture (SQLite and PostgreSQL).
Everything is stopped at the end of the test."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from atna.arr.http import atna_resource
from atna.arr.receiver import BatchedIngest, listen_tcp, listen_tls, listen_udp
from atna.arr.store import ArrStore
from atna_arr.arr_support import Pki, make_pki, server_context
from reactor_support import call_in_reactor, reactor, serve, thread_pool
from support import wait_until


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


@dataclass
class RunningArr:
    store: ArrStore
    ingest: BatchedIngest
    tls_port: int
    tcp_port: int
    udp_port: int
    base_url: str  # http://127.0.0.1:port/atna

    def settle(self, received: int) -> None:
        """Wait until `received` messages arrived and everything received is stored."""
        wait_until(lambda: self.ingest.counters.received >= received, what=f"{received} messages received")
        call_in_reactor(self.ingest.when_idle)

    def get(self, path: str) -> tuple[int, str, Any]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=30) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), json.loads(err.read())


@pytest.fixture
def arr(engine, pki):
    store = ArrStore(engine)
    with thread_pool(max_threads=4, name="arr-test") as pool:
        ingest = BatchedIngest(store, reactor=reactor(), threadpool=pool, max_batch=50, max_delay=0.01)
        ports = []
        try:
            ports.append(call_in_reactor(lambda: listen_tls(reactor(), ingest, server_context(pki), port=0,
                                                            interface="127.0.0.1")))
            ports.append(call_in_reactor(lambda: listen_tcp(reactor(), ingest, port=0)))
            ports.append(call_in_reactor(lambda: listen_udp(reactor(), ingest, port=0, interface="127.0.0.1")))
            root = _root(atna_resource(store, reactor=reactor(), threadpool=pool))
            with serve(root) as base:
                yield RunningArr(store, ingest, *(p.getHost().port for p in ports), base + "/atna")
        finally:
            for p in ports:
                call_in_reactor(p.stopListening)
            call_in_reactor(ingest.stop)


def _root(atna):
    from twisted.web.resource import Resource

    root = Resource()
    root.putChild(b"atna", atna)
    return root
