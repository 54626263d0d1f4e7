"""Pipelined messages handled as a batch (Hl7v2Service.handle_batch, what the MLLP edge hands
over): consecutive ITI-8 feeds share one database transaction, yet each message keeps its own
outcome and ACK — a bad message in the middle gets its AE and nothing of it is stored, the
others are stored and get AA — and a query sees every feed sent before it on the connection.
On SQLite and PostgreSQL (the `engine` fixture), over the service and over a real socket."""

from __future__ import annotations

from pix import er7
from pix.hl7v2_service import Hl7v2Service
from pix.identities import SqlCrossReferences
from pix.ins import INS_NIR_TEST, with_key
from pix.mllp_edge import MllpFactory
from pix.xref import Identifier
from pix_core.backends import refuse_identifier
from pix_v2.v2_support import DOMAINS, HZLN, a01, authority_table, ins_policy, mllp_client
from reactor_support import listen, reactor, thread_pool

NIR_1 = with_key("1850275123001")
NIR_2 = with_key("2910269045002")
BAD_NIR = NIR_2[:-2] + ("01" if NIR_2[-2:] != "01" else "02")  # wrong control key





def qbp(control_id: str, ipp: str) -> bytes:
    return (
        f"MSH|^~\\&|SRC|FAC|PIX|XREF|20240101||QBP^Q23^QBP_Q21|{control_id}|P|2.5\r"
        f"QPD|IHE PIX Query|Q-{control_id}|{ipp}^^^HZLN&{HZLN}&ISO\r"
        "RCP|I\r"
    ).encode()


def answer(data: bytes) -> dict:
    m = er7.parse(data)
    msa, err, qak, pid = m.first("MSA"), m.first("ERR"), m.first("QAK"), m.first("PID")
    return {
        "code": m.value(msa, 1),
        "control": m.value(msa, 2),
        "error": m.value(err, 3) if err is not None else "",
        "qak": m.value(qak, 2) if qak is not None else "",
        "ids": [er7.component_of(r, 1) for r in m.repetitions(pid, 3)] if pid is not None else [],
    }


def service(engine) -> tuple[SqlCrossReferences, Hl7v2Service]:
    xref = SqlCrossReferences(engine, DOMAINS, ins_policy())
    return xref, Hl7v2Service(xref, authorities=authority_table())


def test_a_bad_feed_in_the_middle_of_a_batch_gets_its_ae_alone(engine):
    xref, svc = service(engine)
    answers = [answer(a) for a in svc.handle_batch([
        a01("C1", "IPP-1", NIR_1),
        a01("C2", "IPP-2", BAD_NIR),  # an INS with a wrong key: AE, nothing stored
        a01("C3", "IPP-3"),
        qbp("C4", "IPP-1"),  # sees the feed two messages before
        a01("C5", "IPP-5", NIR_1),  # after the query: a new run of feeds
        qbp("C6", "IPP-5"),
    ])]
    assert [a["control"] for a in answers] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert [a["code"] for a in answers] == ["AA", "AE", "AA", "AA", "AA", "AA"]
    assert answers[1]["error"] == "102"
    assert (answers[3]["qak"], answers[3]["ids"]) == ("OK", [NIR_1])
    assert (answers[5]["qak"], sorted(answers[5]["ids"])) == ("OK", sorted(["IPP-1", NIR_1]))
    assert xref.status(Identifier("IPP-1", HZLN)) == "active"
    assert xref.status(Identifier("IPP-3", HZLN)) == "active"
    assert xref.status(Identifier("IPP-2", HZLN)) is None
    assert xref.status(Identifier(BAD_NIR, INS_NIR_TEST)) is None
    assert xref.is_known(Identifier(NIR_1, INS_NIR_TEST).xds_cx())


def test_a_database_failure_in_the_middle_of_a_batch_is_ae_207_for_that_message_only(engine):
    refuse_identifier(engine, "REFUSED")
    xref, svc = service(engine)
    answers = [answer(a) for a in svc.handle_batch([
        a01("C1", "IPP-1", NIR_1),
        a01("C2", "REFUSED", NIR_2),  # the database refuses it (InfrastructureError → AE 207)
        a01("C3", "IPP-3"),
    ])]
    assert [(a["control"], a["code"], a["error"]) for a in answers] == [
        ("C1", "AA", ""), ("C2", "AE", "207"), ("C3", "AA", ""),
    ]
    assert xref.status(Identifier("IPP-1", HZLN)) == "active"
    assert xref.status(Identifier("IPP-3", HZLN)) == "active"
    assert xref.status(Identifier("REFUSED", HZLN)) is None
    assert xref.status(Identifier(NIR_2, INS_NIR_TEST)) is None
    assert not xref.is_known(Identifier(NIR_2, INS_NIR_TEST).xds_cx())


def test_handle_is_a_batch_of_one(engine):
    xref, svc = service(engine)
    assert answer(svc.handle(a01("C1", "IPP-1", NIR_1)))["code"] == "AA"
    assert answer(svc.handle(a01("C2", "IPP-2", BAD_NIR)))["error"] == "102"
    assert answer(svc.handle(qbp("C3", "IPP-1")))["ids"] == [NIR_1]


def test_pipelined_over_mllp_each_message_its_own_ack_in_order(engine):
    xref, svc = service(engine)
    msgs = [a01(f"F{i}", f"IPP-{i}", with_key(f"1850275{i:03d}{i + 1:03d}") if i % 2 == 0 else "")
            for i in range(40)]
    msgs[17] = a01("F17", "IPP-17", BAD_NIR)
    msgs += [qbp(f"Q{i}", f"IPP-{i}") for i in range(0, 40, 2)]
    with thread_pool() as pool:
        factory = MllpFactory(svc, reactor=reactor(), threadpool=pool)
        with listen(factory) as port, mllp_client(port.getHost().port) as c:
            c.send_raw(b"".join(b"\x0b" + m + b"\x1c\r" for m in msgs))  # all at once: batches
            answers = [answer(a) for a in c.receive(len(msgs))]
    assert [a["control"] for a in answers] == [f"F{i}" for i in range(40)] + [f"Q{i}" for i in range(0, 40, 2)]
    assert [a["code"] for a in answers[:40]] == ["AE" if i == 17 else "AA" for i in range(40)]
    assert all(a["qak"] == "OK" and len(a["ids"]) == 1 for a in answers[40:])
    assert xref.status(Identifier("IPP-17", HZLN)) is None
    assert all(xref.status(Identifier(f"IPP-{i}", HZLN)) == "active" for i in range(40) if i != 17)
