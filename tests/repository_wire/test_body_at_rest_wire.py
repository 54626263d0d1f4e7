"""A request body on its way in: Twisted keeps it until it is complete, and above 100 kB in a
temporary file; the MTOM reader spools the parts that precede the root. Patients' documents must
never land there in clear (`soap.spill.EphemeralSpool`; DESIGN.md §3 rule 8)."""

from __future__ import annotations

import base64
import os

import pytest

from carnet_support import running_carnet
from repository_wire.xds_wire import INS, REPO_UID, Doc, assert_success, new_oid, pnr, provide


@pytest.mark.parametrize("mtom", [True, False], ids=["mtom", "inline"])
def test_a_large_submission_is_never_written_to_a_temporary_file_in_clear(engine, tmp_path, monkeypatch, mtom):
    """Twisted keeps a request body above 100 kB in a temporary file until it is complete, and the
    MTOM reader spools parts that precede the root: both go to `soap.spill.EphemeralSpool`, whose
    file holds only ciphertext. Every temporary file made meanwhile is kept (named, not deleted)
    and read afterwards."""
    import tempfile

    from repository_wire.xds_wire import retrieve

    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    made = []

    def kept_temporary_file(*args, **kwargs):
        kwargs.update(delete=False, dir=str(spill_dir))
        f = tempfile.NamedTemporaryFile(*args, **kwargs)
        made.append(f.name)
        return f

    monkeypatch.setattr(tempfile, "TemporaryFile", kept_temporary_file)
    marker = b"<ClinicalDocument>DUPONT Jeanne 2800175310042 " + os.urandom(8).hex().encode()
    document = marker * (400_000 // len(marker))
    with running_carnet(engine, tmp_path / "carnet", repository_unique_id=REPO_UID) as carnet:
        carnet.store.add_patient(INS)
        uid = new_oid()
        assert_success(provide(carnet.repository_url, pnr(INS, [Doc(document, uid)]), mtom=mtom))
        got = retrieve(carnet.repository_url, [(REPO_UID, uid)])
        assert got.documents[uid][2] == document
    assert made, "the body was expected to outgrow memory"
    for name in made:
        with open(name, "rb") as f:
            data = f.read()
        assert b"DUPONT" not in data and b"ClinicalDocument" not in data, name
        assert base64.b64encode(document[:3000]) not in data, name  # nor as the inline base64 text
