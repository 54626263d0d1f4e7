"""Fixtures of the repository wire tests: a whole Carnet (registry + repository) listening on
127.0.0.1, on SQLite and PostgreSQL (`engine`), and the moto S3 server process of
`tests/repository/conftest.py` (re-exported here: conftest fixtures are per directory)."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from carnet_support import running_carnet

from repository_wire.xds_wire import REPO_UID


def _repository_conftest():
    path = Path(__file__).resolve().parent.parent / "repository" / "conftest.py"
    spec = importlib.util.spec_from_file_location("repository_wire_s3_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_s3 = _repository_conftest()
s3_endpoint = _s3.s3_endpoint  # session-scoped moto server process, always terminated
S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION = _s3.S3_ACCESS_KEY, _s3.S3_SECRET_KEY, _s3.S3_REGION


@pytest.fixture
def carnet(engine, tmp_path):
    """A listening Carnet (filesystem blob store under tmp_path), stopped afterwards."""
    with running_carnet(engine, tmp_path, repository_unique_id=REPO_UID) as c:
        yield c


@pytest.fixture
def s3_carnet(engine, tmp_path, s3_endpoint):
    """(Carnet with blob_store="s3" on a bucket of its own, a minio client, the bucket name)."""
    from minio import Minio

    bucket = f"carnet-wire-{uuid.uuid4().hex[:16]}"
    with running_carnet(
        engine, tmp_path, repository_unique_id=REPO_UID, blob_store="s3", s3_endpoint=s3_endpoint,
        s3_access_key=S3_ACCESS_KEY, s3_secret_key=S3_SECRET_KEY, s3_bucket=bucket, s3_secure=False,
        s3_region=S3_REGION, s3_create_bucket=True,
    ) as carnet:
        yield carnet, Minio(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, region=S3_REGION), bucket
