"""soap.spill.EphemeralSpool: request bodies (patients' documents) never on disk in clear."""

from __future__ import annotations

import io
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from soap.spill import EphemeralSpool


def _fill(spool: EphemeralSpool, chunks: list[bytes]) -> bytes:
    for c in chunks:
        spool.write(c)
    return b"".join(chunks)


@settings(max_examples=60)
@given(
    chunks=st.lists(st.binary(min_size=0, max_size=700), max_size=12),
    memory=st.integers(min_value=0, max_value=2000),
    reads=st.lists(st.tuples(st.integers(min_value=0, max_value=9000), st.integers(min_value=-1, max_value=900)),
                   max_size=8),
)
def test_reads_give_back_what_was_written_from_any_offset(chunks, memory, reads):
    with EphemeralSpool(memory) as spool:
        data = _fill(spool, chunks)
        assert spool.seek(0, io.SEEK_END) == len(data) and spool.tell() == len(data)
        assert spool.on_disk == (len(data) > memory)
        spool.seek(0)
        assert spool.read() == data
        for offset, n in reads:
            spool.seek(offset)
            expect = data[offset:] if n < 0 else data[offset:offset + n]
            assert spool.read(n) == expect


def test_a_large_body_is_on_disk_only_encrypted_and_unreadable_once_closed(tmp_path):
    document = b"<ClinicalDocument>Patient: DUPONT Jeanne, INS 2800175310042</ClinicalDocument>" * 4000
    spool = EphemeralSpool(100_000, dir=str(tmp_path))
    for k in range(0, len(document), 4096):
        spool.write(document[k:k + 4096])
    assert spool.on_disk
    assert os.listdir(tmp_path) == []  # anonymous: no name in the directory
    raw = spool.raw_disk_bytes()
    assert len(raw) == len(document) and b"DUPONT" not in raw and b"ClinicalDocument" not in raw
    spool.seek(0)
    assert spool.read() == document
    spool.close()
    assert spool.closed


def test_two_spools_of_the_same_body_share_no_key():
    body = b"A" * 200_000
    a, b = EphemeralSpool(0), EphemeralSpool(0)
    a.write(body)
    b.write(body)
    assert a.raw_disk_bytes() != b.raw_disk_bytes()


def test_twisted_keeps_a_large_soap_body_in_an_ephemeral_spool():
    from twisted.web.resource import Resource

    from soap.edge import SoapSite

    site = SoapSite(Resource())
    assert isinstance(site.getContentFile(1_000), io.BytesIO)
    assert isinstance(site.getContentFile(5_000_000), EphemeralSpool)
    assert isinstance(site.getContentFile(None), EphemeralSpool)  # chunked: length unknown
