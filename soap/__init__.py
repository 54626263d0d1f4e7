"""SOAP 1.2 wire layer: hardened XML parser (xmlparse), envelopes/WS-Addressing/faults (envelope),
MTOM/XOP (mtom), WSDL generation (wsdl), operations (operation) — all sans-I/O — and the one
Twisted module, the HTTP edge (edge)."""
