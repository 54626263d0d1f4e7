"""`BlobStore` on S3-compatible object storage (MinIO, AWS S3, …) through the `minio` client.

Staging strategy: **upload straight to the final key, made visible only by the commit** — no copy.
- An object that fits in one part (`part_size`, 8 MiB by default, ≥ 5 MiB) is buffered in memory and
  sent by one PutObject at `commit()`. Before that nothing exists on the server; `abort()` or a crash
  simply drops the buffer.
- A larger object becomes an S3 multipart upload to the final key, started (with its metadata) when the
  first part is full; each full part is uploaded as it fills, so memory stays at about one part.
  S3 shows no object until CompleteMultipartUpload, which `commit()` sends: it publishes the whole
  object atomically. `abort()` sends AbortMultipartUpload; parts a crashed process left are found by
  `sweep_staged()` through ListMultipartUploads (the bucket is expected to be Carnet's own: the sweep
  aborts every old incomplete upload in it). A bucket lifecycle rule AbortIncompleteMultipartUpload
  (e.g. 1 day) is a good second net on real S3/MinIO.
- Metadata is S3 user metadata (`x-amz-meta-*`), hence given at `open_staged`: a multipart upload
  fixes it at CreateMultipartUpload.

The multipart calls use the client's low-level S3 API methods (`_create_multipart_upload`,
`_upload_part`, `_complete_multipart_upload`, `_abort_multipart_upload`, `_list_multipart_uploads`):
`put_object` would need a reader thread to be fed from a writer, and minio offers no public listing of
incomplete uploads. They are used only in this module (minio 7.2.x).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
from collections.abc import Iterator, Mapping

import certifi
import urllib3
from lxml import etree
from minio import Minio
from minio.datatypes import Part
from minio.error import MinioException, S3Error
from minio.helpers import md5sum_hash

from repository.blobs import (
    DEFAULT_CHUNK_SIZE,
    BlobExists,
    BlobNotFound,
    BlobStoreError,
    ReaderBase,
    StagingLost,
    WriterBase,
    check_key,
)
from soap.xmlparse import safe_parser

MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last is at least 5 MiB
DEFAULT_PART_SIZE = 8 * 1024 * 1024
_META_PREFIX = "x-amz-meta-"
_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_NO_UPLOAD = {"NoSuchUpload"}
_EXISTS = {"PreconditionFailed", "ConditionalRequestConflict"}
_IF_NONE_MATCH = {"If-None-Match": "*"}


@contextlib.contextmanager
def _s3_errors(what: str, key: str) -> Iterator[None]:
    """Map client failures to the port's errors (BlobNotFound / BlobExists / BlobStoreError)."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _NOT_FOUND:
            raise BlobNotFound(key) from None
        if exc.code in _EXISTS:
            raise BlobExists(key) from None
        raise BlobStoreError(f"S3 {what} of {key!r} failed: {exc.code}: {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise BlobStoreError(f"S3 {what} of {key!r} failed: {exc}") from exc


def _user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower()[len(_META_PREFIX) :]: v for k, v in headers.items() if k.lower().startswith(_META_PREFIX)}


class S3BlobStore:
    """Blobs as objects of one bucket. `endpoint` is 'host:port' (or an http(s):// URL, whose scheme then
    decides TLS); `ca_file` adds a CA bundle for TLS; `create_bucket` creates a missing bucket."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = True,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        *,
        create_bucket: bool = False,
        ca_file: str | None = None,
        cert_check: bool = True,
        timeout_seconds: float = 60.0,
    ):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3)")
        if "://" in endpoint:
            scheme, _, endpoint = endpoint.partition("://")
            secure = scheme.lower() == "https"
            endpoint = endpoint.rstrip("/")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
            maxsize=16,
            cert_reqs="CERT_REQUIRED" if cert_check else "CERT_NONE",
            ca_certs=ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
            region=region, http_client=http, cert_check=cert_check,
        )
        self.bucket = bucket
        self.part_size = part_size
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (two Carnets starting together are fine)."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise BlobStoreError(f"cannot create bucket {self.bucket!r}: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BlobStoreError(f"cannot create bucket {self.bucket!r}: {exc}") from exc

    # writing

    def open_staged(self, key: str, metadata: Mapping[str, str] | None = None) -> "S3StagedWriter":
        return S3StagedWriter(self, key, metadata)

    # reading

    def open_read(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> "S3BlobReader":
        check_key(key)
        with _s3_errors("GetObject", key):
            response = self.client.get_object(self.bucket, key)
        try:
            size = int(response.headers["Content-Length"])
            metadata = _user_metadata(response.headers)
        except BaseException:
            response.close()
            response.release_conn()
            raise
        return S3BlobReader(key, size, metadata, chunk_size, response)

    def _stat(self, key: str):
        check_key(key)
        with _s3_errors("HeadObject", key):
            return self.client.stat_object(self.bucket, key)

    def read_metadata(self, key: str) -> dict[str, str]:
        return _user_metadata(self._stat(key).metadata or {})

    def size(self, key: str) -> int:
        return int(self._stat(key).size or 0)

    def exists(self, key: str) -> bool:
        try:
            self._stat(key)
        except BlobNotFound:
            return False
        return True

    # removing

    def delete(self, key: str) -> None:
        check_key(key)
        with _s3_errors("DeleteObject", key):
            self.client.remove_object(self.bucket, key)  # S3 DeleteObject is idempotent

    def sweep_staged(self, older_than_seconds: float) -> int:
        """Abort every multipart upload of the bucket initiated more than `older_than_seconds` ago."""
        limit = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=older_than_seconds)
        removed = 0
        key_marker: str | None = None
        upload_id_marker: str | None = None
        while True:
            with _s3_errors("ListMultipartUploads", self.bucket):
                page = self.client._list_multipart_uploads(
                    self.bucket, key_marker=key_marker, upload_id_marker=upload_id_marker, max_uploads=1000,
                )
            for upload in page.uploads:
                initiated = upload.initiated_time
                if initiated is not None and initiated.tzinfo is None:
                    initiated = initiated.replace(tzinfo=dt.timezone.utc)
                if initiated is None or initiated <= limit:
                    if _abort_upload(self.client, self.bucket, upload.object_name, upload.upload_id):
                        removed += 1
            if not page.is_truncated or not page.uploads:
                return removed
            # minio 7.2 does not expose NextUploadIdMarker: continue after the last upload listed
            key_marker, upload_id_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id


_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _complete_multipart_body(parts: list[Part]) -> bytes:
    root = etree.Element(f"{{{_S3_NS}}}CompleteMultipartUpload", nsmap={None: _S3_NS})
    for part in parts:
        p = etree.SubElement(root, f"{{{_S3_NS}}}Part")
        etree.SubElement(p, f"{{{_S3_NS}}}PartNumber").text = str(part.part_number)
        etree.SubElement(p, f"{{{_S3_NS}}}ETag").text = f'"{part.etag}"'
    return etree.tostring(root)


def _complete_if_absent(client: Minio, bucket: str, key: str, upload_id: str, parts: list[Part]) -> None:
    """CompleteMultipartUpload with `If-None-Match: *` (minio's `_complete_multipart_upload` takes no
    headers). S3 may answer 200 with an <Error> document once it has started sending (the AWS API
    reference, CompleteMultipartUpload): raised as the S3Error it describes."""
    body = _complete_multipart_body(parts)
    headers = {"Content-Type": "application/xml", "Content-MD5": md5sum_hash(body), **_IF_NONE_MATCH}
    response = client._execute("POST", bucket, key, body=body, headers=headers, query_params={"uploadId": upload_id})
    data = response.data
    if b"<Error" in data[:512]:
        root = etree.fromstring(data, parser=safe_parser())
        code = root.findtext("{*}Code") or root.findtext("Code") or ""
        message = root.findtext("{*}Message") or root.findtext("Message") or ""
        raise S3Error(response, code, message, key, response.headers.get("x-amz-request-id"),
                      response.headers.get("x-amz-id-2"), bucket, key)


def _abort_upload(client: Minio, bucket: str, key: str, upload_id: str | None) -> bool:
    """AbortMultipartUpload; False when the upload is already gone."""
    try:
        client._abort_multipart_upload(bucket, key, upload_id)
    except S3Error as exc:
        if exc.code in _NO_UPLOAD:
            return False
        raise BlobStoreError(f"S3 AbortMultipartUpload of {key!r} failed: {exc.code}: {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise BlobStoreError(f"S3 AbortMultipartUpload of {key!r} failed: {exc}") from exc
    return True


class S3StagedWriter(WriterBase):
    def __init__(self, store: S3BlobStore, key: str, metadata: Mapping[str, str] | None):
        super().__init__(key, metadata)
        self._store = store
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Part] = []

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream"}
        headers.update({_META_PREFIX + k: v for k, v in self.metadata.items()})
        return headers

    def _write(self, data) -> None:
        part_size = self._store.part_size
        view = memoryview(data).cast("B")
        while view:
            if len(self._buffer) == part_size:  # a full part and more data: not the last part, send it
                self._send_part()
            room = part_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]

    def _send_part(self) -> None:
        client, bucket = self._store.client, self._store.bucket
        try:
            if self._upload_id is None:
                self._upload_id = client._create_multipart_upload(bucket, self.key, self._headers())
            number = len(self._parts) + 1
            etag = client._upload_part(bucket, self.key, bytes(self._buffer), None, self._upload_id, number)
        except S3Error as exc:
            if exc.code in _NO_UPLOAD:
                raise StagingLost(f"multipart upload of blob {self.key!r} was aborted (swept)") from exc
            raise BlobStoreError(f"S3 UploadPart of {self.key!r} failed: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BlobStoreError(f"S3 UploadPart of {self.key!r} failed: {exc}") from exc
        self._parts.append(Part(number, etag))
        self._buffer = bytearray()

    def _commit(self) -> None:
        # Create-only (the port's `commit`): both the single PutObject and CompleteMultipartUpload carry
        # `If-None-Match: *`, to which S3 answers 412 PreconditionFailed when the key holds an object
        # (409 ConditionalRequestConflict while another conditional write of it is in flight). minio's
        # public `put_object` turns unknown headers into user metadata, hence its low-level calls here.
        client, bucket = self._store.client, self._store.bucket
        if self._upload_id is None:  # one part: a single PutObject publishes it
            data, self._buffer = self._buffer, bytearray()
            with _s3_errors("PutObject", self.key):
                client._put_object(bucket, self.key, bytes(data), headers={**self._headers(), **_IF_NONE_MATCH})
            return
        self._send_part()  # the last part (never empty: a part is sent only when more data follows)
        try:
            _complete_if_absent(client, bucket, self.key, self._upload_id, self._parts)
        except S3Error as exc:
            if exc.code in _NO_UPLOAD:
                raise StagingLost(f"multipart upload of blob {self.key!r} was aborted (swept)") from exc
            if exc.code in _EXISTS:
                raise BlobExists(self.key) from None
            raise BlobStoreError(f"S3 CompleteMultipartUpload of {self.key!r} failed: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BlobStoreError(f"S3 CompleteMultipartUpload of {self.key!r} failed: {exc}") from exc
        self._upload_id = None

    def _abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            _abort_upload(self._store.client, self._store.bucket, self.key, upload_id)


class S3BlobReader(ReaderBase):
    def __init__(self, key: str, size: int, metadata: dict[str, str], chunk_size: int, response):
        super().__init__(key, size, metadata, chunk_size)
        self._response = response

    def _read(self, n: int) -> bytes:
        try:
            if n is None or n < 0:
                return self._response.read()
            return self._response.read(n)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BlobStoreError(f"S3 read of {self.key!r} failed: {exc}") from exc

    def _close(self) -> None:
        self._response.close()
        self._response.release_conn()
