"""Request bodies kept while they are received, never written to disk in clear.

Twisted's HTTP server keeps each request body until it is complete before a resource renders it:
in memory below 100 kB, above that in a `tempfile.TemporaryFile` (`twisted.web.http._getContentFile`).
An ITI-41 body is the patient's documents; a temporary file holding them in clear would sit in
TMPDIR (often another filesystem, with other backups) outside the repository's per-dossier
encryption (DESIGN.md §3 rule 8). The same holds for the MTOM parts that arrive before the SOAP
root part (`soap.mtom.MtomReader`).

`EphemeralSpool` is the file those bodies go to: in memory up to `memory_bytes`, then appended to an
anonymous temporary file encrypted with AES-256-CTR (`cryptography`) under a key made for that one
body and held only in this object's memory. Once it is closed (or the process dies) the bytes on
disk cannot be read by anyone. CTR lets any offset be read back without reading what precedes it,
which `seek` needs. There is no authentication tag: the file lives as long as one request, is
unlinked from the moment it is created, and whoever can write into this process's open files can
also write into its memory; the documents' own integrity is the SHA-1 the XDS metadata carries and
the repository's AES-GCM at rest.
"""

from __future__ import annotations

import io
import os
import tempfile

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MEMORY_BYTES = 100_000  # as Twisted: bodies below this size stay in memory
_BLOCK = 16


class EphemeralSpool(io.RawIOBase):
    """A seekable, readable binary file opened for appending (a write goes to the end and leaves the
    position there, as with O_APPEND), whose bytes beyond `memory_bytes` are kept encrypted on disk
    under a key that dies with it. `dir`: where the temporary file goes (default: TMPDIR)."""

    def __init__(self, memory_bytes: int = MEMORY_BYTES, dir: str | None = None) -> None:  # noqa: A002
        super().__init__()
        self._memory_bytes = memory_bytes
        self._dir = dir
        self._mem: bytearray | None = bytearray()
        self._file = None  # the encrypted temporary file, once the body outgrows memory
        self._key = self._counter0 = None
        self._encryptor = None
        self._size = 0
        self._pos = 0

    # --- io.RawIOBase ---------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        n = len(view)
        if not n:
            return 0
        if self._mem is not None and len(self._mem) + n <= self._memory_bytes:
            self._mem += view
        else:
            if self._mem is not None:
                self._to_disk()
            self._file.seek(0, io.SEEK_END)
            self._file.write(self._encryptor.update(view))
        self._size += n
        self._pos = self._size
        return n

    def read(self, n: int = -1) -> bytes:
        self._check_open()
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        if end <= self._pos:
            return b""
        start, self._pos = self._pos, end
        if self._mem is not None:
            return bytes(self._mem[start:end])
        self._file.seek(start)
        data = self._file.read(end - start)
        return self._decrypt_at(start, data)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._mem = None
            self._key = self._encryptor = None
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()

    # --- what it is made of (for tests and the docs) ---------------------------------------------

    @property
    def on_disk(self) -> bool:
        """True once the body outgrew memory (its bytes are then in the encrypted temporary file)."""
        return self._file is not None

    def raw_disk_bytes(self) -> bytes:
        """What the temporary file holds (ciphertext): what someone reading the disk would see."""
        if self._file is None:
            return b""
        self._file.seek(0)
        return self._file.read()

    # --- internals --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed spool")

    def _to_disk(self) -> None:
        self._key = os.urandom(32)
        self._counter0 = int.from_bytes(os.urandom(_BLOCK), "big")
        self._file = tempfile.TemporaryFile(dir=self._dir)  # unlinked at once (POSIX), mode 0600
        self._encryptor = self._cipher(0).encryptor()
        held, self._mem = self._mem, None
        self._file.write(self._encryptor.update(bytes(held)))

    def _cipher(self, block: int) -> Cipher:
        counter = (self._counter0 + block) % (1 << 128)
        return Cipher(algorithms.AES(self._key), modes.CTR(counter.to_bytes(_BLOCK, "big")))

    def _decrypt_at(self, offset: int, data: bytes) -> bytes:
        block, skip = divmod(offset, _BLOCK)
        decryptor = self._cipher(block).decryptor()
        if skip:
            decryptor.update(bytes(skip))
        return decryptor.update(data)
