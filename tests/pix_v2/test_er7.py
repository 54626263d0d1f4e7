"""ER7 codec (pix/er7.py): decoding (MSH-18, segment ends, broken bodies) and ACK building."""

from __future__ import annotations

import hl7
from hypothesis import given, settings
from hypothesis import strategies as st

from pix import er7

A01 = (
    "MSH|^~\\&|SRC|FAC|PIX|XREF|20240101||ADT^A01^ADT_A01|CTRL-1|P|2.5|||||FRA|{charset}\r"
    "EVN||20240101\r"
    "PID|1||123^^^CHU&1.2.3&ISO^PI||Müller^Zoé||19800101|F\r"
)


def msg(charset: str = "UNICODE UTF-8", encoding: str = "utf-8") -> bytes:
    return A01.format(charset=charset).encode(encoding)


def parse_answer(data: bytes) -> hl7.Message:
    return hl7.parse(data.decode("utf-8", errors="replace"))


def test_read_header_of_a_broken_message():
    h = er7.read_header(b"MSH|^~\\&|APP|FAC|ME|MYFAC|2024||ADT^A01|ID-42|P|2.3.1\r\x00\xff garbage")
    assert (h.control_id, h.message_code, h.trigger_event, h.version) == ("ID-42", "ADT", "A01", "2.3.1")
    assert (h.sending_application, h.receiving_facility) == ("APP", "MYFAC")


def test_read_header_of_non_hl7_is_none():
    assert er7.read_header(b"GET / HTTP/1.1\r\n") is None
    assert er7.read_header(b"") is None
    assert er7.read_header(b"MSH") is None


def test_msh18_utf8_and_latin1_are_honoured():
    for charset, encoding in [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1")]:
        m = er7.parse(msg(charset, encoding))
        assert m.value(m.first("PID"), 5) == "Müller"
        assert m.codec in ("utf-8", "latin-1")


def test_undeclared_charset_falls_back_to_latin1():
    m = er7.parse(msg("", "latin-1"))
    assert m.value(m.first("PID"), 5, 2) == "Zoé"
    assert m.codec == "latin-1"


def test_segment_ends_cr_lf_crlf_and_wrapped_lines():
    base = msg().decode()
    for sep in ("\n", "\r\n"):
        m = er7.parse(base.replace("\r", sep).encode())
        assert m.segment_names() == ["MSH", "EVN", "PID"]
    # a segment wrapped over two lines (NIST's A01-2 sample) is read whole
    wrapped = base.replace("||19800101|F", "||1980\n0101|F").encode()
    m = er7.parse(wrapped)
    assert m.value(m.first("PID"), 7) == "19800101" and m.value(m.first("PID"), 8) == "F"


def test_components_subcomponents_and_escapes():
    m = er7.parse(b"MSH|^~\\&|A|B|C|D|1||QBP^Q23|1|P|2.5\rQPD|Q|T|a\\S\\b^^^NS&1.2&ISO~x\r")
    qpd = m.first("QPD")
    reps = m.repetitions(qpd, 3)
    assert reps[0][0] == ["a^b"] and reps[0][3] == ["NS", "1.2", "ISO"] and reps[1] == [["x"]]


def test_ack_swaps_applications_and_echoes_msh10_and_version():
    h = er7.read_header(msg())
    a = parse_answer(er7.ack(h, "AE", hl7_code="204", locations=["PID-3"], text="unknown"))
    msh, msa, err = a.segment("MSH"), a.segment("MSA"), a.segment("ERR")
    assert (str(msh[3]), str(msh[4]), str(msh[5]), str(msh[6])) == ("PIX", "XREF", "SRC", "FAC")
    assert str(msh[9]) == "ACK^A01^ACK" and str(msh[12]) == "2.5" and str(msh[10]) != "CTRL-1"
    assert (str(msa[1]), str(msa[2])) == ("AE", "CTRL-1")
    assert str(err[2]) == "PID^1^3" and str(err[3]) == "204^Unknown key identifier^HL70357" and str(err[4]) == "E"


def test_err_for_v231_carries_err1():
    h = er7.read_header(b"MSH|^~\\&|S|F|R|G|1||ADT^A01|9|P|2.3.1\r")
    a = parse_answer(er7.ack(h, "AE", hl7_code="204", locations=["PID-3"]))
    assert str(a.segment("ERR")[1]) == "PID^1^3^204&Unknown key identifier&HL70357"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_written_values_read_back_unchanged(value):
    w = er7.Er7Writer()
    text = "MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rPID|1||" + w.components(value, "", "", ("NS", "1.2", "ISO")) + "\r"
    m = er7.parse(text.encode())
    assert m.value(m.first("PID"), 3) == value


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_parse_raises_only_er7_error(data):
    try:
        er7.parse(data)
    except er7.Er7Error:
        pass
