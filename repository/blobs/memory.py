"""`BlobStore` in memory: the fake for unit tests, with the same semantics as the real stores
(staging invisible until commit, sweep of abandoned staging, BlobNotFound). Not bounded in memory."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Mapping

from repository.blobs import (
    DEFAULT_CHUNK_SIZE,
    BlobExists,
    BlobNotFound,
    ReaderBase,
    StagingLost,
    WriterBase,
    check_key,
)


class MemoryBlobStore:
    """Objects in a dict. `clock` (seconds) decides what `sweep_staged` finds old."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._staged: dict[str, float] = {}  # staging token → last write time

    def __repr__(self) -> str:
        return f"MemoryBlobStore({len(self._objects)} objects)"

    def keys(self) -> list[str]:
        """Committed keys (for tests)."""
        with self._lock:
            return sorted(self._objects)

    def staged_count(self) -> int:
        """Staged, uncommitted writers (for tests)."""
        with self._lock:
            return len(self._staged)

    def open_staged(self, key: str, metadata: Mapping[str, str] | None = None) -> "MemoryStagedWriter":
        return MemoryStagedWriter(self, key, metadata)

    def _get(self, key: str) -> tuple[bytes, dict[str, str]]:
        check_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise BlobNotFound(key) from None

    def open_read(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> "MemoryBlobReader":
        data, metadata = self._get(key)
        return MemoryBlobReader(key, len(data), dict(metadata), chunk_size, io.BytesIO(data))

    def read_metadata(self, key: str) -> dict[str, str]:
        return dict(self._get(key)[1])

    def size(self, key: str) -> int:
        return len(self._get(key)[0])

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._objects

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def sweep_staged(self, older_than_seconds: float) -> int:
        limit = self._clock() - older_than_seconds
        with self._lock:
            old = [token for token, touched in self._staged.items() if touched <= limit]
            for token in old:
                del self._staged[token]
        return len(old)

    # used by the writer
    def _touch(self, token: str, *, new: bool = False) -> None:
        with self._lock:
            if not new and token not in self._staged:
                raise StagingLost("staged data was swept before commit")
            self._staged[token] = self._clock()

    def _publish(self, token: str, key: str, data: bytes, metadata: dict[str, str]) -> None:
        with self._lock:
            if self._staged.pop(token, None) is None:
                raise StagingLost(f"staged data of blob {key!r} was swept before commit")
            if key in self._objects:  # never replaces (repository.blobs)
                raise BlobExists(key)
            self._objects[key] = (data, metadata)

    def _discard(self, token: str) -> None:
        with self._lock:
            self._staged.pop(token, None)


class MemoryStagedWriter(WriterBase):
    def __init__(self, store: MemoryBlobStore, key: str, metadata: Mapping[str, str] | None):
        super().__init__(key, metadata)
        self._store = store
        self._token = uuid.uuid4().hex
        self._buffer = bytearray()
        store._touch(self._token, new=True)

    def _write(self, data) -> None:
        try:
            self._store._touch(self._token)
        except StagingLost:
            self._buffer = bytearray()
            raise StagingLost(f"staged data of blob {self.key!r} was swept") from None
        self._buffer += data

    def _commit(self) -> None:
        self._store._publish(self._token, self.key, bytes(self._buffer), dict(self.metadata))
        self._buffer = bytearray()

    def _abort(self) -> None:
        self._buffer = bytearray()
        self._store._discard(self._token)


class MemoryBlobReader(ReaderBase):
    def __init__(self, key: str, size: int, metadata: dict[str, str], chunk_size: int, f: io.BytesIO):
        super().__init__(key, size, metadata, chunk_size)
        self._f = f

    def _read(self, n: int) -> bytes:
        return self._f.read(n if n is not None and n >= 0 else -1)

    def _close(self) -> None:
        self._f.close()
