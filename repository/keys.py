"""Master key and per-dossier data keys (DESIGN.md §3 rule 8, issue 3).

- The master key (AES-256) comes from the environment (`CARNET_MASTER_KEY`, base64 of 32 bytes)
  or from a key file, generated with mode 0600 on first start. Its id is derived from the key
  (a domain-separated SHA-256), so the same key has the same id wherever it is loaded from, and
  the id reveals nothing usable about the key. Key material never appears in a repr, a log line
  or an exception message.
- Each dossier (patient id) has its own AES-256 data key, stored only wrapped under the master
  key with AES-KW (RFC 3394), in `repository.schema.dossier_key` together with the id of the
  master key that wrapped it.
- `KeyVault.destroy` is crypto-shredding: the wrapped key is erased, every blob of the dossier
  becomes unreadable. `KeyVault.rotate` re-wraps every data key under a new master key, in
  batches, without touching a blob; an interrupted rotation is resumed by running it again.

Unwrapped data keys are cached in-process (`KeyCache`: at most `cache_size` keys, each for at most
`cache_ttl` seconds, 30 by default), for `data_key_for` (by dossier) and `get` (by key id), so that a
submission or a retrieve does not read and unwrap the key again. `destroy` empties the local cache of
the dossier at once; another node sharing the database may still use a key it cached before the
destroy for up to `cache_ttl` seconds (read documents of the dossier, or encrypt new ones under the
destroyed key, which then cannot be read). `cache_ttl=0` disables the cache.

Crypto-shredding erases the key from the live table. Copies that outlive it (database backups,
PostgreSQL WAL archives) still hold it wrapped under the master key: retire the master key
(rotate, then destroy the old key file) to make those copies unreadable too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
import threading
import time
from pathlib import Path
from collections import OrderedDict
from typing import Callable, Iterable, Mapping, Protocol

import attrs
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from repository.crypto import DataKey
from repository.schema import dossier_key

log = logging.getLogger(__name__)

MASTER_KEY_ENV = "CARNET_MASTER_KEY"
MASTER_KEY_SIZE = 32
ROTATE_BATCH = 500
KEY_CACHE_SIZE = 4096
KEY_CACHE_TTL = 30.0  # seconds: the cross-node staleness bound of crypto-shredding
_KEY_FILE_COMMENT = (
    "# Carnet master key (AES-256, base64). Keep it secret and backed up:\n"
    "# without it no stored document can be read.\n"
)


class KeyVaultError(Exception):
    """Base of the key errors (messages never carry key material)."""


class MasterKeyError(KeyVaultError):
    """No master key, or a malformed one (file or environment)."""


class DataKeyUnavailable(KeyVaultError):
    """A data key cannot be had: the blobs it encrypts cannot be read."""


class UnknownDataKey(DataKeyUnavailable):
    pass


class DataKeyDestroyed(DataKeyUnavailable):
    """The dossier's key was destroyed (crypto-shredding)."""


class WrongMasterKey(DataKeyUnavailable):
    """The data key is wrapped under a master key we do not have, or does not unwrap."""


@attrs.frozen(repr=False)
class MasterKey:
    id: str
    key: bytes = attrs.field()

    @key.validator
    def _check_key(self, _attribute, value: bytes) -> None:
        if len(value) != MASTER_KEY_SIZE:
            raise MasterKeyError("a master key is 32 bytes (AES-256)")

    @classmethod
    def from_bytes(cls, key: bytes) -> "MasterKey":
        return cls(master_key_id(key), bytes(key))

    @classmethod
    def from_base64(cls, text: str) -> "MasterKey":
        return cls.from_bytes(_decode_key(text))

    @classmethod
    def generate(cls) -> "MasterKey":
        return cls.from_bytes(os.urandom(MASTER_KEY_SIZE))

    def to_base64(self) -> str:
        return base64.b64encode(self.key).decode("ascii")

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r})"


def master_key_id(key: bytes) -> str:
    return "mk-" + hashlib.sha256(b"carnet master key id v1\x00" + key).hexdigest()[:24]


def _decode_key(text: str) -> bytes:
    text = text.strip()
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text.encode("ascii"))
        else:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MasterKeyError("master key is not valid base64") from None
    if len(raw) != MASTER_KEY_SIZE:
        raise MasterKeyError(f"master key must decode to {MASTER_KEY_SIZE} bytes, got {len(raw)}")
    return raw


def load_master_key(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> MasterKey:
    """The master key: `CARNET_MASTER_KEY` (base64) when set, else the key file at `path`,
    generated (32 random bytes, mode 0600) when missing."""
    environ = os.environ if environ is None else environ
    value = environ.get(MASTER_KEY_ENV, "").strip()
    if value:
        try:
            return MasterKey.from_base64(value)
        except MasterKeyError as error:
            raise MasterKeyError(f"{MASTER_KEY_ENV}: {error}") from None
    if path is None:
        raise MasterKeyError(f"no master key: set {MASTER_KEY_ENV} or configure a key file")
    path = Path(path)
    if not path.exists():
        try:
            return write_master_key_file(path, MasterKey.generate())
        except FileExistsError:
            pass  # another process created it first: use theirs
    return read_master_key_file(path)


def read_master_key_file(path: str | os.PathLike) -> MasterKey:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise MasterKeyError(f"cannot read master key file {path}: {type(error).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("master key file %s is accessible to group or others (mode %o); use 0600", path, mode & 0o777)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise MasterKeyError(f"master key file {path} must hold one base64 line")
    try:
        return MasterKey.from_base64(lines[0])
    except MasterKeyError as error:
        raise MasterKeyError(f"master key file {path}: {error}") from None


def write_master_key_file(path: str | os.PathLike, master: MasterKey) -> MasterKey:
    """Write `master` to a new file, mode 0600, atomically (a temporary file, fsync, then a hard
    link, which fails if the file exists: FileExistsError, never an overwrite)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (_KEY_FILE_COMMENT + master.to_base64() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return master


def _now_dtm(clock: Callable[[], float]) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(clock()))


def _wrap(master: MasterKey, key: DataKey) -> bytes:
    return aes_key_wrap(master.key, key.key)  # RFC 3394: 40 bytes


def _unwrap(masters: Mapping[str, MasterKey], key_id: str, wrapped: bytes, master_id: str) -> DataKey:
    master = masters.get(master_id)
    if master is None:
        raise WrongMasterKey(f"data key {key_id} is wrapped under master key {master_id}, which is not loaded")
    try:
        return DataKey(key_id, aes_key_unwrap(master.key, bytes(wrapped)))
    except InvalidUnwrap:
        raise WrongMasterKey(f"data key {key_id} does not unwrap under master key {master_id}") from None


class KeyCache:
    """A bounded (LRU), short-lived (TTL) map of unwrapped data keys: dossier → key and key id → key.

    Thread-safe. `invalidate(patient_id)` drops the dossier's entries at once and makes any lookup
    that started before it unable to cache what it read (a generation counter), so a destroy is never
    undone locally by a concurrent read."""

    def __init__(self, size: int = KEY_CACHE_SIZE, ttl: float = KEY_CACHE_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._by_patient: OrderedDict[str, tuple[float, DataKey]] = OrderedDict()
        self._by_id: OrderedDict[str, tuple[float, DataKey, str | None]] = OrderedDict()
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl > 0

    @property
    def generation(self) -> int:
        return self._generation

    def for_patient(self, patient_id: str) -> DataKey | None:
        return self._lookup(self._by_patient, patient_id)

    def by_id(self, key_id: str) -> DataKey | None:
        return self._lookup(self._by_id, key_id)

    def _lookup(self, table: OrderedDict, name: str) -> DataKey | None:
        if not self.enabled:
            return None
        with self._lock:
            hit = table.get(name)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del table[name]
                return None
            table.move_to_end(name)
            return hit[1]

    def put(self, key: DataKey, patient_id: str | None, *, generation: int, live: bool) -> None:
        """Remember `key` (of `patient_id`; `live`: the dossier's current key) if no invalidation
        happened since `generation` was read."""
        if not self.enabled:
            return
        with self._lock:
            if generation != self._generation:
                return
            expires = self._clock() + self.ttl
            self._by_id[key.id] = (expires, key, patient_id)
            self._by_id.move_to_end(key.id)
            if live and patient_id is not None:
                self._by_patient[patient_id] = (expires, key)
                self._by_patient.move_to_end(patient_id)
            for table in (self._by_id, self._by_patient):
                while len(table) > self.size:
                    table.popitem(last=False)

    def invalidate(self, patient_id: str | None = None) -> None:
        """Forget the dossier's keys (every key when `patient_id` is None)."""
        with self._lock:
            self._generation += 1
            if patient_id is None:
                self._by_patient.clear()
                self._by_id.clear()
                return
            self._by_patient.pop(patient_id, None)
            for key_id in [k for k, v in self._by_id.items() if v[2] == patient_id]:
                del self._by_id[key_id]

    def __len__(self) -> int:
        return len(self._by_id)


class KeyVaultPort(Protocol):
    """The KeyVault port (DESIGN.md §1): `KeyVault` (SQL) and `MemoryKeyVault` (fake)."""

    def data_key_for(self, patient_id: str, create: bool = True) -> DataKey: ...

    def get(self, key_id: str) -> DataKey: ...

    def destroy(self, patient_id: str) -> int: ...

    def rotate(self, new_master: MasterKey, batch_size: int = ROTATE_BATCH) -> int: ...


class KeyVault:
    """Data keys in `dossier_key`, wrapped under `master`. `retired` master keys still unwrap
    (a rotation in progress elsewhere); new keys are always wrapped under `master`."""

    def __init__(
        self,
        engine: Engine,
        master: MasterKey,
        *,
        retired: Iterable[MasterKey] = (),
        clock: Callable[[], float] = time.time,
        create_attempts: int = 5,
        cache_size: int = KEY_CACHE_SIZE,
        cache_ttl: float = KEY_CACHE_TTL,
        cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.cache = KeyCache(cache_size, cache_ttl, cache_clock)
        self.master = master
        self._masters = {m.id: m for m in retired}
        self._masters[master.id] = master
        self._clock = clock
        self._create_attempts = create_attempts

    def data_key_for(self, patient_id: str, create: bool = True) -> DataKey:
        """The dossier's live data key, created on first use. Two nodes creating it at once end
        with one key: the database's unique index lets one INSERT win, the other reads it.
        Cached (see `KeyCache`)."""
        cached = self.cache.for_patient(patient_id)
        if cached is not None:
            return cached
        generation = self.cache.generation
        key = self._data_key_for(patient_id, create)
        self.cache.put(key, patient_id, generation=generation, live=True)
        return key

    def _data_key_for(self, patient_id: str, create: bool) -> DataKey:
        t = dossier_key
        query = select(t.c.key_id, t.c.wrapped_key, t.c.master_key_id).where(
            t.c.patient_id == patient_id, t.c.destroyed_at.is_(None)
        )
        for _ in range(self._create_attempts):
            with self.engine.connect() as conn:
                row = conn.execute(query).first()
            if row is not None:
                return _unwrap(self._masters, row.key_id, row.wrapped_key, row.master_key_id)
            if not create:
                raise UnknownDataKey(f"no data key for dossier {patient_id}")
            key = DataKey.generate()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(t).values(
                            key_id=key.id,
                            patient_id=patient_id,
                            wrapped_key=_wrap(self.master, key),
                            master_key_id=self.master.id,
                            created_at=_now_dtm(self._clock),
                        )
                    )
                return key
            except IntegrityError:
                continue  # another node created it first: read theirs
        raise KeyVaultError(f"could not create or read the data key of dossier {patient_id}")

    def get(self, key_id: str) -> DataKey:
        """The data key `key_id` (live or of a rotated master), to read a blob. Cached (`KeyCache`)."""
        cached = self.cache.by_id(key_id)
        if cached is not None:
            return cached
        generation = self.cache.generation
        t = dossier_key
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.c.wrapped_key, t.c.master_key_id, t.c.destroyed_at, t.c.patient_id)
                .where(t.c.key_id == key_id)
            ).first()
        if row is None:
            raise UnknownDataKey(f"unknown data key {key_id}")
        if row.wrapped_key is None:
            raise DataKeyDestroyed(f"data key {key_id} was destroyed on {row.destroyed_at}")
        key = _unwrap(self._masters, key_id, row.wrapped_key, row.master_key_id)
        self.cache.put(key, row.patient_id, generation=generation, live=False)
        return key

    def destroy(self, patient_id: str) -> int:
        """Crypto-shred the dossier: erase its wrapped key. Returns the number of keys destroyed
        (0 or 1). A later `data_key_for` creates a new key for new documents. This node's cache
        forgets the key at once; other nodes' within `cache_ttl` seconds."""
        t = dossier_key
        self.cache.invalidate(patient_id)
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(t)
                    .where(t.c.patient_id == patient_id, t.c.destroyed_at.is_(None))
                    .values(wrapped_key=None, master_key_id=None, destroyed_at=_now_dtm(self._clock))
                )
        finally:
            self.cache.invalidate(patient_id)  # and what a concurrent lookup read before the commit
        return result.rowcount

    def rotate(self, new_master: MasterKey, batch_size: int = ROTATE_BATCH) -> int:
        """Re-wrap every live data key not yet under `new_master`; returns how many were
        re-wrapped. One transaction per batch, in key id order: an interrupted rotation keeps
        what it committed and a new run finishes it (a second run returns 0). A key destroyed
        meanwhile stays destroyed. This vault then wraps new keys under `new_master`."""
        t = dossier_key
        masters = {**self._masters, new_master.id: new_master}
        page = (
            select(t.c.key_id, t.c.wrapped_key, t.c.master_key_id)
            .where(
                t.c.key_id > bindparam("after"),
                t.c.wrapped_key.is_not(None),
                t.c.master_key_id != new_master.id,
            )
            .order_by(t.c.key_id)
            .limit(batch_size)
        )
        rewrap = (
            update(t)
            .where(
                t.c.key_id == bindparam("k"),
                t.c.master_key_id == bindparam("old"),
                t.c.wrapped_key.is_not(None),
            )
            .values(wrapped_key=bindparam("w"), master_key_id=new_master.id)
        )
        count = 0
        after = ""
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(page, {"after": after}).all()
                if not rows:
                    break
                params = [
                    {
                        "k": r.key_id,
                        "old": r.master_key_id,
                        "w": _wrap(new_master, _unwrap(masters, r.key_id, r.wrapped_key, r.master_key_id)),
                    }
                    for r in rows
                ]
                for p in params:
                    count += conn.execute(rewrap, p).rowcount
            after = rows[-1].key_id
        self._masters = masters
        self.master = new_master
        log.info("rotated %d data keys to master key %s", count, new_master.id)
        return count


@attrs.define
class _MemoryRow:
    patient_id: str
    wrapped_key: bytes | None
    master_key_id: str | None


class MemoryKeyTable:
    """What `dossier_key` holds, in memory; several MemoryKeyVaults (nodes) may share one."""

    def __init__(self) -> None:
        self.rows: dict[str, _MemoryRow] = {}
        self.live: dict[str, str] = {}  # patient id -> key id
        self.lock = threading.Lock()


class MemoryKeyVault:
    """The in-memory fake of the KeyVault port, with the same semantics (keys are wrapped here
    too, so rotation and a wrong master key behave as in the database)."""

    def __init__(
        self, master: MasterKey, *, retired: Iterable[MasterKey] = (), table: MemoryKeyTable | None = None
    ) -> None:
        self.master = master
        self._masters = {m.id: m for m in retired}
        self._masters[master.id] = master
        self.table = MemoryKeyTable() if table is None else table

    def data_key_for(self, patient_id: str, create: bool = True) -> DataKey:
        t = self.table
        with t.lock:
            key_id = t.live.get(patient_id)
            if key_id is not None:
                row = t.rows[key_id]
                return _unwrap(self._masters, key_id, row.wrapped_key, row.master_key_id)
            if not create:
                raise UnknownDataKey(f"no data key for dossier {patient_id}")
            key = DataKey.generate()
            t.rows[key.id] = _MemoryRow(patient_id, _wrap(self.master, key), self.master.id)
            t.live[patient_id] = key.id
            return key

    def get(self, key_id: str) -> DataKey:
        t = self.table
        with t.lock:
            row = t.rows.get(key_id)
            if row is None:
                raise UnknownDataKey(f"unknown data key {key_id}")
            if row.wrapped_key is None:
                raise DataKeyDestroyed(f"data key {key_id} was destroyed")
            return _unwrap(self._masters, key_id, row.wrapped_key, row.master_key_id)

    def destroy(self, patient_id: str) -> int:
        t = self.table
        with t.lock:
            key_id = t.live.pop(patient_id, None)
            if key_id is None:
                return 0
            row = t.rows[key_id]
            row.wrapped_key = row.master_key_id = None
            return 1

    def rotate(self, new_master: MasterKey, batch_size: int = ROTATE_BATCH) -> int:
        t = self.table
        masters = {**self._masters, new_master.id: new_master}
        count = 0
        with t.lock:
            for key_id, row in sorted(t.rows.items()):
                if row.wrapped_key is None or row.master_key_id == new_master.id:
                    continue
                row.wrapped_key = _wrap(new_master, _unwrap(masters, key_id, row.wrapped_key, row.master_key_id))
                row.master_key_id = new_master.id
                count += 1
        self._masters = masters
        self.master = new_master
        return count
