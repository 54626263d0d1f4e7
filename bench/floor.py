"""The floor: a bare Twisted resource that parses the request with lxml and answers canned bytes.

Run as its own process (`python -m bench.floor --port 0`); it prints `LISTENING <port>` once it
listens on 127.0.0.1. ITI-42 gets a RegistryResponse Success; ITI-18 gets an AdhocQueryResponse
with the same 200 stored fragments the data set holds for a patient, so the floor carries the
same response bytes as Carnet. The request's MessageID is echoed in RelatesTo.
"""

from __future__ import annotations

import argparse
import sys

from lxml import etree
from twisted.internet import reactor
from twisted.web import resource, server

from bench import messages as M
from registry import constants as C

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_RELATES = "urn:uuid:00000000-0000-4000-8000-000000000000"


class Floor(resource.Resource):
    isLeaf = True

    def __init__(self, entries_per_patient: int) -> None:
        super().__init__()
        from bench.dataset import sample_fragments

        self.canned = {
            C.ACTION_ITI42: M.Template(M.registry_response(_RELATES), [_RELATES]),
            C.ACTION_ITI18: M.Template(
                M.adhoc_query_response(_RELATES, sample_fragments(entries_per_patient)), [_RELATES]
            ),
        }

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/xml")
        return b"<definitions/>"

    def render_POST(self, request: server.Request) -> bytes:
        doc = etree.fromstring(request.content.read(), PARSER)
        header = doc.find(f"{{{M.NS_SOAP12}}}Header")
        action = header.findtext(f"{{{M.NS_WSA}}}Action").strip()
        message_id = header.findtext(f"{{{M.NS_WSA}}}MessageID").strip()
        request.setHeader(b"content-type", M.SOAP12_CONTENT_TYPE.encode())
        return self.canned[action].render({_RELATES: M.xml_safe(message_id)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--entries-per-patient", type=int, default=200)
    args = ap.parse_args(argv)
    site = server.Site(Floor(args.entries_per_patient))
    site.noisy = False
    port = reactor.listenTCP(args.port, site, interface="127.0.0.1")
    print(f"LISTENING {port.getHost().port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
