"""registry.fragments: the stored form of the registry's ebRIM fragments (lz4-packed), on SQLite and
PostgreSQL: what is written is packed, what was written before as plain XML is still answered."""

from __future__ import annotations

from hypothesis import given, strategies as st
from sqlalchemy import select, update

from registry import constants as C
from registry.fragments import PACKED, pack, unpack
from registry.queries.params import parse_parameters
from registry.schema import document_entry
from registry.store import RegistryStore
from iti18.fixtures import PATIENTS, load_nist_fixture
from iti18.sq import q, ql
from registry.model import Slot


@given(st.binary(max_size=20_000).map(lambda b: b"<" + b))
def test_pack_unpack_round_trip(xml: bytes) -> None:
    stored = pack(xml)
    assert stored[:1] == PACKED
    assert unpack(stored) == xml
    assert unpack(memoryview(stored)) == xml and unpack(bytearray(stored)) == xml


def test_plain_xml_and_text_read_as_they_are() -> None:
    assert unpack(b"<rim:ExtrinsicObject/>") == b"<rim:ExtrinsicObject/>"
    assert unpack(memoryview(b"<a/>")) == b"<a/>"
    assert unpack("<é/>") == "<é/>".encode()


def test_a_document_entry_fragment_is_stored_at_about_a_third_of_its_size(engine):
    load_nist_fixture(engine, "A")
    with engine.connect() as c:
        stored = [bytes(x) for x in c.execute(select(document_entry.c.xml)).scalars()]
    assert stored and all(x[:1] == PACKED for x in stored)
    plain = sum(len(unpack(x)) for x in stored)
    assert sum(len(x) for x in stored) < 0.6 * plain


def _find_documents(engine) -> dict[str, bytes]:
    query = parse_parameters(C.SQ_FIND_DOCUMENTS, [
        Slot("$XDSDocumentEntryPatientId", (q(PATIENTS["A"]),)),
        Slot("$XDSDocumentEntryStatus", (ql(C.STATUS_APPROVED),)),
    ])
    return {r.id: r.xml for r in RegistryStore(engine).stored_query(query, limit=1000)}


def test_rows_written_as_plain_xml_before_packing_are_answered_the_same(engine):
    load_nist_fixture(engine, "A")
    packed = _find_documents(engine)
    with engine.begin() as c:
        for entry_id, xml in packed.items():  # as a registry before this format stored them
            c.execute(update(document_entry).where(document_entry.c.id == entry_id).values(xml=xml))
    assert _find_documents(engine) == packed
    assert all(x.startswith(b"<") for x in packed.values())
