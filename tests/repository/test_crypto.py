"""Streaming segmented AES-256-GCM (repository/crypto.py): round trips under any chunking, and
every way of altering a blob — a byte, the header, truncation, extension, reordering, a segment
from another document, another key — fails with BlobIntegrityError."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from repository.crypto import (
    HEADER_SIZE,
    MAGIC,
    TAG_SIZE,
    BlobIntegrityError,
    DataKey,
    DocumentBinding,
    SegmentDecryptor,
    SegmentEncryptor,
    ciphertext_size,
    decrypt,
    encrypt,
    plaintext_size,
    read_header,
)

KEY = DataKey("0123456789abcdef0123456789abcdef", bytes(range(32)))
DOC = DocumentBinding("1.2.250.1.999.1", "1.2.250.1.999.2.1")
OTHER_DOC = DocumentBinding("1.2.250.1.999.1", "1.2.250.1.999.2.2")
S = 16  # small segments: many segments from few bytes


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _segments(blob: bytes, size: int = S) -> tuple[bytes, list[bytes]]:
    body = blob[HEADER_SIZE:]
    step = size + TAG_SIZE
    return blob[:HEADER_SIZE], [body[i : i + step] for i in range(0, len(body), step)]


def _fails(blob: bytes, key=KEY, doc=DOC) -> None:
    with pytest.raises(BlobIntegrityError):
        decrypt(key, doc, blob)


# --- round trips -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    plaintext=st.binary(max_size=700),
    segment_size=st.integers(1, 80),
    cuts_in=st.lists(st.integers(0, 10_000), max_size=12),
    cuts_out=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_round_trip_for_any_plaintext_segment_size_and_chunking(plaintext, segment_size, cuts_in, cuts_out):
    enc = SegmentEncryptor(KEY, DOC, segment_size)
    blob = b"".join(enc.update(chunk) for chunk in _split(plaintext, cuts_in)) + enc.finalize()
    assert len(blob) == ciphertext_size(len(plaintext), segment_size)
    assert plaintext_size(len(blob), segment_size) == len(plaintext)
    assert blob == encrypt_with_prefix(plaintext, segment_size, enc.header.nonce_prefix)  # chunking-independent

    dec = SegmentDecryptor(KEY, DOC)
    out = b"".join(dec.update(chunk) for chunk in _split(blob, cuts_out)) + dec.finalize()
    assert out == plaintext


def encrypt_with_prefix(plaintext: bytes, segment_size: int, prefix: bytes) -> bytes:
    enc = SegmentEncryptor(KEY, DOC, segment_size, nonce_prefix=prefix)
    return enc.update(plaintext) + enc.finalize()


def test_each_segment_is_plain_aes_gcm_with_the_documented_nonce_and_aad():
    """The wire format of the module docstring, checked with a bare AESGCM."""
    plaintext = bytes(range(40))
    blob = encrypt(KEY, DOC, plaintext, S)
    header, segments = _segments(blob)
    assert header[:4] == MAGIC and header[4] == 1 and header[5] == 1 and header[6:8] == b"\0\0"
    assert struct.unpack(">I", header[8:12])[0] == S
    assert header[20:36] == bytes.fromhex(KEY.id)
    ids = (DOC.repository_unique_id, DOC.document_unique_id)
    binding = b"".join(struct.pack(">H", len(v)) + v.encode() for v in ids)
    aead = AESGCM(KEY.key)
    out = b""
    for i, seg in enumerate(segments):
        final = i == len(segments) - 1
        out += aead.decrypt(header[12:20] + struct.pack(">I", i), seg, header + binding + struct.pack(">IB", i, final))
    assert out == plaintext
    assert [len(s) for s in segments] == [S + TAG_SIZE, S + TAG_SIZE, 8 + TAG_SIZE]


@pytest.mark.parametrize("n", [0, 1, S - 1, S, S + 1, 2 * S, 3 * S + 5])
def test_segment_boundaries(n):
    plaintext = bytes(range(256))[:n]
    blob = encrypt(KEY, DOC, plaintext, S)
    segments = _segments(blob)[1]
    assert len(segments) == max(1, -(-n // S))  # an exact multiple ends on a full final segment
    assert decrypt(KEY, DOC, blob) == plaintext


@pytest.mark.parametrize("blob_size", [0, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1])
def test_plaintext_size_refuses_impossible_blob_sizes(blob_size):
    with pytest.raises(BlobIntegrityError):
        plaintext_size(blob_size, S)


def test_empty_document_still_authenticates_header_and_binding():
    blob = encrypt(KEY, DOC, b"", S)
    assert len(blob) == HEADER_SIZE + TAG_SIZE
    assert decrypt(KEY, DOC, blob) == b""
    _fails(blob, doc=OTHER_DOC)


def test_two_encryptions_of_the_same_document_differ():
    assert encrypt(KEY, DOC, b"same", S) != encrypt(KEY, DOC, b"same", S)  # random nonce prefix


def test_memory_stays_within_one_segment():
    """Output keeps up with input: the encryptor holds back at most one segment of plaintext,
    the decryptor at most one segment of ciphertext."""
    size = 4096
    chunk = b"x" * 1000
    enc = SegmentEncryptor(KEY, DOC, size)
    fed = out = 0
    blob = bytearray()
    for _ in range(300):
        piece = enc.update(chunk)
        blob += piece
        fed, out = fed + len(chunk), out + len(piece)
        assert fed - (out - HEADER_SIZE) * size / (size + TAG_SIZE) <= size
    blob += enc.finalize()
    dec = SegmentDecryptor(KEY, DOC)
    fed = got = 0
    for i in range(0, len(blob), 1000):
        got += len(dec.update(blob[i : i + 1000]))
        fed = min(i + 1000, len(blob))
        assert (fed - HEADER_SIZE) - got * (size + TAG_SIZE) / size <= size + TAG_SIZE
    assert got + len(dec.finalize()) == 300 * 1000


def test_key_resolver_receives_the_header_key_id():
    seen = []

    def resolve(key_id: str) -> DataKey:
        seen.append(key_id)
        return KEY

    assert decrypt(resolve, DOC, encrypt(KEY, DOC, b"abc", S)) == b"abc"
    assert seen == [KEY.id]
    assert read_header(encrypt(KEY, DOC, b"abc", S)).key_id == KEY.id


def test_key_material_is_not_in_repr():
    assert KEY.key.hex() not in repr(KEY) and repr(KEY.key) not in repr(KEY)


# --- integrity ---------------------------------------------------------------------------------

BLOB = encrypt(KEY, DOC, bytes(range(50)), S)  # header + 4 segments (16, 16, 16, 2)


@pytest.mark.parametrize("position", range(len(BLOB)))
def test_any_flipped_bit_is_detected(position):
    tampered = bytearray(BLOB)
    tampered[position] ^= 0x01
    _fails(bytes(tampered))


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=300), st.data())
def test_tampering_anywhere_is_detected(plaintext, data):
    blob = bytearray(encrypt(KEY, DOC, plaintext, S))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    _fails(bytes(blob))


def test_truncation_is_detected():
    header, segments = _segments(BLOB)
    _fails(header + b"".join(segments[:-1]))  # last segment dropped
    _fails(header + b"".join(segments[:1]))
    _fails(header)  # no segment at all
    _fails(header[:20])  # not even a header
    _fails(b"")
    for cut in range(1, 2 * (S + TAG_SIZE)):
        _fails(BLOB[:-cut])  # last bytes dropped


def test_truncation_of_a_document_ending_on_a_full_segment_is_detected():
    blob = encrypt(KEY, DOC, bytes(3 * S), S)
    header, segments = _segments(blob)
    _fails(header + b"".join(segments[:2]))


def test_extension_is_detected():
    header, segments = _segments(BLOB)
    _fails(BLOB + segments[-1])  # final segment repeated
    _fails(BLOB + b"\0")
    _fails(header + b"".join(segments[:-1]) + segments[0] + segments[-1])


def test_reordered_segments_are_detected():
    header, segments = _segments(BLOB)
    _fails(header + segments[1] + segments[0] + b"".join(segments[2:]))
    _fails(header + segments[0] + segments[2] + segments[1] + segments[3])


@pytest.mark.parametrize("same_prefix", [False, True])
def test_a_segment_from_another_document_under_the_same_key_is_detected(same_prefix):
    """Even with the same nonce prefix (the worst case), the binding in the AAD differs."""
    prefix = read_header(BLOB).nonce_prefix if same_prefix else None
    enc = SegmentEncryptor(KEY, OTHER_DOC, S, nonce_prefix=prefix)
    other = enc.update(bytes(range(50))) + enc.finalize()
    header, segments = _segments(BLOB)
    other_header, other_segments = _segments(other)
    _fails(header + segments[0] + other_segments[1] + b"".join(segments[2:]))
    _fails(other)  # the whole blob of the other document, read as this one
    if not same_prefix:  # (with the same prefix the two headers are the same bytes)
        _fails(other_header + b"".join(segments))
    assert decrypt(KEY, OTHER_DOC, other) == bytes(range(50))


def test_a_segment_from_another_blob_of_the_same_document_is_detected():
    again = encrypt(KEY, DOC, bytes(range(50)), S)  # another random nonce prefix
    header, segments = _segments(BLOB)
    _fails(header + _segments(again)[1][0] + b"".join(segments[1:]))


def test_a_wrong_data_key_is_detected():
    _fails(BLOB, key=DataKey(KEY.id, bytes(32)))  # same id, other key
    _fails(BLOB, key=DataKey.generate())  # other id
    with pytest.raises(BlobIntegrityError):
        decrypt(lambda _id: DataKey(KEY.id, bytes(32)), DOC, BLOB)


@pytest.mark.parametrize(
    "offset,value",
    [(0, b"XRNB"), (4, b"\x02"), (5, b"\x02"), (6, b"\x01"), (8, struct.pack(">I", 17)),
     (8, struct.pack(">I", 0)), (8, struct.pack(">I", 2**31)), (12, b"\0" * 8), (20, bytes(16))],
)
def test_header_tampering_is_detected(offset, value):
    blob = bytearray(BLOB)
    blob[offset : offset + len(value)] = value
    _fails(bytes(blob))


def test_header_key_id_swapped_to_another_existing_key_is_detected():
    other = DataKey.generate()
    blob = bytearray(BLOB)
    blob[20:36] = bytes.fromhex(other.id)
    with pytest.raises(BlobIntegrityError):
        decrypt(lambda _id: other, DOC, bytes(blob))


def test_a_failed_decryptor_stays_failed():
    header, segments = _segments(BLOB)
    dec = SegmentDecryptor(KEY, DOC)
    with pytest.raises(BlobIntegrityError):
        dec.update(header + segments[1] + segments[0] + segments[2])
    with pytest.raises(BlobIntegrityError):
        dec.update(segments[3])
    with pytest.raises(BlobIntegrityError):
        dec.finalize()


def test_no_plaintext_comes_out_of_a_segment_before_it_is_authenticated():
    header, segments = _segments(BLOB)
    dec = SegmentDecryptor(KEY, DOC)
    assert dec.update(header + segments[0]) == b""  # could still be the final segment
    assert dec.update(segments[1][:1]) == bytes(range(16))  # segment 0 is now known not final
    tampered = bytearray(segments[1][1:])
    tampered[0] ^= 1
    with pytest.raises(BlobIntegrityError):
        dec.update(bytes(tampered) + segments[2][:1])


def test_segment_size_limits():
    with pytest.raises(ValueError):
        SegmentEncryptor(KEY, DOC, 0)
    with pytest.raises(ValueError):
        SegmentEncryptor(KEY, DOC, 32 * 1024 * 1024)
    with pytest.raises(ValueError):
        SegmentEncryptor(KEY, DOC, S, nonce_prefix=b"short")
