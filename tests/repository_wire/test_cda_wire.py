"""The French CDA samples (ANS CI-SIS, IHE XDS-SD) provided over MTOM for an INS patient and
retrieved byte-identical (issue 3: "the French CDA samples in cda/")."""

from __future__ import annotations

import pytest

from registry import constants as C
from repository_wire.xds_wire import (
    INS,
    REPO_UID,
    Doc,
    as_mtom,
    assert_success,
    find_documents,
    new_oid,
    pnr,
    post,
    read_soap,
    retrieve,
    sha1,
)
from support import SHARED, need_shared

pytestmark = pytest.mark.integration


def _cda_files():
    folder = SHARED / "samples" / "cda"
    return sorted(p.name for p in folder.glob("*.xml")) if folder.exists() else []


def test_each_cda_sample_is_provided_as_mtom_and_retrieved_byte_identical(carnet):
    need_shared("samples", "cda")
    files = _cda_files()
    assert len(files) >= 8  # 6 ANS CI-SIS examples + 2 IHE XDS-SD
    carnet.store.add_patient(INS)
    provided: dict[str, bytes] = {}
    for name in files:
        content = need_shared("samples", "cda", name).read_bytes()  # exact bytes: declaration, BOM, line ends
        uid = new_oid()
        request = pnr(INS, [Doc(content, uid, "text/xml")], inline=False)
        content_type, body = as_mtom(request, {"Document01": content}, mime_type="text/xml")
        answer = read_soap(post(carnet.repository_url, body, content_type))
        assert_success(answer)
        provided[uid] = content

    entries = {e.unique_id: e for e in find_documents(carnet.registry_url, INS)}
    assert set(entries) == set(provided)
    for uid, content in provided.items():
        assert (entries[uid].repository_unique_id, entries[uid].hash, entries[uid].size, entries[uid].mime_type) == (
            REPO_UID, sha1(content), len(content), "text/xml")

    # one ITI-43 for all of them: one MTOM part per document, in request order
    got = retrieve(carnet.repository_url, [(REPO_UID, uid) for uid in provided])
    assert (got.status, got.errors) == (C.RESPONSE_SUCCESS, [])
    assert got.documents == {uid: (REPO_UID, "text/xml", content) for uid, content in provided.items()}
    assert len(got.answer.attachments) == len(provided)
