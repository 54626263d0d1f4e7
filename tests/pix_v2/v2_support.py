"""Shared configuration of the HL7 v2 PIX tests: the domains the replayed samples use."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager

from pix import er7
from pix.ins import INS_NIR_TEST, TEST_OIDS, InsPolicy
from pix.mllp import MllpDecoder, frame

# Domains of the samples (their OIDs as the samples give them). Where a sample names a domain by
# namespace only, the OID below is this test configuration's choice.
MPI = "2.16.840.1.113883.3.37.4.1.1.2.1.1"
HZLN = "2.16.840.1.113883.3.37.4.1.1.2.411.1"
PKLN = "2.16.840.1.113883.3.37.4.1.1.2.511.1"
KHKN = "2.16.840.1.113883.3.37.4.1.1.2.611.1"
CCC = "2.16.840.1.113883.3.37.4.1.1.2.711.1"
OHIE_TEST = "2.16.840.1.113883.3.72.5.9.1"  # given by OpenHIE CR-02
OHIE_TEST_A = "2.16.840.1.113883.3.72.5.9.2"  # chosen
OHIE_TEST_B = "2.16.840.1.113883.3.72.5.9.3"  # chosen
OHIE_NID = "2.16.840.1.113883.3.72.5.9.9"  # chosen (5.9.4 is OpenHIE's "unknown OID")
CHU_X = "000897406"  # ANS PAM-FR samples: IPP authority CHU-X&000897406

AUTHORITIES = (
    er7.AssigningAuthority(MPI, "MPI"),
    er7.AssigningAuthority(HZLN, "HZLN"),
    er7.AssigningAuthority(PKLN, "PKLN"),
    er7.AssigningAuthority(KHKN, "KHKN"),
    er7.AssigningAuthority(CCC, "CCC"),
    er7.AssigningAuthority("1.3.6.1.4.1.21367.2005.1.1", "HIMSS2005"),
    er7.AssigningAuthority("1.3.6.1.4.1.21367.2005.1.2", "XREF2005"),
    er7.AssigningAuthority("1.2.3.4.5.1000"),
    er7.AssigningAuthority("1.2.3.4.5.2002", "domain2"),
    er7.AssigningAuthority("1.2.3.4.666", "domain1"),
    er7.AssigningAuthority("1.2.3.4.5.1.1000.901.1.1.3.1"),
    er7.AssigningAuthority("2.16.840.1.113883.4.1", "SSN"),
    er7.AssigningAuthority(CHU_X, "CHU-X"),
    er7.AssigningAuthority(OHIE_TEST, "TEST"),
    er7.AssigningAuthority(OHIE_TEST_A, "TEST_A", frozenset({"TEST_HARNESS_A"})),
    er7.AssigningAuthority(OHIE_TEST_B, "TEST_B", frozenset({"TEST_HARNESS_B"})),
    er7.AssigningAuthority(OHIE_NID, "NID"),
)
DOMAINS = tuple(a.oid for a in AUTHORITIES)
# IPF's hl7v2message.hl7 sends a bare PID-3 (no CX.4) from SAP-ISH at HZL: that source's domain.
DEFAULT_BY_SOURCE = {"SAP-ISH": HZLN}


def authority_table() -> er7.AuthorityTable:
    return er7.AuthorityTable(AUTHORITIES, default_by_source=DEFAULT_BY_SOURCE)


def ins_policy() -> InsPolicy:
    return InsPolicy(accepted_oids=TEST_OIDS)  # the ANS samples carry INS-NIR-TEST


class MllpClient:
    """A blocking MLLP client for tests."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.decoder = MllpDecoder(1 << 24)
        self.pending: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: bytes) -> None:
        self.sock.sendall(frame(message))

    def receive(self, count: int = 1) -> list[bytes]:
        while len(self.pending) < count:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.pending += [e for e in self.decoder.feed(data) if isinstance(e, bytes)]
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def request(self, message: bytes) -> bytes:
        self.send(message)
        return self.receive(1)[0]

    def close(self) -> None:
        self.sock.close()


@contextmanager
def mllp_client(port: int):
    c = MllpClient(port)
    try:
        yield c
    finally:
        c.close()


class Recorder:
    """An ITI-10 consumer for tests: records what it receives, answers AA."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = threading.Event()

    def __call__(self, data: bytes) -> bytes:
        self.messages.append(data)
        self.arrived.set()
        return er7.ack(er7.read_header(data), "AA")


def a01(control_id: str, ipp: str, nir: str = "") -> bytes:
    """An ADT^A01 feeding an IPP of HZLN and, with `nir`, a qualified INS-NIR-TEST (PID-32 VALI)."""
    pid3 = f"{ipp}^^^HZLN&{HZLN}&ISO^PI"
    pid32 = ""
    if nir:
        pid3 += f"~{nir}^^^ASIP-SANTE-INS-NIR-TEST&{INS_NIR_TEST}&ISO^INS"
        pid32 = "|" * 24 + "VALI"
    return (
        f"MSH|^~\\&|SRC|FAC|PIX|XREF|20240101||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
        "EVN||20240101\r"
        f"PID|1||{pid3}||DOE^JOHN||19800101|M{pid32}\r"
    ).encode()
