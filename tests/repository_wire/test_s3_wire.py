"""S3 end to end: a Carnet whose blob store is S3 (the real `minio` client against moto's S3 server
process) provides and retrieves a 12 MB document over MTOM (multipart upload: > the 8 MiB part)."""

from __future__ import annotations

import hashlib

import pytest

from registry import constants as C
from repository.blobs import object_key
from repository_wire.xds_wire import (
    REPO_UID,
    SELF5,
    Doc,
    as_mtom,
    assert_success,
    entry_of,
    new_oid,
    pnr,
    post,
    read_soap,
    retrieve,
    sha1,
)

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def test_12_mb_document_over_mtom_is_stored_in_s3_encrypted_and_retrieved(s3_carnet, tmp_path):
    carnet, minio, bucket = s3_carnet
    carnet.store.add_patient(SELF5)
    content = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() * 64 for i in range(6 * 1024))  # 12 MiB
    assert len(content) == 12 * MB
    uid = new_oid()
    content_type, body = as_mtom(pnr(SELF5, [Doc(content, uid, "application/pdf")], inline=False),
                                 {"Document01": content}, mime_type="application/pdf")

    assert_success(read_soap(post(carnet.repository_url, body, content_type, timeout=120)))
    del body

    entry = entry_of(carnet.registry_url, SELF5, uid)
    assert (entry.hash, entry.size, entry.repository_unique_id) == (sha1(content), len(content), REPO_UID)

    # the object is in the bucket under its derived key, encrypted, with the fixed metadata contract
    key = object_key(REPO_UID, uid)
    assert [o.object_name for o in minio.list_objects(bucket, recursive=True)] == [key]
    stat = minio.stat_object(bucket, key)
    meta = {k.lower().removeprefix("x-amz-meta-"): v for k, v in stat.metadata.items()
            if k.lower().startswith("x-amz-meta-")}
    assert meta["patient-id"] == SELF5 and meta["mime-type"] == "application/pdf"
    assert stat.size > len(content)  # header + one GCM tag per segment
    response = minio.get_object(bucket, key, offset=5 * MB, length=64 * 1024)
    try:
        stored_slice = response.read()
    finally:
        response.close()
        response.release_conn()
    assert stored_slice not in content and content[5 * MB: 5 * MB + 4096] not in stored_slice
    assert not (tmp_path / "blobs").exists() or not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]

    got = retrieve(carnet.repository_url, [(REPO_UID, uid)], timeout=120)
    assert (got.status, got.errors) == (C.RESPONSE_SUCCESS, [])
    (repository_uid, mime, data) = got.documents[uid]
    assert (repository_uid, mime, len(data)) == (REPO_UID, "application/pdf", len(content))
    assert data == content and sha1(data) == entry.hash
