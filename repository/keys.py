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
    ) -> None:
        self.engine = engine
        self.master = master
        self._masters = {m.id: m for m in retired}
        self._masters[master.id] = master
        self._clock = clock
        self._create_attempts = create_attempts

    def data_key_for(self, patient_id: str, create: bool = True) -> DataKey:
        """The dossier's live data key, created on first use. Two nodes creating it at once end
        with one key: the database's unique index lets one INSERT win, the other reads it."""
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
        t = dossier_key
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.c.wrapped_key, t.c.master_key_id, t.c.destroyed_at).where(t.c.key_id == key_id)
            ).first()
        if row is None:
            raise UnknownDataKey(f"unknown data key {key_id}")
        if row.wrapped_key is None:
            raise DataKeyDestroyed(f"data key {key_id} was destroyed on {row.destroyed_at}")
        return _unwrap(self._masters, key_id, row.wrapped_key, row.master_key_id)

    def destroy(self, patient_id: str) -> int:
        """Crypto-shred the dossier: erase its wrapped key. Returns the number of keys destroyed
        (0 or 1). A later `data_key_for` creates a new key for new documents."""
        t = dossier_key
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t)
                .where(t.c.patient_id == patient_id, t.c.destroyed_at.is_(None))
                .values(wrapped_key=None, master_key_id=None, destroyed_at=_now_dtm(self._clock))
            )
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
