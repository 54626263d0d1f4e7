"""Replay every ITI-8 sample and every ITI-9 QBP sample (../shared/samples) over a real MLLP
connection, on the in-memory store and on the SQL store (SQLite, PostgreSQL), and check each
answer against the expected outcome of MANIFEST.tsv.

Where our answer departs from the manifest's, the expectation below says what we answer and why
(`DEVIATIONS`): the IHE TF, not OpenHIE's client-registry tests, is the reference for PIX.
"""

from __future__ import annotations

import csv

import hl7
import pytest

from pix import er7
from pix.hl7v2_service import Hl7v2Service
from pix.identities import MemoryCrossReferences, SqlCrossReferences
from pix.ins import INS_NIR_TEST
from pix.mllp_edge import MllpFactory
from pix.xref import Identifier
from pix_v2.v2_support import (
    DOMAINS,
    OHIE_NID,
    OHIE_TEST,
    OHIE_TEST_A,
    authority_table,
    ins_policy,
    mllp_client,
)
from reactor_support import listen, reactor, thread_pool
from support import need_shared

NIST_PID = "NIST-0001^^^&1.2.3.4.5.1000&ISO^PI"  # substituted for the template's $pid$

# file → (MSA-1, ERR-3 code or None, QAK-2 or None, ERR-2 location or None)
ITI8_EXPECTED = {
    "ans__PAMFR_ConsentementConsultation_NonOppositionAlimentation.hl7": ("AA", None),
    "ans__PAMFR_NonConsentementConsultation_NonOppositionAlimentation.hl7": ("AA", None),
    "ans__PAMFR_NonConsentementConsultation_OppositionAlimentation.hl7": ("AA", None),
    "ans__PAMFR_NonRecueillieConsentementConsultation_NonOppositionAlimentation.hl7": ("AA", None),
    "ans__PAMFR_NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation.hl7": ("AA", None),
    "ans__SGL_admission_A01.hl7": ("AA", None),
    # manifest: "AA-ignore or AR per config" — we answer AR 201 (hl7v2_service module doc)
    "ans__SGL_sortie_A03.hl7": ("AR", "201"),
    "ipf__hl7v2message.hl7": ("AA", None),  # bare PID-3: the source's default domain
    "ipf__iti8-a01-incomplete.hl7": ("AR", "100"),  # no PID
    "ipf__iti8-a40-iso-8859-1.hl7": ("AA", None),
    "ipf__iti8-a40.hl7": ("AA", None),
    "ipf__pixfeed_PIX_FEED_MERGE_Maximal_Request.hl7": ("AA", None),
    "ipf__pixfeed_PIX_FEED_REG_Maximal_Request.hl7": ("AA", None),
    "ipf__pixfeed_PIX_FEED_REV_Maximal_Request.hl7": ("AA", None),
    "ipf__pixsource_A01.hl7": ("AA", None),
    "ipf__pixsource_A01_with_BR.hl7": ("AA", None),
    "ipf__pixsource_A04.hl7": ("AA", None),
    "ipf__pixsource_A08.hl7": ("AA", None),
    "ipf__pixsource_A10.hl7": ("AR", "201"),  # not an ITI-8 trigger
    "ipf__pixsource_A40.hl7": ("AA", None),
    "nist__adt_A01-2.hl7": ("AA", None),
    "nist__adt_A01_template.hl7": ("AA", None),
}

OHIE_EXPECTED = {
    # (MSA-1, ERR-3, QAK-2, ERR-2)
    "ohie-cr__01_01_ADTA01.hl7": ("AE", "101", None, "PID^1^3"),  # CX.4 "&&": no authority
    "ohie-cr__02_01_ADTA01.hl7": ("AA", None, None, None),
    # DEVIATION (02_02, 02_04, 02_06, 05_03, 07_03, 09_04, 10_02): OpenHIE expects the queried
    # identifier back; ITI TF-2a §3.9.4.2.2.6 returns the *other* identifiers → NF when none.
    "ohie-cr__02_02_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__02_03_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__02_04_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__02_05_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__02_06_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__03_01_ADTA01.hl7": ("AE", "204", None, "PID^1^3"),  # unknown OID
    "ohie-cr__03_02_ADTA01.hl7": ("AE", "204", None, "PID^1^3"),  # unknown namespace
    "ohie-cr__04_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__04_02_ADTA01.hl7": ("AE", "204", None, "PID^1^3"),  # TEST_A fed by TEST_HARNESS_B
    "ohie-cr__05_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__05_02_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__05_03_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__06_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__06_02_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__06_03_QBPQ23.hl7": ("AA", None, "OK", None),  # → RJ-449 in TEST_A
    "ohie-cr__07_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__07_02_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__07_03_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__08_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__09_01_QBPQ23.hl7": ("AE", "204", "AE", "QPD^1^3^1^1"),  # not yet fed
    # OpenHIE writes QPD^1^3^4^1; ITI TF-2a §3.9.4.2.2.6 says QPD^1^3^1^4 (component 4)
    "ohie-cr__09_02_QBPQ23.hl7": ("AE", "204", "AE", "QPD^1^3^1^4"),
    "ohie-cr__09_03_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__09_04_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__10_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__10_02_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__10_03_QBPQ23.hl7": ("AE", "204", "AE", "QPD^1^4^1"),  # RANDOM in QPD-4
    "ohie-cr__10_04_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__11_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__12_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__13_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__13_02_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__14_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__16_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__16_02_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__16_04_ADTA40.hl7": ("AA", None, None, None),
    # DEVIATION: OpenHIE expects RJ-439 and the merged RJ-999; the subsumed id is no longer an
    # identifier (pix.identities: merged ids are answered by no query) and the queried id is
    # never returned → NF.
    "ohie-cr__16_05_QBPQ23.hl7": ("AA", None, "NF", None),
    "ohie-cr__16_06_QBPQ23.hl7": ("AE", "204", "AE", "QPD^1^3^1^1"),  # merged away
    "ohie-cr__17_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__17_02_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__17_03_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__17_04_ADTA40.hl7": ("AE", "204", None, "PID^1^3"),  # B merging inside TEST_A
    "ohie-cr__17_05_ADTA40.hl7": ("AE", "204", None, "MRG^1^1"),  # B merging a TEST_A id
    # DEVIATION: OpenHIE expects AE 204 (RJ-292 never fed in TEST_B); the store records a merge
    # of an unknown subsumed id for history and accepts it (pix.identities).
    "ohie-cr__17_06_ADTA40.hl7": ("AA", None, None, None),
    "ohie-cr__18_01_ADTA01.hl7": ("AA", None, None, None),
    "ohie-cr__18_02_ADTA01.hl7": ("AA", None, None, None),
    # DEVIATION: the sample's QPD has no QPD-3 (its identifier sits in QPD-2): AE 101.
    "ohie-cr__18_03_QBPQ23.hl7": ("AE", "101", "AE", "QPD^1^3^1^1"),
}


def manifest() -> dict[str, dict]:
    path = need_shared("samples", "MANIFEST.tsv")
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def sample(name: str) -> bytes:
    folder = "iti9" if "QBP" in name else "iti8"
    data = need_shared("samples", folder, name).read_bytes()
    return data.replace(b"$pid$", NIST_PID.encode())


def ordered_samples() -> list[str]:
    """Non-OpenHIE feeds first, then the OpenHIE cases in case/step order (feeds and queries
    interleaved as their test plans run them)."""
    return list(ITI8_EXPECTED) + sorted(OHIE_EXPECTED)


def answer_fields(answer: bytes) -> hl7.Message:
    h = er7.read_header(answer)
    return er7.parse(answer, h)


def check(name: str, request: bytes, answer: bytes) -> None:
    expected = ITI8_EXPECTED.get(name)
    if expected is not None:
        expected = expected + (None, None)
    else:
        expected = OHIE_EXPECTED[name]
    msa1, err3, qak2, err2 = expected
    req = er7.read_header(request)
    m = answer_fields(answer)
    msh, msa = m.first("MSH"), m.first("MSA")
    got = (m.value(msa, 1), m.value(m.first("ERR"), 3) or None)
    assert got[0] == msa1, f"{name}: MSA-1 {got} != {expected}: {answer!r}"
    assert got[1] == err3, f"{name}: ERR-3 {got} != {expected}: {answer!r}"
    assert m.value(msa, 2) == req.control_id, f"{name}: MSA-2 must echo MSH-10"
    assert m.raw_field(msh, 5) == req.sending_application and m.raw_field(msh, 6) == req.sending_facility
    assert m.raw_field(msh, 12) == req.version_field
    if req.message_code == "QBP":
        assert m.raw_field(msh, 9) == "RSP^K23^RSP_K23"
        assert m.value(m.first("QAK"), 2) == qak2
        assert str(m.first("QPD")) == str(er7.parse(request).first("QPD"))  # echoed
        assert (m.first("PID") is not None) == (qak2 == "OK")
    else:
        assert m.raw_field(msh, 9) == f"ACK^{req.trigger_event}^ACK"
    if err2 is not None:
        assert m.raw_field(m.first("ERR"), 2) == err2, f"{name}: ERR-2"


def test_expectations_cover_every_sample():
    rows = manifest()
    iti8 = {f.split("/", 1)[1] for f, r in rows.items() if r["transaction"] == "iti8"}
    qbp = {f.split("/", 1)[1] for f, r in rows.items() if r["transaction"] == "iti9" and "QBP" in f}
    assert iti8 | qbp == set(ITI8_EXPECTED) | set(OHIE_EXPECTED)
    # every "success (AA)" of the manifest that we do not answer AA is a listed deviation
    for f, r in rows.items():
        name = f.split("/", 1)[-1]
        if r["expected_outcome"].startswith("success (AA)"):
            assert ITI8_EXPECTED.get(name, ("AA",))[0] == "AA"


def replay(xref) -> dict[str, bytes]:
    service = Hl7v2Service(xref, authorities=authority_table())
    answers: dict[str, bytes] = {}
    with thread_pool() as pool:
        factory = MllpFactory(service, reactor=reactor(), threadpool=pool, max_message_bytes=1 << 20)
        with listen(factory) as port, mllp_client(port.getHost().port) as client:
            names = ordered_samples()
            # non-OpenHIE feeds pipelined in one write (answers must come back in order) ...
            head = [n for n in names if not n.startswith("ohie")]
            client.send_raw(b"".join(b"\x0b" + sample(n) + b"\x1c\r" for n in head))
            for n, a in zip(head, client.receive(len(head))):
                answers[n] = a
            # ... the OpenHIE steps one by one (a step depends on the previous ones)
            for n in names[len(head):]:
                answers[n] = client.request(sample(n))
    for n, a in answers.items():
        check(n, sample(n), a)
    return answers


def check_state(xref, answers: dict[str, bytes]) -> None:
    # ANS PAM-FR admission: the INS (INS-NIR-TEST) is known to the registry, cross-referenced
    ins = Identifier("279035121518989", INS_NIR_TEST)
    assert xref.is_known(ins.xds_cx())
    ipp = xref.query(ins, ("000897406",))
    assert [i.value for i in ipp] == ["000003"]
    # OpenHIE CR-06: RJ-449 (TEST_A) and NID-000345435 were cross-referenced by one feed
    m = answer_fields(answers["ohie-cr__06_03_QBPQ23.hl7"])
    pid3 = m.repetitions(m.first("PID"), 3)
    assert [(er7.component_of(r, 1), er7.component_of(r, 4, 1), er7.component_of(r, 4, 2)) for r in pid3] == [
        ("RJ-449", "TEST_A", OHIE_TEST_A)
    ]
    # rejected feeds stored nothing
    with pytest.raises(Exception):
        xref.query(Identifier("NFD-3049542-23", OHIE_TEST_A))
    assert xref.query(Identifier("NID-000345435", OHIE_NID)) == (Identifier("RJ-449", OHIE_TEST_A, "TEST_A", "PI"),)
    assert xref.query(Identifier("RJ-439", OHIE_TEST)) == ()


def test_replay_on_the_memory_store():
    xref = MemoryCrossReferences(DOMAINS, ins_policy())
    check_state(xref, replay(xref))


def test_replay_on_the_sql_store(engine):
    xref = SqlCrossReferences(engine, DOMAINS, ins_policy())
    check_state(xref, replay(xref))
