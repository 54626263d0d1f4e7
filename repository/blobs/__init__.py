"""The `BlobStore` port: where the Document Repository keeps document bytes (DESIGN.md §3 rules 6–7).

A blob is written through a *staged* writer and becomes visible under its key only at `commit()`,
atomically, together with its metadata: a reader never sees half an object, and `abort()` (or a crash)
leaves nothing visible. `commit()` only *creates*: when the key already holds an object it raises
`BlobExists`, leaves that object as it is and discards the staged data. A stored document is never
rewritten (ITI TF-2b §3.41.4.1.3), and two submissions of one uniqueId racing each other cannot
replace the blob of the one the registry accepts with the bytes of the one it refuses (the
filesystem links the staged file into place, S3 sends `If-None-Match: *`). Staged data a crashed process abandoned is found and removed by
`sweep_staged()`. The ITI-41 flow is: stage and commit every blob, then commit the registry; when the
registry commit fails, `delete()` the blobs just committed (never a registry entry without its blob).

Keys derive from (repositoryUniqueId, documentUniqueId) through `object_key()`, so a retrieve (ITI-43)
never lists a directory or a bucket. Reading and writing stream in bounded memory.

Every call blocks (file or network I/O): Twisted code runs them in a thread (`deferToThread`). A store
may be shared by threads; one writer or reader is used by one thread at a time.

Adapters: `repository.blobs.fs.FilesystemBlobStore` (the default), `repository.blobs.s3.S3BlobStore`
(any S3-compatible service, through the `minio` client), `repository.blobs.memory.MemoryBlobStore`
(the fake for unit tests). All three pass one contract suite (`tests/repository/test_blobs.py`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = [
    "BlobExists",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "BlobStoreError",
    "DEFAULT_CHUNK_SIZE",
    "FANOUT_HEX",
    "StagedWriter",
    "StagingLost",
    "check_key",
    "check_metadata",
    "object_key",
]

DEFAULT_CHUNK_SIZE = 64 * 1024


# ---------------------------------------------------------------------------------------------- errors


class BlobNotFound(LookupError):
    """No committed object under this key. For ITI-43 this is XDSDocumentUniqueIdError when the registry
    does not know the document either, an infrastructure failure when it does."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"no blob under key {key!r}")


class BlobExists(Exception):
    """`commit()` found an object already under its key (put there since the writer was opened, e.g. by
    a concurrent submission of the same document): that object is unchanged, nothing was committed."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"a blob is already stored under key {key!r}")


class BlobStoreError(Exception):
    """The store failed (disk, network, S3 error): infrastructure, mapped to XDSRepositoryError
    (DESIGN.md §3 rule 3), never to a domain code."""


class StagingLost(BlobStoreError):
    """The staged data of a writer disappeared before `commit()` (removed by `sweep_staged`, or the
    staging upload was aborted): nothing was made visible."""


# ---------------------------------------------------------------------------------------------- keys

# Characters kept as they are in a key segment. Lower-case only, so that two keys never differ only by
# case (case-insensitive filesystems); every other code point is percent-encoded as UTF-8 with
# upper-case hex. '~' is reserved for the hashed form of an over-long segment.
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_MAX_SEGMENT = 200  # bytes; filesystems allow 255 per name, S3 1024 per key
_TRUNCATED_PREFIX = 120


def _escape_segment(value: str) -> str:
    out: list[str] = []
    for i, ch in enumerate(value):
        if ch in _KEPT and not (i == 0 and ch == "."):  # no hidden files, never "." or ".."
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    escaped = "".join(out) or "%"  # the empty id gets a segment no other id can produce
    if len(escaped) > _MAX_SEGMENT:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        head = escaped[:_TRUNCATED_PREFIX]
        head = head[: head.rfind("%")] if "%" in head[-2:] else head  # never cut an escape in two
        escaped = f"{head}~{digest}"
    return escaped


FANOUT_HEX = 2  # hex digits of the fan-out segment: 256 directories per repository


def object_key(repository_unique_id: str, document_unique_id: str) -> str:
    """The key of a document's blob (DESIGN.md §3 rule 7), e.g. for ('1.2.3', '1.2.3.4^ext'):
    ``'1.2.3/5c/1.2.3.4%5Eext'``: `<repository>/<fan-out>/<document>`.

    Deterministic; injective on (repository, document) pairs, also after case folding; safe as a
    relative filesystem path (no empty, '.', '..' or hidden segment, each segment ≤ 200 bytes) and as an
    S3 key. The middle segment (two hex digits of a SHA-256 of both ids) spreads a repository's documents
    over 256 directories / prefixes: a small, fixed set, so that a filesystem store creates each
    directory once and then only adds files (no new directory, hence no directory fsync, per document)."""
    h = hashlib.sha256(
        repository_unique_id.encode("utf-8", "surrogatepass")
        + b"\x00"
        + document_unique_id.encode("utf-8", "surrogatepass")
    ).hexdigest()
    return f"{_escape_segment(repository_unique_id)}/{h[:FANOUT_HEX]}/{_escape_segment(document_unique_id)}"


_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_~%-][A-Za-z0-9._~%-]{0,254}")


def check_key(key: str) -> str:
    """`key` if every adapter can store it (what `object_key` produces, or any relative path of
    [A-Za-z0-9._~%-] segments without hidden, empty, '.' or '..' segments); ValueError otherwise."""
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise ValueError(f"invalid blob key {key!r}")
    for segment in key.split("/"):
        if not _KEY_SEGMENT.fullmatch(segment):
            raise ValueError(f"invalid blob key {key!r}")
    return key


_META_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_META_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
MAX_METADATA_BYTES = 2000  # S3 allows 2 KB of user metadata


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of `metadata` if every adapter can keep it exactly: names of lower-case letters, digits
    and '-' (S3 user metadata names are case-insensitive), values of printable ASCII without leading or
    trailing spaces (they travel as HTTP headers), 2000 bytes at most in all. ValueError otherwise."""
    result = dict(metadata or {})
    total = 0
    for name, value in result.items():
        if not isinstance(name, str) or not _META_NAME.fullmatch(name):
            raise ValueError(f"invalid blob metadata name {name!r}")
        if not isinstance(value, str) or not _META_VALUE.fullmatch(value):
            raise ValueError(f"invalid blob metadata value for {name!r}: {value!r}")
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"blob metadata too large ({total} > {MAX_METADATA_BYTES} bytes)")
    return result


# ---------------------------------------------------------------------------------------------- the port


@runtime_checkable
class StagedWriter(Protocol):
    """A blob being written. Nothing is visible under `key` until `commit()` returns."""

    key: str
    bytes_written: int

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (any size; memory stays bounded by the adapter's buffer)."""

    def commit(self) -> None:
        """Make the object and its metadata visible under `key`, atomically, if `key` holds no object;
        else raise BlobExists (the object there is unchanged). Raises StagingLost if the staged data was
        swept, BlobStoreError on a store failure. Whenever it raises, nothing new is visible and the
        staged data is discarded. Committing twice is a ValueError."""

    def abort(self) -> None:
        """Discard the staged data; nothing becomes visible. Idempotent; a no-op after `commit()`."""

    def __enter__(self) -> "StagedWriter": ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        """Aborts unless committed (so an exception inside `with` leaves nothing)."""


@runtime_checkable
class BlobReader(Protocol):
    """A committed object being read, in chunks. Close it (or use `with`)."""

    key: str
    size: int
    metadata: dict[str, str]

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (b'' at the end); `n < 0` reads all that is left (unbounded: avoid)."""

    def __iter__(self) -> Iterator[bytes]:
        """The remaining bytes in non-empty chunks of at most the reader's chunk size."""

    def close(self) -> None: ...

    def __enter__(self) -> "BlobReader": ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """Where the repository keeps document bytes. Keys come from `object_key()` (checked by `check_key`)."""

    def open_staged(self, key: str, metadata: Mapping[str, str] | None = None) -> StagedWriter:
        """Start writing the object `key`. `metadata` (see `check_metadata`) is stored with the object and
        becomes visible with it at commit; it is given here, not at commit, because an S3 multipart
        upload fixes its metadata when it starts (the cipher parameters are known before the first byte)."""

    def open_read(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobReader:
        """Read a committed object in streaming; BlobNotFound if there is none."""

    def read_metadata(self, key: str) -> dict[str, str]:
        """The metadata given at `open_staged`; BlobNotFound if there is no object."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """The object's size in bytes (what was written); BlobNotFound if there is none."""

    def delete(self, key: str) -> None:
        """Remove a committed object; idempotent (no error when absent)."""

    def sweep_staged(self, older_than_seconds: float) -> int:
        """Remove staged data untouched for more than `older_than_seconds` (left by a crashed process or a
        writer never committed nor aborted); returns how many staged objects were removed. A live writer
        whose data is swept fails at commit with StagingLost."""


# ---------------------------------------------------------------------------------------------- shared code


class WriterBase:
    """State machine shared by the adapters' writers: open → committed | aborted."""

    def __init__(self, key: str, metadata: Mapping[str, str] | None):
        self.key = check_key(key)
        self.metadata = check_metadata(metadata)
        self.bytes_written = 0
        self._state = "open"

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != "open":
            raise ValueError(f"write on a {self._state} blob writer ({self.key})")
        if data:
            self._write(data)
            self.bytes_written += len(data)

    def commit(self) -> None:
        if self._state != "open":
            raise ValueError(f"commit on a {self._state} blob writer ({self.key})")
        try:
            self._commit()
        except BaseException:
            self._state = "aborted"
            self._abort_quietly()
            raise
        self._state = "committed"

    def abort(self) -> None:
        if self._state == "open":
            self._state = "aborted"
            self._abort()

    def _abort_quietly(self) -> None:
        try:
            self._abort()
        except Exception:  # noqa: BLE001 - the commit error is the one to report; the sweep cleans up
            pass

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb) -> None:
        if self._state == "open":
            if et is None:
                self.abort()
            else:
                self._state = "aborted"
                self._abort_quietly()

    # adapters implement these
    def _write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


class ReaderBase:
    """Chunk iteration and context management shared by the adapters' readers."""

    def __init__(self, key: str, size: int, metadata: dict[str, str], chunk_size: int):
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.key = key
        self.size = size
        self.metadata = metadata
        self.chunk_size = chunk_size
        self._closed = False

    def read(self, n: int = -1) -> bytes:
        if self._closed:
            raise ValueError(f"read on a closed blob reader ({self.key})")
        return self._read(n)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(self.chunk_size):
            yield chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
