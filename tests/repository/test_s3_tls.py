"""The S3 blob store over TLS, configured as a user would (issue 3: "endpoint, bucket, credentials,
TLS from config"): moto's server process serving a certificate of the test CA, Carnet's settings
(`CARNET_S3_*`) naming that CA's bundle, the real minio client."""

from __future__ import annotations

import ssl
import uuid

import pytest

from config.settings import load_settings
from config.site import build_blob_store
from pki_support import write_pki
from repository.blobs import BlobStoreError, object_key

from .conftest import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, moto_server


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory):
    """(endpoint, pki) of a moto S3 server speaking TLS with the test CA's 'localhost + 127.0.0.1' certificate."""
    directory = tmp_path_factory.mktemp("s3-tls")
    pki = write_pki(directory / "pki")
    context = ssl.create_default_context(cafile=str(pki.ca_bundle))
    with moto_server(directory, "-c", str(pki.server.certificate), "-k", str(pki.server.private_key),
                     context=context) as endpoint:
        yield endpoint, pki


def _store(endpoint: str, tmp_path, **env: str):
    environ = {
        "CARNET_DATA_DIR": str(tmp_path), "CARNET_BLOB_STORE": "s3", "CARNET_S3_ENDPOINT": endpoint,
        "CARNET_S3_BUCKET": f"carnet-tls-{uuid.uuid4().hex[:12]}", "CARNET_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "CARNET_S3_SECRET_KEY": S3_SECRET_KEY, "CARNET_S3_REGION": S3_REGION, "CARNET_S3_CREATE_BUCKET": "true",
        "CARNET_S3_SECURE": "true", **env,
    }
    return build_blob_store(load_settings(environ=environ))


def test_the_configured_ca_bundle_verifies_the_s3_server(tls_s3, tmp_path):
    endpoint, pki = tls_s3
    store = _store(endpoint, tmp_path, CARNET_S3_CA_FILE=str(pki.ca_bundle))
    key = object_key("1.2.3", "4.5.6")
    with store.open_staged(key, {"kid": "k"}) as w:
        w.write(b"over TLS")
        w.commit()
    with store.open_read(key) as r:
        assert r.read() == b"over TLS"


def test_a_server_the_bundle_does_not_trust_is_refused(tls_s3, tmp_path):
    endpoint, pki = tls_s3
    with pytest.raises(BlobStoreError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _store(endpoint, tmp_path, CARNET_S3_CA_FILE=str(pki.other_ca_bundle))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_certificate_checks_can_be_switched_off(tls_s3, tmp_path):
    endpoint, _ = tls_s3
    store = _store(endpoint, tmp_path, CARNET_S3_CERT_CHECK="false")
    assert not store.exists(object_key("1.2.3", "absent"))
