"""Helpers shared by the repository tests: a document stored as ITI-41 stores it, and an ITI-43
request, without going through ITI-41 itself."""

from __future__ import annotations

import hashlib

from lxml import etree

from registry import constants as C
from repository.blobs import object_key
from repository.crypto import DocumentBinding, encrypt

_XDSB = C.NS_XDSB

# The patient of the repository tests' messages, known to their registry store (conftest `store`).
PATIENT = "SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"


def store_document(blobs, vault, doc_uid: str, data: bytes, *, repo: str, patient: str, mime: str = "text/xml",
                   segment_size: int = 64 * 1024) -> bytes:
    """Store `data` as ITI-41 does: its ciphertext under `object_key(repo, doc_uid)`, with the blob
    metadata contract ITI-43 reads (`repository.intake`). Returns the blob."""
    key = vault.data_key_for(patient)
    blob = encrypt(key, DocumentBinding(repo, doc_uid), data, segment_size)
    metadata = {"mime-type": mime, "patient-id": patient, "hash": hashlib.sha1(data).hexdigest(),
                "size": str(len(data)), "key-id": key.id}
    writer = blobs.open_staged(object_key(repo, doc_uid), metadata)
    writer.write(blob)
    writer.commit()
    return blob


def retrieve_request(*docs: str | tuple[str, str], repo: str, home: str | None = None) -> etree._Element:
    """An xdsb:RetrieveDocumentSetRequest; each doc a documentUniqueId (in `repo`) or a
    (repositoryUniqueId, documentUniqueId) pair."""
    root = etree.Element(f"{{{_XDSB}}}RetrieveDocumentSetRequest", nsmap={None: _XDSB})
    for doc in docs:
        repository_id, uid = doc if isinstance(doc, tuple) else (repo, doc)
        dr = etree.SubElement(root, f"{{{_XDSB}}}DocumentRequest")
        if home:
            etree.SubElement(dr, f"{{{_XDSB}}}HomeCommunityId").text = home
        etree.SubElement(dr, f"{{{_XDSB}}}RepositoryUniqueId").text = repository_id
        etree.SubElement(dr, f"{{{_XDSB}}}DocumentUniqueId").text = uid
    return root
