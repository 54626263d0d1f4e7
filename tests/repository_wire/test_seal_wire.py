"""The repository's seal end to end: a Carnet configured with a seal certificate and key stores each
new document with its seal; `carnet seal verify` (a separate process, as an auditor would run it)
proves the stored bytes, and fails once they are altered on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import text

from carnet_support import running_carnet
from pki_support import make_signing_pki
from repository.blobs import object_key
from repository_wire.xds_wire import INS, REPO_UID, Doc, assert_success, new_oid, pnr, provide
from support import ROOT


def _verify(data_dir: Path, database_url: str, uid: str, seal_files: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env.update(CARNET_REPOSITORY_UNIQUE_ID=REPO_UID, PYTHONPATH=str(ROOT), **seal_files)
    return subprocess.run(
        [sys.executable, "-m", "config.cli", "seal", "verify", uid, "--data-dir", str(data_dir),
         "--database-url", database_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_sealed_document_is_proven_and_an_altered_one_is_caught(engine, tmp_path):
    pki = make_signing_pki()
    cert, key = tmp_path / "seal.pem", tmp_path / "seal.key"
    cert.write_bytes(pki.leaf.cert_pem + pki.ca.cert_pem)
    key.write_bytes(pki.leaf.key_pem)
    key.chmod(0o600)
    data_dir = tmp_path / "carnet"
    uid, document = new_oid(), b"<ClinicalDocument>sealed by the repository</ClinicalDocument>" * 50
    with running_carnet(engine, data_dir, repository_unique_id=REPO_UID, seal_certificate=cert,
                        seal_key=key) as carnet:
        carnet.store.add_patient(INS)
        assert_success(provide(carnet.repository_url, pnr(INS, [Doc(document, uid)]), mtom=True))
        blob_file = carnet.app.settings.blob_path / object_key(REPO_UID, uid)
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":  # the test's own schema, as the engine reaches it
        with engine.connect() as c:
            search_path = c.execute(text("SHOW search_path")).scalar_one()
        url += ("&" if "?" in url else "?") + "options=" + quote(f"-csearch_path={search_path}")
    seal_files = {"CARNET_SEAL_CERTIFICATE": str(cert), "CARNET_SEAL_KEY": str(key)}

    ok = _verify(data_dir, url, uid, seal_files)
    assert ok.returncode == 0, ok.stderr
    assert f"{uid}: seal valid" in ok.stdout

    data = bytearray(blob_file.read_bytes())
    data[-40] ^= 0x01  # one bit of the stored ciphertext
    blob_file.write_bytes(bytes(data))
    bad = _verify(data_dir, url, uid, seal_files)
    assert bad.returncode == 1, bad.stderr
    assert f"{uid}: seal invalid" in bad.stdout

    unknown = _verify(data_dir, url, new_oid(), seal_files)
    assert unknown.returncode == 1 and "unsigned" in unknown.stdout
