"""`BlobStore` on a local filesystem: the default store, under the data directory.

Layout under `root`:
- `<key>`: one file per committed object: an 8-byte magic, a 4-byte big-endian header length, the
  metadata as JSON, then the object's bytes. Metadata and bytes live in one file so that one rename
  publishes both (no sidecar to keep in step).
- `.staging/<random>.tmp`: objects being written (mode 0600). A writer writes there, fsyncs the file,
  hard-links it as `<key>` and fsyncs that directory, then unlinks the temporary name: a crash leaves
  either no object or the whole new one, never half of one. `link(2)` fails when `<key>` exists (the
  port's create-only commit, `BlobExists`) and is atomic on POSIX within one filesystem, where a
  rename would replace silently. A crash between the link and the unlink leaves a second name of a
  committed object in `.staging`: `sweep_staged` removes that name, the object keeps its own.
  `sweep_staged` removes temporary files nobody wrote to for a while. On a filesystem without hard
  links (EPERM, ENOTSUP), commit checks that `<key>` is absent and renames: create-only there too,
  but two commits of one key at the same instant may both pass the check.

Directories are created on demand (each creation fsyncs its parent, so the new entry is durable) and
remembered in-process: a key whose directory this store already made or saw costs no `mkdir`, `stat`
or directory fsync beyond the one its rename needs. When a directory directly under `root` is created
(a repository's, in the `object_key` layout), its 256 fan-out subdirectories (`00`…`ff`) are created
with it, under one fsync, so that a repository's documents then never create a directory again.
A directory removed behind the store's back is recreated at the next commit into it.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from repository.blobs import (
    DEFAULT_CHUNK_SIZE,
    FANOUT_HEX,
    BlobExists,
    BlobNotFound,
    BlobStoreError,
    ReaderBase,
    StagingLost,
    WriterBase,
    check_key,
)

MAGIC = b"CRNTBLB1"
_LEN = struct.Struct(">I")
STAGING_DIR = ".staging"
_TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _header(metadata: Mapping[str, str]) -> bytes:
    body = json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return MAGIC + _LEN.pack(len(body)) + body


def _read_header(f: BinaryIO, key: str) -> tuple[dict[str, str], int]:
    """(metadata, header length) of an object file positioned at its start."""
    fixed = f.read(len(MAGIC) + _LEN.size)
    if len(fixed) != len(MAGIC) + _LEN.size or fixed[: len(MAGIC)] != MAGIC:
        raise BlobStoreError(f"blob {key!r} is not a Carnet blob file (bad header)")
    (n,) = _LEN.unpack(fixed[len(MAGIC) :])
    body = f.read(n)
    if len(body) != n:
        raise BlobStoreError(f"blob {key!r} has a truncated header")
    return json.loads(body), len(fixed) + n


class FilesystemBlobStore:
    """Blobs as files under `root`. `durable=False` skips fsync (tests and benchmarks only)."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True):
        self.root = Path(root)
        self.durable = durable
        self.staging = self.root / STAGING_DIR
        self.staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._root = os.fspath(self.root)
        self._staging = os.fspath(self.staging)
        self._known_dirs: set[str] = {self._root}  # directories known to exist (durably)
        self._dirs_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FilesystemBlobStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return Path(self._path(key))

    def _path(self, key: str) -> str:
        return os.path.join(self._root, *check_key(key).split("/"))

    # writing

    def open_staged(self, key: str, metadata: Mapping[str, str] | None = None) -> "FilesystemStagedWriter":
        return FilesystemStagedWriter(self, key, metadata)

    def _ensure_dir(self, directory: str) -> None:
        """`directory` exists and its entry is durable: free when this store already knows it."""
        if directory in self._known_dirs:
            return
        with self._dirs_lock:
            self._make_dirs(directory)

    def _forget_dir(self, directory: str) -> None:
        with self._dirs_lock:
            self._known_dirs.discard(directory)

    def _make_dirs(self, directory: str) -> None:
        """mkdir -p, fsyncing the parent of each directory created so that the new entry is durable
        (an existing directory needs none). Called with `_dirs_lock` held."""
        missing: list[str] = []
        d = directory
        while d not in self._known_dirs and not os.path.isdir(d):
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            else:
                if os.path.dirname(d) == self._root:
                    self._make_fanout(d)
                if self.durable:
                    _fsync_dir(os.path.dirname(d))
        self._known_dirs.add(directory)

    def _make_fanout(self, directory: str) -> None:
        """The `object_key` fan-out subdirectories of a new top-level directory, one fsync for all."""
        for i in range(16**FANOUT_HEX):
            sub = os.path.join(directory, f"{i:0{FANOUT_HEX}x}")
            try:
                os.mkdir(sub, 0o700)
            except FileExistsError:
                pass
            self._known_dirs.add(sub)
        if self.durable:
            _fsync_dir(directory)

    # reading

    def open_read(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> "FilesystemBlobReader":
        path = self._path(key)
        try:
            f = open(path, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise BlobStoreError(f"cannot open blob {key!r}: {exc}") from exc
        try:
            metadata, header_len = _read_header(f, key)
            size = os.fstat(f.fileno()).st_size - header_len
        except BaseException:
            f.close()
            raise
        return FilesystemBlobReader(key, size, metadata, chunk_size, f)

    def _stat(self, key: str) -> tuple[dict[str, str], int]:
        with self.open_read(key) as r:
            return r.metadata, r.size

    def read_metadata(self, key: str) -> dict[str, str]:
        return self._stat(key)[0]

    def size(self, key: str) -> int:
        return self._stat(key)[1]

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    # removing

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise BlobStoreError(f"cannot delete blob {key!r}: {exc}") from exc
        if self.durable:
            _fsync_dir(os.path.dirname(path))
        # Empty directories are kept: removing them would race with a writer about to rename into them.

    def sweep_staged(self, older_than_seconds: float) -> int:
        limit = time.time() - older_than_seconds
        removed = 0
        for entry in os.scandir(self._staging):
            if not entry.name.endswith(_TMP_SUFFIX):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime <= limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # committed or aborted meanwhile
                continue
        if removed and self.durable:
            _fsync_dir(self.staging)
        return removed


def _publish(tmp: str, target: str) -> None:
    """`target` becomes a name of the staged file `tmp`, atomically, only if `target` does not exist
    (FileExistsError otherwise; see the module docstring). `tmp` keeps its name."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(target):  # no hard links here: check, then rename (not atomic; docstring)
            raise FileExistsError(errno.EEXIST, "exists", target) from None
        os.rename(tmp, target)  # `tmp` is gone then: the caller's unlink finds nothing


class FilesystemStagedWriter(WriterBase):
    def __init__(self, store: FilesystemBlobStore, key: str, metadata: Mapping[str, str] | None):
        super().__init__(key, metadata)
        self._store = store
        self._tmp = os.path.join(store._staging, f"{uuid.uuid4().hex}{_TMP_SUFFIX}")
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise BlobStoreError(f"cannot stage blob {key!r}: {exc}") from exc
        self._file = os.fdopen(fd, "wb", buffering=DEFAULT_CHUNK_SIZE)
        try:
            self._file.write(_header(self.metadata))
        except OSError as exc:
            self._abort_quietly()
            raise BlobStoreError(f"cannot stage blob {key!r}: {exc}") from exc

    def _write(self, data) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob {self.key!r}: {exc}") from exc

    def _commit(self) -> None:
        store = self._store
        target = store._path(self.key)
        parent = os.path.dirname(target)
        try:
            self._file.flush()
            if store.durable:
                os.fsync(self._file.fileno())
            self._file.close()
            store._ensure_dir(parent)
            try:
                _publish(self._tmp, target)
            except FileNotFoundError:
                if not os.path.exists(self._tmp):
                    raise
                store._forget_dir(parent)  # removed behind our back: make it again
                store._ensure_dir(parent)
                _publish(self._tmp, target)
            if store.durable:
                _fsync_dir(parent)
            try:
                os.unlink(self._tmp)  # the object is committed under its key: this is a second name
            except OSError:
                pass  # `sweep_staged` removes it
        except FileExistsError:
            raise BlobExists(self.key) from None
        except FileNotFoundError as exc:
            if not os.path.exists(self._tmp):
                raise StagingLost(f"staged data of blob {self.key!r} was swept before commit") from exc
            raise BlobStoreError(f"cannot commit blob {self.key!r}: {exc}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot commit blob {self.key!r}: {exc}") from exc

    def _abort(self) -> None:
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass


class FilesystemBlobReader(ReaderBase):
    def __init__(self, key: str, size: int, metadata: dict[str, str], chunk_size: int, f: BinaryIO):
        super().__init__(key, size, metadata, chunk_size)
        self._f = f

    def _read(self, n: int) -> bytes:
        if n is None or n < 0:
            return self._f.readall()  # type: ignore[attr-defined]
        # An unbuffered FileIO may return fewer bytes than asked: loop until n or the end.
        data = self._f.read(n)
        if data is None or len(data) == n or not data:
            return data or b""
        parts = [data]
        got = len(data)
        while got < n and (more := self._f.read(n - got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _close(self) -> None:
        self._f.close()
