"""Fixtures of the repository tests: moto's S3 server as a separate process, S3 blob stores on it.

The real `minio` client talks HTTP to `python -m moto.server` on 127.0.0.1 (a free port); the server is
started once per session and always terminated. Each `s3_store` gets a bucket of its own.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator

import pytest

from registry.store import RegistryStore
from repository import pending as P
from repository import schema as RS
from repository.keys import KeyVault, MasterKey
from repository_support import PATIENT

S3_ACCESS_KEY = "carnet-test"
S3_SECRET_KEY = "carnet-test-secret"
S3_REGION = "us-east-1"
S3_TEST_PART_SIZE = 5 * 1024 * 1024  # the S3 minimum, so that tests reach multipart with little data


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_answering(url: str, proc: subprocess.Popen, log_path, timeout: float = 30.0, context=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                resp.read()
                return
        except urllib.error.HTTPError:
            return  # it answers (any HTTP status will do)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer at {url} within {timeout}s: {log_path.read_text()[-2000:]}")


@contextlib.contextmanager
def moto_server(log_dir, *extra: str, context=None) -> Iterator[str]:
    """'127.0.0.1:<port>' of a `python -m moto.server` process (`extra`: its options, e.g. a TLS
    certificate; `context`: the ssl context to reach it with then), always terminated."""
    port = _free_port()
    log_path = log_dir / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        scheme = "https" if context is not None else "http"
        _wait_until_answering(f"{scheme}://127.0.0.1:{port}/", proc, log_path, context=context)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """'127.0.0.1:<port>' of a moto S3 server process running for the whole session."""
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_settings(s3_endpoint) -> dict:
    """How to reach the session's S3 server (for code that builds its own client, e.g. a subprocess)."""
    return {"endpoint": s3_endpoint, "access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY, "region": S3_REGION}


@pytest.fixture
def s3_store_factory(s3_endpoint):
    """make(part_size=..., bucket=None) → an S3BlobStore on a new bucket of the session's moto server."""
    from repository.blobs.s3 import S3BlobStore

    def make(part_size: int = S3_TEST_PART_SIZE, bucket: str | None = None) -> S3BlobStore:
        return S3BlobStore(
            s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, bucket or f"carnet-{uuid.uuid4().hex[:20]}",
            secure=False, region=S3_REGION, part_size=part_size, create_bucket=True,
        )

    return make


@pytest.fixture
def s3_store(s3_store_factory):
    """An S3BlobStore (5 MiB parts) on a bucket of its own."""
    return s3_store_factory()


@pytest.fixture
def store(engine):
    """A registry store on `engine`, with the repository's own tables, that knows PATIENT."""
    RS.create_schema(engine)
    P.create_schema(engine)
    s = RegistryStore(engine)
    s.add_patient(PATIENT)
    return s


@pytest.fixture
def vault(engine, store):
    return KeyVault(engine, MasterKey.generate())
