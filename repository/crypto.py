"""Streaming segmented AES-256-GCM for stored documents (DESIGN.md §3 rule 8, issue 3).

Sans-I/O: `SegmentEncryptor` and `SegmentDecryptor` take bytes and give bytes; they never read a
file or a socket. Memory stays bounded by one segment (plus the chunk the caller passes in)
whatever the size of the document.

Blob layout: a fixed 36-byte header, then the segments. Each segment is the AES-256-GCM
ciphertext of `segment_size` plaintext bytes (the last one: 0..segment_size bytes, 0 only for an
empty document) followed by its 16-byte tag. There is always at least one segment, the final one.

Header (big-endian, `HEADER_SIZE` = 36 bytes)::

    offset size
    0      4    magic b"CRNB"
    4      1    format version (1)
    5      1    algorithm (1 = AES-256-GCM, nonce = prefix || segment index)
    6      2    reserved, zero
    8      4    segment_size: plaintext bytes per segment (MIN_SEGMENT_SIZE..MAX_SEGMENT_SIZE)
    12     8    nonce prefix, random per blob
    20     16   data key id (the 16 bytes of the DataKey's UUID)

Segment i (0-based):

    nonce = nonce_prefix (8) || uint32 i                      -- unique per (key, blob, segment)
    AAD   = header (36) || binding || uint32 i || uint8 final  -- final = 1 on the last segment
    binding = uint16 len(r) || r || uint16 len(d) || d,  r = repositoryUniqueId, d = documentUniqueId (UTF-8)

So a tampered byte, a tampered header (it is in every AAD), reordered segments (index), a segment
from another document (binding and nonce prefix), a truncated blob (the new last segment was not
encrypted as final) or appended data (the real final segment is then read as non-final) each fail
authentication: `BlobIntegrityError`. The random nonce prefix keeps nonces unique under one
dossier key up to ~2^32 blobs (birthday bound on 64 bits), far beyond a dossier's documents.

A decryptor only returns plaintext of segments it has authenticated, but a truncated stream is
only known to be truncated at `finalize()`: a consumer that streams plaintext out (ITI-43) must
treat a failing `finalize()` as a failed transfer (abort the connection, never complete it).
"""

from __future__ import annotations

import os
import struct
import uuid
from typing import Callable

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CRNB"
VERSION = 1
ALG_AES256GCM_SEGMENTED = 1
HEADER = struct.Struct(">4sBBxxI8s16s")
HEADER_SIZE = HEADER.size  # 36
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 8
DEFAULT_SEGMENT_SIZE = 64 * 1024
MIN_SEGMENT_SIZE = 1
MAX_SEGMENT_SIZE = 16 * 1024 * 1024  # bounds what a (not yet authenticated) header can make us buffer
MAX_SEGMENTS = 2**32  # the segment index is a uint32 in the nonce
_SEGMENT_TRAILER = struct.Struct(">IB")  # segment index, final flag (end of the AAD)
_NONCE = struct.Struct(">8sI")


class BlobIntegrityError(Exception):
    """The ciphertext is not what we encrypted for this document under this key: tampered,
    truncated, reordered, from another document, wrong key, bad header. Never say which."""


@attrs.frozen(repr=False)
class DataKey:
    """A dossier's AES-256 data key, unwrapped. `id` is a UUID in hex (32 characters)."""

    id: str = attrs.field()
    key: bytes = attrs.field()

    @id.validator
    def _check_id(self, _attribute, value: str) -> None:
        if len(value) != 32 or len(bytes.fromhex(value)) != 16:
            raise ValueError("a data key id is 32 hexadecimal characters (a UUID)")

    @key.validator
    def _check_key(self, _attribute, value: bytes) -> None:
        if len(value) != 32:
            raise ValueError("a data key is 32 bytes (AES-256)")

    @classmethod
    def generate(cls) -> "DataKey":
        return cls(uuid.uuid4().hex, AESGCM.generate_key(bit_length=256))

    def __repr__(self) -> str:  # never print key material
        return f"DataKey(id={self.id!r})"


@attrs.frozen
class DocumentBinding:
    """The document a blob belongs to; part of every segment's AAD."""

    repository_unique_id: str
    document_unique_id: str

    def aad(self) -> bytes:
        out = bytearray()
        for value in (self.repository_unique_id, self.document_unique_id):
            raw = value.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise ValueError("unique id too long to bind")
            out += struct.pack(">H", len(raw)) + raw
        return bytes(out)


@attrs.frozen
class BlobHeader:
    segment_size: int
    nonce_prefix: bytes
    key_id: str  # hex, as DataKey.id
    version: int = VERSION
    algorithm: int = ALG_AES256GCM_SEGMENTED

    def pack(self) -> bytes:
        return HEADER.pack(
            MAGIC, self.version, self.algorithm, self.segment_size, self.nonce_prefix, bytes.fromhex(self.key_id)
        )


def read_header(data: bytes) -> BlobHeader:
    """Parse (not authenticate) the first `HEADER_SIZE` bytes of a blob; the key id tells which
    data key to fetch. Raises BlobIntegrityError on anything we did not write."""
    if len(data) < HEADER_SIZE:
        raise BlobIntegrityError("blob shorter than its header")
    magic, version, algorithm, segment_size, prefix, key_id = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or algorithm != ALG_AES256GCM_SEGMENTED:
        raise BlobIntegrityError("not a Carnet encrypted blob (magic, version or algorithm)")
    if bytes(data[6:8]) != b"\x00\x00":
        raise BlobIntegrityError("reserved header bytes are not zero")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise BlobIntegrityError("segment size out of range")
    return BlobHeader(segment_size=segment_size, nonce_prefix=prefix, key_id=key_id.hex())


def _segments(plaintext_size: int, segment_size: int) -> int:
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Size of the blob for a document of `plaintext_size` bytes."""
    return HEADER_SIZE + plaintext_size + TAG_SIZE * _segments(plaintext_size, segment_size)


def plaintext_size(blob_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Size of the document stored in a well-formed blob of `blob_size` bytes (not authenticated)."""
    body = blob_size - HEADER_SIZE
    if body < TAG_SIZE:
        raise BlobIntegrityError("blob size is not a valid ciphertext size")
    full, rest = divmod(body, segment_size + TAG_SIZE)
    if rest == 0 and full > 0:  # the final segment is a full one
        return full * segment_size
    if rest < TAG_SIZE:
        raise BlobIntegrityError("blob size is not a valid ciphertext size")
    return full * segment_size + rest - TAG_SIZE


class _WorkBuffer:
    """One buffer reused across updates for the segments' output, copied once into the bytes
    returned. A fresh bytearray per update made glibc grow and trim its heap at every call
    (page faults at each MiB: decryption of 1 MiB chunks ran 5x slower)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def view(self, size: int) -> memoryview:
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        return memoryview(self._buffer)[:size]


class SegmentEncryptor:
    """Encrypts one document as it streams: `update()` returns the ciphertext of the segments it
    could complete (the header comes out first), `finalize()` the final segment.

    A full segment is held back until more data shows it is not the last one, so the caller may
    feed chunks of any size and need not know the document's size in advance."""

    def __init__(
        self,
        data_key: DataKey,
        binding: DocumentBinding,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        *,
        nonce_prefix: bytes | None = None,
    ) -> None:
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be within {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")
        prefix = os.urandom(NONCE_PREFIX_SIZE) if nonce_prefix is None else nonce_prefix
        if len(prefix) != NONCE_PREFIX_SIZE:
            raise ValueError("nonce prefix is 8 bytes")
        self.header = BlobHeader(segment_size=segment_size, nonce_prefix=prefix, key_id=data_key.id)
        header = self.header.pack()
        self._aead = AESGCM(data_key.key)
        self._size = segment_size
        self._prefix = prefix
        self._aad_prefix = header + binding.aad()
        self._pending = bytearray()  # 0..segment_size bytes not yet encrypted
        self._index = 0
        self._out_header: bytes | None = header
        self._work = _WorkBuffer()
        self._done = False
        self.plaintext_bytes = 0

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._done:
            raise ValueError("encryptor already finalized")
        view = memoryview(data).cast("B")
        self.plaintext_bytes += len(view)
        size = self._size
        total = len(self._pending) + len(view)
        count = (total - 1) // size if total else 0  # segments sure not to be the last one
        head = self._out_header or b""
        self._out_header = None
        if count == 0:
            self._pending += view
            return bytes(head)
        target = self._work.view(len(head) + count * (size + TAG_SIZE))
        target[: len(head)] = head
        pos = len(head)
        taken = 0
        if self._pending:  # complete the pending segment from the new data
            taken = size - len(self._pending)
            self._pending += view[:taken]
            self._seal_into(self._pending, False, target[pos : pos + size + TAG_SIZE])
            pos += size + TAG_SIZE
            count -= 1
        for _ in range(count):
            self._seal_into(view[taken : taken + size], False, target[pos : pos + size + TAG_SIZE])
            taken += size
            pos += size + TAG_SIZE
        self._pending = bytearray(view[taken:])
        return bytes(target)

    def finalize(self) -> bytes:
        if self._done:
            raise ValueError("encryptor already finalized")
        self._done = True
        head = self._out_header or b""
        self._out_header = None
        out = bytearray(len(head) + len(self._pending) + TAG_SIZE)
        out[: len(head)] = head
        self._seal_into(self._pending, True, memoryview(out)[len(head) :])
        self._pending = bytearray()
        return bytes(out)

    def _seal_into(self, segment, final: bool, target: memoryview) -> None:
        if self._index >= MAX_SEGMENTS:
            raise ValueError("document too large for this segment size")
        nonce = _NONCE.pack(self._prefix, self._index)
        aad = self._aad_prefix + _SEGMENT_TRAILER.pack(self._index, final)
        self._aead.encrypt_into(nonce, segment, aad, target)
        self._index += 1


KeySource = DataKey | Callable[[str], DataKey]


class SegmentDecryptor:
    """Decrypts and authenticates one blob as it streams. `update()` returns the plaintext of
    the segments it has authenticated; `finalize()` checks the final segment and returns its
    plaintext. Any problem raises `BlobIntegrityError`, including a missing final segment.

    `key` is the DataKey, or a function from the header's key id to the DataKey (e.g.
    `KeyVault.get`); a DataKey whose id differs from the header's is an integrity error. Errors
    raised by the function (a destroyed key, a wrong master key) pass through unchanged."""

    def __init__(self, key: KeySource, binding: DocumentBinding) -> None:
        self._key_source = key
        self._binding = binding
        self._buffer = bytearray()
        self._work = _WorkBuffer()
        self._aead: AESGCM | None = None
        self.header: BlobHeader | None = None
        self._index = 0
        self._done = False
        self._failed = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        self._check_usable()
        try:
            return self._update(memoryview(data).cast("B"))
        except BaseException:
            self._failed = True
            raise

    def finalize(self) -> bytes:
        self._check_usable()
        self._done = True
        if self._aead is None:
            raise BlobIntegrityError("blob shorter than its header")
        rest = self._buffer
        self._buffer = bytearray()
        if len(rest) < TAG_SIZE:
            raise BlobIntegrityError("final segment missing or truncated")
        out = bytearray(len(rest) - TAG_SIZE)
        self._open_into(rest, True, memoryview(out))
        return bytes(out)

    def _check_usable(self) -> None:
        if self._failed:
            raise BlobIntegrityError("decryption already failed")
        if self._done:
            raise ValueError("decryptor already finalized")

    def _update(self, view: memoryview) -> bytes:
        if self._aead is None:
            need = HEADER_SIZE - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) < HEADER_SIZE:
                return b""
            self._start(bytes(self._buffer))
            self._buffer = bytearray()
        size = self.header.segment_size
        seg = size + TAG_SIZE
        total = len(self._buffer) + len(view)
        count = (total - 1) // seg if total else 0  # keep the possibly-final segment back
        if count == 0:
            self._buffer += view
            return b""
        target = self._work.view(count * size)
        pos = 0
        taken = 0
        if self._buffer:
            taken = seg - len(self._buffer)
            self._buffer += view[:taken]
            self._open_into(self._buffer, False, target[:size])
            pos = size
            count -= 1
        for _ in range(count):
            self._open_into(view[taken : taken + seg], False, target[pos : pos + size])
            taken += seg
            pos += size
        self._buffer = bytearray(view[taken:])
        return bytes(target)

    def _start(self, header_bytes: bytes) -> None:
        header = read_header(header_bytes)
        source = self._key_source
        key = source if isinstance(source, DataKey) else source(header.key_id)
        if key.id != header.key_id:
            raise BlobIntegrityError("blob was encrypted under another data key")
        self.header = header
        self._aead = AESGCM(key.key)
        self._aad_prefix = header_bytes + self._binding.aad()

    def _open_into(self, segment, final: bool, target: memoryview) -> None:
        if self._index >= MAX_SEGMENTS:
            raise BlobIntegrityError("too many segments")
        nonce = _NONCE.pack(self.header.nonce_prefix, self._index)
        aad = self._aad_prefix + _SEGMENT_TRAILER.pack(self._index, final)
        try:
            self._aead.decrypt_into(nonce, segment, aad, target)
        except InvalidTag:
            self._failed = True
            raise BlobIntegrityError(f"segment {self._index} failed authentication") from None
        self._index += 1


def encrypt(
    data_key: DataKey, binding: DocumentBinding, plaintext: bytes, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> bytes:
    """The whole blob for a small document (tests, CDA-sized documents)."""
    enc = SegmentEncryptor(data_key, binding, segment_size)
    return enc.update(plaintext) + enc.finalize()


def decrypt(key: KeySource, binding: DocumentBinding, blob: bytes) -> bytes:
    dec = SegmentDecryptor(key, binding)
    return dec.update(blob) + dec.finalize()
