"""Master key loading and the dossier key vault (repository/keys.py).

The vault tests form the KeyVault port's contract: they run on the SQL adapter (SQLite and
PostgreSQL, through `db_url`) and on the in-memory fake.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from sqlalchemy import insert, select

from registry.db import make_engine
from repository import schema
from repository.crypto import BlobIntegrityError, DataKey, DocumentBinding, decrypt, encrypt, read_header
from repository.keys import (
    MASTER_KEY_ENV,
    DataKeyDestroyed,
    KeyVault,
    MasterKey,
    MasterKeyError,
    MemoryKeyTable,
    MemoryKeyVault,
    UnknownDataKey,
    WrongMasterKey,
    _MemoryRow,
    load_master_key,
)

INS = "1234567890123^^^&1.2.250.1.213.1.4.10&ISO^NH"
INS2 = "2234567890123^^^&1.2.250.1.213.1.4.10&ISO^NH"
DOC = DocumentBinding("1.2.250.1.999.1", "1.2.250.1.999.2.1")


# --- master key --------------------------------------------------------------------------------


def test_master_key_file_is_created_0600_and_reused(tmp_path):
    path = tmp_path / "keys" / "master.key"
    first = load_master_key(path, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.key) == 32
    second = load_master_key(path, {})
    assert second == first
    assert first.id == MasterKey.from_bytes(first.key).id and first.id.startswith("mk-")
    assert load_master_key(tmp_path / "other.key", {}) != first  # random each time
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary file left


def test_master_key_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        load_master_key(tmp_path / "master.key", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


def test_concurrent_first_starts_share_one_master_key(tmp_path):
    path = tmp_path / "master.key"
    barrier = threading.Barrier(8)
    keys: list[MasterKey] = []

    def start() -> None:
        barrier.wait()
        keys.append(load_master_key(path, {}))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert load_master_key(path, {}) == keys[0]


def test_master_key_from_the_environment_wins(tmp_path):
    key = os.urandom(32)
    env = {MASTER_KEY_ENV: base64.b64encode(key).decode()}
    master = load_master_key(tmp_path / "master.key", env)
    assert master.key == key and master.id == MasterKey.from_bytes(key).id
    assert not (tmp_path / "master.key").exists()
    assert load_master_key(None, {MASTER_KEY_ENV: base64.urlsafe_b64encode(key).decode()}) == master


@pytest.mark.parametrize(
    "value", ["not base64!", base64.b64encode(b"short").decode(), base64.b64encode(os.urandom(33)).decode()]
)
def test_a_bad_master_key_in_the_environment_is_refused_without_echoing_it(value):
    with pytest.raises(MasterKeyError) as info:
        load_master_key(None, {MASTER_KEY_ENV: value})
    assert value not in str(info.value)


def test_no_master_key_at_all_is_an_error():
    with pytest.raises(MasterKeyError):
        load_master_key(None, {})


@pytest.mark.parametrize("content", ["", "# only a comment\n", "abc\n", "a\nb\n"])
def test_a_malformed_master_key_file_is_refused(tmp_path, content):
    path = tmp_path / "master.key"
    path.write_text(content)
    with pytest.raises(MasterKeyError):
        load_master_key(path, {})


def test_a_readable_master_key_file_is_used_with_a_warning(tmp_path, caplog):
    path = tmp_path / "master.key"
    master = load_master_key(path, {})
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="repository.keys"):
        assert load_master_key(path, {}) == master
    assert "0600" in caplog.text
    assert master.to_base64() not in caplog.text


def test_master_key_material_is_not_in_repr():
    master = MasterKey.generate()
    assert master.to_base64() not in repr(master) and master.key.hex() not in repr(master)


# --- the vault (contract: SQL on SQLite and PostgreSQL, and the in-memory fake) -----------------


class Backend:
    """Makes vaults ("nodes") sharing one key table, and reads that table."""

    def __init__(self, kind: str, db_url) -> None:
        self.kind = kind
        self.engines = []
        self.table = MemoryKeyTable()
        self.db_url = db_url
        if kind == "sql":
            schema.create_schema(self.engine())

    def engine(self):
        url, search_path = self.db_url
        engine = make_engine(url, pg_search_path=search_path)
        self.engines.append(engine)
        return engine

    def vault(self, master: MasterKey, retired=()):
        if self.kind == "memory":
            return MemoryKeyVault(master, retired=retired, table=self.table)
        return KeyVault(self.engine(), master, retired=retired)

    def rows(self) -> dict[str, tuple[str, bytes | None, str | None]]:
        """key id -> (patient id, wrapped key, master key id)"""
        if self.kind == "memory":
            return {k: (r.patient_id, r.wrapped_key, r.master_key_id) for k, r in self.table.rows.items()}
        t = schema.dossier_key
        with self.engines[0].connect() as c:
            rows = c.execute(select(t.c.key_id, t.c.patient_id, t.c.wrapped_key, t.c.master_key_id)).all()
        return {
            r.key_id: (r.patient_id, None if r.wrapped_key is None else bytes(r.wrapped_key), r.master_key_id)
            for r in rows
        }

    def plant(self, key_id: str, patient_id: str, wrapped: bytes, master_id: str) -> None:
        """A row as another deployment (another master key) would have written it."""
        if self.kind == "memory":
            self.table.rows[key_id] = _MemoryRow(patient_id, wrapped, master_id)
            self.table.live[patient_id] = key_id
            return
        with self.engines[0].begin() as c:
            c.execute(
                insert(schema.dossier_key).values(
                    key_id=key_id, patient_id=patient_id, wrapped_key=wrapped, master_key_id=master_id,
                    created_at="20260101000000",
                )
            )

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture(params=["sql", "memory"])
def backend(request, db_url):
    url, _ = db_url
    if request.param == "memory" and not url.startswith("sqlite"):
        pytest.skip("the in-memory fake runs once")
    b = Backend(request.param, db_url)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def master():
    return MasterKey.generate()


def test_a_dossier_key_is_created_once_and_stored_only_wrapped(backend, master):
    vault = backend.vault(master)
    key = vault.data_key_for(INS)
    assert vault.data_key_for(INS) == key
    assert vault.get(key.id) == key
    assert vault.data_key_for(INS2) != key
    rows = backend.rows()
    patient, wrapped, master_id = rows[key.id]
    assert patient == INS and master_id == master.id
    assert key.key not in wrapped and len(wrapped) == 40  # RFC 3394: 32-byte key + 8
    assert aes_key_unwrap(master.key, wrapped) == key.key
    assert len(rows) == 2


def test_without_create_a_missing_dossier_key_is_an_error(backend, master):
    vault = backend.vault(master)
    with pytest.raises(UnknownDataKey):
        vault.data_key_for(INS, create=False)
    with pytest.raises(UnknownDataKey):
        vault.get("0" * 32)
    assert backend.rows() == {}


def test_concurrent_creation_on_two_nodes_yields_one_key(backend, master):
    nodes = [backend.vault(master), backend.vault(master)]
    barrier = threading.Barrier(8)
    keys: list[DataKey] = []
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            barrier.wait()
            keys.append(nodes[i % 2].data_key_for(INS))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(keys) == 8 and len(set(keys)) == 1
    assert list(backend.rows()) == [keys[0].id]


def test_a_wrong_master_key_does_not_unwrap(backend, master):
    key = backend.vault(master).data_key_for(INS)
    with pytest.raises(WrongMasterKey):
        backend.vault(MasterKey.generate()).get(key.id)  # another key: another id
    with pytest.raises(WrongMasterKey):
        backend.vault(MasterKey.generate()).data_key_for(INS)
    forged = MasterKey(master.id, os.urandom(32))  # same id, other key: AES-KW integrity check
    with pytest.raises(WrongMasterKey):
        backend.vault(forged).get(key.id)


def test_destroying_a_dossier_key_makes_its_blobs_unreadable(backend, master):
    vault = backend.vault(master)
    key = vault.data_key_for(INS)
    blob = encrypt(key, DOC, b"<ClinicalDocument/>")
    other = encrypt(vault.data_key_for(INS2), DOC, b"kept")
    assert decrypt(vault.get, DOC, blob) == b"<ClinicalDocument/>"

    assert vault.destroy(INS) == 1
    assert vault.destroy(INS) == 0
    assert backend.rows()[key.id][1:] == (None, None)  # the wrapped key is gone
    for node in (vault, backend.vault(master)):
        with pytest.raises(DataKeyDestroyed):
            node.get(key.id)
        with pytest.raises(DataKeyDestroyed):
            decrypt(node.get, DOC, blob)
    assert decrypt(vault.get, DOC, other) == b"kept"  # other dossiers untouched

    fresh = vault.data_key_for(INS)  # the dossier reopens with a new key; old blobs stay lost
    assert fresh.id != key.id
    with pytest.raises(BlobIntegrityError):
        decrypt(fresh, DOC, blob)


def test_rotation_rewraps_every_key_and_blobs_still_decrypt(backend, master):
    vault = backend.vault(master)
    patients = [f"{n:013d}^^^&1.2.250.1.213.1.4.10&ISO^NH" for n in range(7)]
    blobs = {p: encrypt(vault.data_key_for(p), DOC, p.encode()) for p in patients}
    vault.destroy(patients[3])
    new = MasterKey.generate()

    assert vault.rotate(new, batch_size=2) == 6
    rows = backend.rows()
    assert {m for _, w, m in rows.values() if w is not None} == {new.id}
    assert sum(w is None for _, w, _ in rows.values()) == 1  # the destroyed key stays destroyed

    after = backend.vault(new)  # a node restarted with the new master key only
    for p, blob in blobs.items():
        if p == patients[3]:
            with pytest.raises(DataKeyDestroyed):
                decrypt(after.get, DOC, blob)
        else:
            assert decrypt(after.get, DOC, blob) == p.encode()
    stale = backend.vault(master)
    with pytest.raises(WrongMasterKey):
        stale.get(read_header(blobs[patients[0]]).key_id)
    assert vault.rotate(new) == 0  # idempotent
    assert after.rotate(new) == 0
    assert vault.data_key_for("new^^^&1.2.3&ISO").id in backend.rows()
    assert backend.rows()[vault.data_key_for("new^^^&1.2.3&ISO").id][2] == new.id  # new keys under new


def test_an_interrupted_rotation_resumes(backend, master):
    vault = backend.vault(master)
    keys = [vault.data_key_for(f"P{n}^^^&1.2.3&ISO") for n in range(6)]
    ids = sorted(k.id for k in keys)
    foreign = MasterKey.generate()
    poison_id = ids[2][:31] + "g"  # sorts right after ids[2], before ids[3]
    assert ids[2] < poison_id < ids[3]
    backend.plant(poison_id, "foreign^^^&1.2.3&ISO", os.urandom(40), foreign.id)
    new = MasterKey.generate()

    with pytest.raises(WrongMasterKey):  # a key this node cannot unwrap stops the rotation
        vault.rotate(new, batch_size=1)
    rows = backend.rows()
    done = {k for k, (_, _, m) in rows.items() if m == new.id}
    assert done and done == {k for k in ids if k < poison_id}  # committed batches stay done

    # Resume on a node that has the new key and the old one as retired, and the foreign key too.
    resumed = backend.vault(new, retired=[master, foreign])
    with pytest.raises(WrongMasterKey):  # the planted row is not a valid wrapping: still refused
        resumed.rotate(new)
    if backend.kind == "memory":
        del backend.table.rows[poison_id]
    else:
        with backend.engines[0].begin() as c:
            c.execute(schema.dossier_key.delete().where(schema.dossier_key.c.key_id == poison_id))
    assert resumed.rotate(new, batch_size=4) == len(ids) - len(done)
    assert resumed.rotate(new) == 0
    for key in keys:
        assert backend.vault(new).get(key.id) == key


def test_retired_master_keys_still_unwrap(backend, master):
    key = backend.vault(master).data_key_for(INS)
    new = MasterKey.generate()
    node = backend.vault(new, retired=[master])
    assert node.get(key.id) == key  # a row not yet rotated
    fresh = node.data_key_for(INS2)
    assert backend.rows()[fresh.id][2] == new.id


# --- the data key cache (KeyVault only: the fake has no database to spare) ------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counting(engine) -> list[str]:
    """The SQL statements `engine` executes from now on."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt))
    return seen


@pytest.fixture
def sql_backend(db_url):
    b = Backend("sql", db_url)
    try:
        yield b
    finally:
        b.close()


def test_cached_keys_are_served_without_the_database(sql_backend, master):
    vault = sql_backend.vault(master)
    key = vault.data_key_for(INS)
    other = sql_backend.vault(master).data_key_for(INS2)
    statements = _counting(vault.engine)
    for _ in range(5):
        assert vault.data_key_for(INS) == key
        assert vault.get(key.id) == key
    assert vault.get(other.id) == other  # a key first seen by id
    assert vault.get(other.id) == other
    assert len([s for s in statements if "dossier_key" in s]) == 1


def test_cached_keys_expire_after_the_ttl(sql_backend, master):
    clock = _Clock()
    vault = KeyVault(sql_backend.engine(), master, cache_ttl=30, cache_clock=clock)
    key = vault.data_key_for(INS)
    statements = _counting(vault.engine)
    clock.now += 29
    assert vault.data_key_for(INS) == key and statements == []
    clock.now += 2
    assert vault.data_key_for(INS) == key and len(statements) == 1


def test_the_cache_is_bounded(sql_backend, master):
    vault = KeyVault(sql_backend.engine(), master, cache_size=3)
    keys = [vault.data_key_for(f"{i}^^^&1.2.250.1.213.1.4.8&ISO") for i in range(10)]
    assert len(vault.cache) == 3
    assert vault.get(keys[0].id) == keys[0]  # evicted: read again from the database
    assert len(vault.cache) == 3


def test_destroy_takes_effect_at_once_on_the_node_that_destroys(sql_backend, master):
    vault = sql_backend.vault(master)
    key = vault.data_key_for(INS)
    assert vault.get(key.id) == key  # cached both ways
    assert vault.destroy(INS) == 1
    with pytest.raises(DataKeyDestroyed):
        vault.get(key.id)
    with pytest.raises(UnknownDataKey):
        vault.data_key_for(INS, create=False)
    assert vault.data_key_for(INS) != key  # a new key for new documents


def test_another_node_sees_a_destroy_within_the_ttl(sql_backend, master):
    clock = _Clock()
    other = KeyVault(sql_backend.engine(), master, cache_ttl=30, cache_clock=clock)
    key = sql_backend.vault(master).data_key_for(INS)
    assert other.get(key.id) == key
    sql_backend.vault(master).destroy(INS)
    clock.now += 30.5
    with pytest.raises(DataKeyDestroyed):
        other.get(key.id)


def test_a_lookup_racing_a_destroy_does_not_cache_the_destroyed_key(sql_backend, master):
    vault = sql_backend.vault(master)
    key = vault.data_key_for(INS)
    vault.cache.invalidate()
    generation = vault.cache.generation  # a lookup starts and reads the row …
    vault.destroy(INS)  # … a destroy commits meanwhile …
    vault.cache.put(key, INS, generation=generation, live=True)  # … the lookup's result is not kept
    assert vault.cache.for_patient(INS) is None and vault.cache.by_id(key.id) is None


def test_a_zero_ttl_disables_the_cache(sql_backend, master):
    vault = KeyVault(sql_backend.engine(), master, cache_ttl=0)
    vault.data_key_for(INS)
    statements = _counting(vault.engine)
    vault.data_key_for(INS)
    assert len(statements) == 1 and len(vault.cache) == 0
