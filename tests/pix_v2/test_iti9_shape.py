"""ITI-9 RSP^K23 compared with IPF's MESA-derived responses (samples/iti9/ipf__pixquery_*)."""

from __future__ import annotations

import pytest

from pix import er7
from pix.hl7v2_service import Hl7v2Service
from pix.identities import MemoryCrossReferences
from pix.xref import Identifier, PatientRecord
from pix_v2.v2_support import DOMAINS, HZLN, PKLN, authority_table, ins_policy
from support import need_shared


def qbp_from_response(response: bytes) -> bytes:
    """The QBP^Q23 a response answers: its QPD, MSA-2 as MSH-10."""
    m = er7.parse(response)
    return (
        "MSH|^~\\&|MESA_PIX_CLIENT|MESA_DEPARTMENT|MESA_XREF|XYZ_HOSPITAL|20081120||QBP^Q23^QBP_Q21|"
        f"{m.value(m.first('MSA'), 2)}|P|2.5\r{m.first('QPD')}\rRCP|I\r"
    ).encode()


@pytest.fixture
def service():
    xref = MemoryCrossReferences(DOMAINS, ins_policy())
    # MESA 10501: 79471 (HZLN) and 78912 (PKLN) are one person; 79234 (HZLN) is alone
    xref.feed(PatientRecord((Identifier("79471", HZLN, "HZLN", "PI"), Identifier("78912", PKLN, "PKLN", "PI"))))
    xref.feed(PatientRecord((Identifier("79234", HZLN, "HZLN", "PI"),)))
    return Hl7v2Service(xref, authorities=authority_table())


def segments(data: bytes) -> list[str]:
    return [s for s in data.decode().replace("\n", "\r").split("\r") if s.strip()]


@pytest.mark.parametrize("name", ["ok-1", "ok-3", "nf-1", "nf-2", "err-1"])
def test_same_answer_as_mesa(service, name):
    reference = need_shared("samples", "iti9", f"ipf__pixquery_{name}_Response.hl7").read_bytes()
    ours = service.handle(qbp_from_response(reference))
    ref_segs, our_segs = segments(reference), segments(ours)
    assert [s[:3] for s in our_segs] == [s[:3] for s in ref_segs]
    # everything but MSH is the same field for field, except ERR's texts
    for ref, got in zip(ref_segs[1:], our_segs[1:]):
        if ref.startswith("ERR"):
            r, g = ref.split("|"), got.split("|")
            assert (g[2], g[3].split("^")[0], g[4]) == (r[2], r[3], r[4])
        elif ref.startswith("MSA"):  # MSA-3 (text) is ours
            assert got.split("|")[:3] == ref.split("|")[:3]
        else:
            assert got == ref


def test_queried_identifier_is_not_returned_even_when_its_domain_is_requested(service):
    """MESA's ok-2/ok-4 return the queried id when QPD-4 names its domain; ITI TF-2a
    §3.9.4.2.2.6 returns the other identifiers only."""
    reference = need_shared("samples", "iti9", "ipf__pixquery_ok-2_Response.hl7").read_bytes()
    m = er7.parse(service.handle(qbp_from_response(reference)))
    # ok-2 asks for KHKN (known, empty here), HZLN's OID and PKLN
    pid3 = m.repetitions(m.first("PID"), 3)
    assert [er7.component_of(r, 1) for r in pid3] == ["78912"]


def test_unknown_domains_in_qpd4_each_located(service):
    q = (b"MSH|^~\\&|C|D|X|H|2010||QBP^Q23^QBP_Q21|8504|P|2.5\r"
         b"QPD|IHE PIX Query|Q1|79471^^^HZLN^PI|^^^NONEXISTING~^^^&1.2.3.4&ISO~^^^PKLN\rRCP|I\r")
    m = er7.parse(service.handle(q))
    assert m.value(m.first("MSA"), 1) == "AE" and m.value(m.first("QAK"), 2) == "AE"
    assert m.raw_field(m.first("ERR"), 2) == "QPD^1^4^1~QPD^1^4^2"
    assert m.value(m.first("ERR"), 3) == "204"
