"""Contract of the `BlobStore` port (DESIGN.md §3 rules 6–7), run on the filesystem store, the in-memory
fake and the S3 store talking to moto's S3 server process through the real `minio` client."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repository.blobs import (
    BlobExists,
    BlobNotFound,
    BlobReader,
    BlobStore,
    BlobStoreError,
    StagedWriter,
    StagingLost,
    check_key,
    check_metadata,
    object_key,
)
from repository.blobs.fs import STAGING_DIR, FilesystemBlobStore
from repository.blobs.memory import MemoryBlobStore

from support import ROOT

MiB = 1024 * 1024
WRITE = 64 * 1024
BIG = 12 * MiB  # more than two S3 parts of the test stores (5 MiB)
ABANDONED = 6 * MiB  # more than one S3 part: the S3 store has started a multipart upload


@pytest.fixture(params=["fs", "memory", "s3"])
def blob_store(request, tmp_path):
    if request.param == "fs":
        return FilesystemBlobStore(tmp_path / "blobs")
    if request.param == "memory":
        return MemoryBlobStore()
    return request.getfixturevalue("s3_store")


def kind(store) -> str:
    return {FilesystemBlobStore: "fs", MemoryBlobStore: "memory"}.get(type(store), "s3")


def chunks(total: int, size: int = WRITE, seed: bytes = b"carnet"):
    """`total` deterministic pseudo-random bytes in chunks of `size`, never all in memory."""
    block = hashlib.sha256(seed).digest() * (size // 32 + 1)
    sent, n = 0, 0
    while sent < total:
        take = min(size, total - sent)
        head = n.to_bytes(8, "big")
        yield (head + block)[:take]
        sent += take
        n += 1


def sha256_of(parts) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    for part in parts:
        h.update(part)
        size += len(part)
    return h.hexdigest(), size


def put(store, key: str, total: int, metadata=None, seed: bytes = b"carnet") -> str:
    with store.open_staged(key, metadata) as w:
        for c in chunks(total, seed=seed):
            w.write(c)
        w.commit()
    return sha256_of(chunks(total, seed=seed))[0]


def read_all(store, key: str) -> bytes:
    with store.open_read(key) as r:
        return b"".join(r)


def assert_absent(store, key: str) -> None:
    assert not store.exists(key)
    with pytest.raises(BlobNotFound):
        store.open_read(key)
    with pytest.raises(BlobNotFound):
        store.size(key)
    with pytest.raises(BlobNotFound):
        store.read_metadata(key)


KEY = object_key("1.3.6.1.4.1.21367.2010.1.2.1125", "1.2.250.1.999.1.2.3.4^doc-1")


def test_adapters_implement_the_port(blob_store):
    assert isinstance(blob_store, BlobStore)
    w = blob_store.open_staged(KEY)
    assert isinstance(w, StagedWriter)
    w.abort()


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [0, 1, 5, WRITE + 7, BIG], ids=["empty", "1B", "5B", "64KiB+7", "12MiB"])
def test_round_trip(blob_store, total):
    digest = put(blob_store, KEY, total)
    assert blob_store.exists(KEY)
    assert blob_store.size(KEY) == total
    with blob_store.open_read(KEY, chunk_size=WRITE) as r:
        assert isinstance(r, BlobReader)
        assert r.size == total
        parts = list(r)
    assert all(0 < len(p) <= WRITE for p in parts)
    assert sha256_of(parts) == (digest, total)


def test_read_returns_exactly_what_is_asked(blob_store):
    put(blob_store, KEY, 0)
    assert read_all(blob_store, KEY) == b""
    blob_store.delete(KEY)  # commit never replaces
    w = blob_store.open_staged(KEY)
    w.write(b"0123456789")
    w.write(memoryview(b"abcdef"))
    w.write(bytearray(b"XYZ"))
    w.write(b"")
    assert w.bytes_written == 19
    w.commit()
    with blob_store.open_read(KEY) as r:
        assert r.read(4) == b"0123"
        assert r.read(10) == b"456789abcd"
        assert r.read(-1) == b"efXYZ"
        assert r.read(5) == b""
    with pytest.raises(ValueError):
        r.read(1)


def test_one_large_write_is_split_and_kept_whole(blob_store):
    data = b"".join(chunks(BIG, size=MiB))
    with blob_store.open_staged(KEY) as w:
        w.write(data)
        w.commit()
    assert read_all(blob_store, KEY) == data


# --- staging: nothing visible before commit, abort leaves nothing --------------------------------------------


def test_nothing_is_visible_before_commit(blob_store):
    w = blob_store.open_staged(KEY, {"kid": "k1"})
    for c in chunks(BIG):
        w.write(c)
    assert_absent(blob_store, KEY)
    w.commit()
    assert blob_store.size(KEY) == BIG
    assert blob_store.read_metadata(KEY) == {"kid": "k1"}


@pytest.mark.parametrize("total", [10, BIG], ids=["small", "multipart"])
def test_commit_never_replaces_an_object(blob_store, total):
    """Create-only: a key that gained an object while a writer was staging keeps that object; the
    writer's commit raises BlobExists and leaves nothing staged (ITI TF-2b §3.41.4.1.3: a stored
    document is never rewritten)."""
    late = blob_store.open_staged(KEY, {"kid": "late"})
    for c in chunks(total, seed=b"second"):
        late.write(c)
    first = put(blob_store, KEY, 3 * MiB, metadata={"kid": "first"}, seed=b"first")
    with pytest.raises(BlobExists) as raised:
        late.commit()
    assert raised.value.key == KEY
    with blob_store.open_read(KEY) as r:
        assert sha256_of(r) == (first, 3 * MiB)
    assert blob_store.read_metadata(KEY) == {"kid": "first"}
    assert blob_store.sweep_staged(0) == 0  # the loser's staged data is gone (S3: upload aborted)
    with pytest.raises(ValueError):
        late.commit()


def test_of_two_writers_of_one_key_exactly_one_commits(blob_store):
    import threading

    if kind(blob_store) == "s3":
        # moto checks If-None-Match, then completes the upload, with nothing held in between (its
        # responses.py); S3 and MinIO decide it atomically: the first write to finish wins, the
        # other gets 412. The create-only answer itself is checked on moto above.
        pytest.skip("moto's conditional writes are not atomic against each other (S3's and MinIO's are)")

    writers = [blob_store.open_staged(KEY, {"kid": f"w{n}"}) for n in range(2)]
    for n, w in enumerate(writers):
        for c in chunks(BIG, seed=bytes([n])):
            w.write(c)
    outcomes: list[object] = [None, None]
    barrier = threading.Barrier(2)

    def commit(n: int) -> None:
        barrier.wait()
        try:
            writers[n].commit()
            outcomes[n] = "committed"
        except BlobExists:
            outcomes[n] = "exists"

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["committed", "exists"]
    winner = outcomes.index("committed")
    assert blob_store.read_metadata(KEY) == {"kid": f"w{winner}"}
    with blob_store.open_read(KEY) as r:
        assert sha256_of(r) == sha256_of(chunks(BIG, seed=bytes([winner])))


def test_concurrent_readers_see_no_object_or_a_whole_one(blob_store):
    import threading

    size = 6 * MiB
    versions = {sha256_of(chunks(size, seed=bytes([n]))) for n in range(4)}
    seen: list[object] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                with blob_store.open_read(KEY) as r:
                    seen.append(sha256_of(r))
            except BlobNotFound:
                seen.append(None)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for n in range(4):
            put(blob_store, KEY, size, seed=bytes([n]))
            blob_store.delete(KEY)  # commit never replaces: each version replaces a deleted one
    finally:
        done.set()
        t.join(timeout=60)
    assert seen and set(seen) <= versions | {None}


@pytest.mark.parametrize("total", [10, BIG], ids=["small", "multipart"])
def test_abort_leaves_nothing(blob_store, total):
    w = blob_store.open_staged(KEY)
    for c in chunks(total):
        w.write(c)
    w.abort()
    w.abort()  # idempotent
    assert_absent(blob_store, KEY)
    assert blob_store.sweep_staged(0) == 0  # nothing left staged either
    with pytest.raises(ValueError):
        w.write(b"more")
    with pytest.raises(ValueError):
        w.commit()


def test_an_exception_inside_with_leaves_nothing(blob_store):
    with pytest.raises(RuntimeError, match="peer hung up"):
        with blob_store.open_staged(KEY) as w:
            for c in chunks(BIG):
                w.write(c)
            raise RuntimeError("peer hung up")
    assert_absent(blob_store, KEY)
    assert blob_store.sweep_staged(0) == 0


def test_leaving_with_without_commit_aborts(blob_store):
    with blob_store.open_staged(KEY) as w:
        w.write(b"never committed")
    assert_absent(blob_store, KEY)


def test_writer_states(blob_store):
    w = blob_store.open_staged(KEY)
    w.write(b"x")
    w.commit()
    with pytest.raises(ValueError):
        w.commit()
    with pytest.raises(ValueError):
        w.write(b"y")
    w.abort()  # a no-op once committed
    assert read_all(blob_store, KEY) == b"x"


# --- delete, metadata, not found ------------------------------------------------------------------------


def test_delete(blob_store):
    other = object_key("1.2.3", "1.2.3.5")
    put(blob_store, KEY, BIG)
    put(blob_store, other, 5)
    blob_store.delete(KEY)
    assert_absent(blob_store, KEY)
    blob_store.delete(KEY)  # idempotent
    assert read_all(blob_store, other) == next(chunks(5))
    put(blob_store, KEY, 7)  # the key can be used again
    assert blob_store.size(KEY) == 7


METADATA = {
    "kid": "dossier-2800175310042/v3",
    "cipher": "AES-256-GCM;segment=65536;nonce=96",
    "wrapped-key": "q83vEjRWeJCrze8SNFZ4kA==",
    "empty": "",
}


@pytest.mark.parametrize("total", [10, BIG], ids=["small", "multipart"])
def test_metadata_round_trip(blob_store, total):
    put(blob_store, KEY, total, METADATA)
    assert blob_store.read_metadata(KEY) == METADATA
    with blob_store.open_read(KEY) as r:
        assert r.metadata == METADATA
    other = object_key("1.2.3", "no-metadata")
    put(blob_store, other, 3)
    assert blob_store.read_metadata(other) == {}


@pytest.mark.parametrize(
    "metadata",
    [{"Kid": "x"}, {"kid": "é"}, {"kid": " padded"}, {"kid": "line\nbreak"}, {"": "x"}, {"k": "v" * 2000}],
)
def test_metadata_every_adapter_cannot_keep_is_refused(blob_store, metadata):
    with pytest.raises(ValueError):
        blob_store.open_staged(KEY, metadata)
    assert_absent(blob_store, KEY)


def test_blob_not_found(blob_store):
    missing = object_key("1.2.3", "never.stored")
    with pytest.raises(BlobNotFound) as info:
        blob_store.open_read(missing)
    assert info.value.key == missing
    assert not isinstance(info.value, BlobStoreError)  # "unknown document" is not an infrastructure failure
    assert_absent(blob_store, missing)


# --- sweep of abandoned staging ---------------------------------------------------------------------------


def abandon(store, key: str):
    w = store.open_staged(key)
    for c in chunks(ABANDONED):
        w.write(c)
    return w


def test_sweep_keeps_recent_staging(blob_store):
    if kind(blob_store) == "s3":
        pytest.skip("moto reports every multipart upload as initiated in 2010 (real S3/MinIO report the time)")
    w = abandon(blob_store, KEY)
    assert blob_store.sweep_staged(3600) == 0
    w.commit()
    assert blob_store.size(KEY) == ABANDONED


def test_sweep_removes_abandoned_staging(blob_store):
    k1, k2 = object_key("1.2.3", "a"), object_key("1.2.3", "b")
    w1, w2 = abandon(blob_store, k1), abandon(blob_store, k2)
    put(blob_store, KEY, 5)  # committed objects are not staging
    assert blob_store.sweep_staged(0) == 2
    assert blob_store.sweep_staged(0) == 0
    with pytest.raises(BlobStoreError) as info:  # a swept writer cannot publish a half object
        for c in chunks(MiB):
            w1.write(c)
        w1.commit()
    if kind(blob_store) != "s3":  # moto answers 500 (not NoSuchUpload) to a part of an aborted upload
        assert isinstance(info.value, StagingLost)
    w2.abort()  # aborting a swept writer is fine
    assert_absent(blob_store, k1)
    assert_absent(blob_store, k2)
    assert blob_store.size(KEY) == 5


_CRASHING_WRITER = """
import json, os, signal, sys
cfg = json.loads(sys.argv[1])
if cfg["kind"] == "fs":
    from repository.blobs.fs import FilesystemBlobStore
    store = FilesystemBlobStore(cfg["root"])
else:
    from repository.blobs.s3 import S3BlobStore
    store = S3BlobStore(cfg["endpoint"], cfg["access_key"], cfg["secret_key"], cfg["bucket"],
                        secure=False, region=cfg["region"], part_size=cfg["part_size"])
w = store.open_staged(cfg["key"], {"kid": "k"})
for _ in range(cfg["total"] // 65536):
    w.write(b"c" * 65536)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sweep_cleans_up_after_a_crashed_process(blob_store, request):
    """A process SIGKILLed while writing leaves nothing visible, and its staging is swept."""
    if kind(blob_store) == "memory":
        pytest.skip("the in-memory fake lives and dies with its process")
    if kind(blob_store) == "fs":
        cfg = {"kind": "fs", "root": str(blob_store.root)}
    else:
        cfg = {"kind": "s3", **request.getfixturevalue("s3_settings")}
        cfg.update(bucket=blob_store.bucket, part_size=blob_store.part_size)
    cfg["key"], cfg["total"] = KEY, ABANDONED
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, json.dumps(cfg)], cwd=ROOT, capture_output=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert_absent(blob_store, KEY)
    assert blob_store.sweep_staged(0) == 1
    assert blob_store.sweep_staged(0) == 0
    assert_absent(blob_store, KEY)


# --- keys -------------------------------------------------------------------------------------------------

ODD_IDS = [
    "1.2.3^ext",
    "1.2.3/4",
    "../../etc/passwd",
    "..",
    ".",
    "",
    ".hidden",
    "Dossier Médical ☃ 𝄞",
    "UPPER.lower",
    "upper.lower",
    "%41",
    "A",
    "with space\tand\nnewline",
    "urn:uuid:6e1b7d0c-0000-4000-8000-000000000001",
    "x" * 300,
    "é" * 300,
]


def test_odd_ids_round_trip_on_distinct_keys(blob_store):
    pairs = [("1.2.250.1.213.1.1.9", doc) for doc in ODD_IDS] + [(repo, "1.2.3") for repo in ODD_IDS]
    keys = [object_key(r, d) for r, d in pairs]
    assert len(set(keys)) == len(keys)
    assert len({k.lower() for k in keys}) == len(keys)
    for n, key in enumerate(keys):
        with blob_store.open_staged(key) as w:
            w.write(f"document {n}".encode())
            w.commit()
    for n, key in enumerate(keys):
        assert read_all(blob_store, key) == f"document {n}".encode()


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "../x", "a/.hidden", "a/b/", "a\\b", "é", "a b"])
def test_keys_outside_the_safe_alphabet_are_refused(blob_store, key):
    with pytest.raises(ValueError):
        blob_store.open_staged(key)
    with pytest.raises(ValueError):
        blob_store.open_read(key)
    with pytest.raises(ValueError):
        blob_store.exists(key)


def test_object_key_is_readable_and_stable():
    # <repository>/<fan-out: 2 hex digits of SHA-256 of both ids>/<document>; the ids stay readable
    repo, fan, doc = object_key("1.2.3", "1.2.3.4^ext").split("/")
    assert (repo, doc) == ("1.2.3", "1.2.3.4%5Eext")
    assert len(fan) == 2 and all(c in "0123456789abcdef" for c in fan)
    # the fan-out takes 256 values, and only those
    fans = {object_key("1.2.3", str(i)).split("/")[1] for i in range(5000)}
    assert fans == {f"{i:02x}" for i in range(256)}
    assert object_key("1.2.3", "4") == object_key("1.2.3", "4")
    assert object_key("1.2.3", "4") != object_key("1.2.3", "5")


ids = st.text(st.characters(blacklist_categories=("Cs",)), max_size=260)


def _path_safe(key: str) -> None:
    assert check_key(key) == key
    assert len(key.encode()) <= 1024
    segments = key.split("/")
    assert len(segments) == 3
    for seg in segments:
        assert seg and seg not in (".", "..") and not seg.startswith(".")
        assert len(seg.encode()) <= 255
        assert seg.isascii() and seg.isprintable() and " " not in seg and "\\" not in seg


@settings(max_examples=300)
@given(ids, ids, ids, ids)
def test_object_key_is_injective_and_path_safe(r1, d1, r2, d2):
    k1, k2 = object_key(r1, d1), object_key(r2, d2)
    _path_safe(k1)
    _path_safe(k2)
    assert object_key(r1, d1) == k1
    if (r1, d1) != (r2, d2):
        assert k1 != k2
        assert k1.lower() != k2.lower()  # distinct on case-insensitive filesystems too


@given(ids, st.text(min_size=1, max_size=3))
def test_object_key_of_near_identical_long_ids_differ(prefix, tail):
    long = "9" * 250 + prefix
    assert object_key("r", long) != object_key("r", long + tail)
    _path_safe(object_key("r", long + tail))


def test_check_metadata_copies_and_validates():
    src = {"kid": "x"}
    out = check_metadata(src)
    assert out == src and out is not src
    assert check_metadata(None) == {}


# --- bounded memory ---------------------------------------------------------------------------------------

HUGE = 50 * MiB


def test_memory_stays_bounded_on_write_and_read(blob_store):
    if kind(blob_store) == "memory":
        pytest.skip("the in-memory fake keeps whole objects by design")
    limit = 2 * MiB if kind(blob_store) == "fs" else 3 * blob_store.part_size
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        w = blob_store.open_staged(KEY)
        for c in chunks(HUGE):
            w.write(c)
        w.commit()
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        h = hashlib.sha256()
        with blob_store.open_read(KEY) as r:
            for part in r:
                h.update(part)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert write_peak < limit, f"write peak {write_peak / MiB:.1f} MiB"
    assert read_peak < 2 * MiB, f"read peak {read_peak / MiB:.1f} MiB"
    assert h.hexdigest() == sha256_of(chunks(HUGE))[0]


# --- filesystem specifics ---------------------------------------------------------------------------------


def test_fs_stages_private_temp_files_and_publishes_one_file(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    w = store.open_staged(KEY, {"kid": "k"})
    w.write(b"secret")
    staged = list((tmp_path / STAGING_DIR).iterdir())
    assert len(staged) == 1 and stat.S_IMODE(staged[0].stat().st_mode) == 0o600
    w.commit()
    assert list((tmp_path / STAGING_DIR).iterdir()) == []
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path.joinpath(*KEY.split("/"))]


def test_fs_staging_survives_a_new_store_on_the_same_root(tmp_path):
    """The staging directory is on the same filesystem as the objects (rename is atomic) and a restart
    sees what a crashed process left."""
    first = FilesystemBlobStore(tmp_path)
    w = first.open_staged(KEY)
    w.write(b"half")
    assert os.stat(first.staging).st_dev == os.stat(tmp_path).st_dev
    assert FilesystemBlobStore(tmp_path).sweep_staged(0) == 1


def _count_fsyncs(monkeypatch) -> dict[str, int]:
    """Counts os.fsync calls on directories and on files (by the descriptor's type)."""
    counts = {"dir": 0, "file": 0}
    real = os.fsync

    def fsync(fd):
        counts["dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return counts


def _put(store, key: str, data: bytes = b"x") -> None:
    w = store.open_staged(key, {"kid": "k"})
    w.write(data)
    w.commit()


def test_fs_first_blob_of_a_repository_creates_its_fanout_once(tmp_path, monkeypatch):
    store = FilesystemBlobStore(tmp_path)
    counts = _count_fsyncs(monkeypatch)
    _put(store, object_key("1.2.3", "first"))
    fan = sorted(p.name for p in (tmp_path / "1.2.3").iterdir())
    assert fan == [f"{i:02x}" for i in range(256)]
    assert counts["file"] == 1 and counts["dir"] >= 2  # the new directories, then the rename
    counts.update(dir=0, file=0)
    for i in range(50):  # later documents of the repository: the file's fsync and the rename's only
        _put(store, object_key("1.2.3", f"doc-{i}"))
    assert counts == {"file": 50, "dir": 50}
    assert sorted(p.name for p in (tmp_path / "1.2.3").iterdir()) == fan
    for i in range(50):
        assert store.open_read(object_key("1.2.3", f"doc-{i}")).read() == b"x"


def test_fs_existing_directories_of_a_restarted_store_need_no_fsync(tmp_path, monkeypatch):
    _put(FilesystemBlobStore(tmp_path), object_key("1.2.3", "a"))
    store = FilesystemBlobStore(tmp_path)
    counts = _count_fsyncs(monkeypatch)
    _put(store, object_key("1.2.3", "b"))
    assert counts == {"file": 1, "dir": 1}


def test_fs_directory_removed_behind_the_store_is_recreated(tmp_path):
    import shutil

    store = FilesystemBlobStore(tmp_path)
    _put(store, object_key("1.2.3", "a"))
    shutil.rmtree(tmp_path / "1.2.3")
    key = object_key("1.2.3", "b")
    _put(store, key, b"again")
    assert store.open_read(key).read() == b"again"
    assert list((tmp_path / STAGING_DIR).iterdir()) == []


def test_fs_nondurable_store_never_fsyncs(tmp_path, monkeypatch):
    store = FilesystemBlobStore(tmp_path, durable=False)
    counts = _count_fsyncs(monkeypatch)
    _put(store, object_key("1.2.3", "a"))
    store.delete(object_key("1.2.3", "a"))
    assert counts == {"file": 0, "dir": 0}
