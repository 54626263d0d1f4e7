"""The repository's own seal of each document it stores (issue 3: "optionally the repository seals each
stored document with its own XAdES signature (its certificate from config), so the integrity of what
it stores can be proven later").

With `seal_certificate` and `seal_key` set (a certificate chain and its private key, PEM files), ITI-41
computes the SHA-256 of each new document while it streams (beside the XDS SHA-1) and, before the
blob is committed, signs it: a detached XAdES-B signature whose `ds:Manifest` references the
document by `urn:oid:<uniqueId>` (or the uniqueId) with that digest (`signatures.sign_digests`, the
DSG form, ITI TF-3 §5.5), with the signing time and the certificate chain. The seal is kept as a
blob of its own next to the document's (`seal_key`), in clear: it holds a digest, the uniqueId and
the repository's certificate, no content. It is written once, with the document; a resubmission of
a stored document keeps the first seal.

`carnet seal verify <uniqueId>` reads the stored document (decrypted), its seal, and checks that the
signature is valid, made by the configured certificate, and that its digest is that of the bytes
stored (`verify_stored`): a document changed in the store, or a seal made by another key, fails.
Verification reads the document into memory.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from repository.blobs import BlobNotFound, object_key
from repository.crypto import BlobIntegrityError, DocumentBinding, SegmentDecryptor
from repository.signatures import (
    SignatureStatus,
    SignatureVerdict,
    SigningKey,
    TrustStore,
    sign_digests,
    verify_detached,
)

SEAL_SUFFIX = "~seal"  # `~` then a non-hex word: never the end of an `object_key` segment
DESCRIPTION = "Carnet repository seal"


def seal_key(repository_unique_id: str, document_unique_id: str) -> str:
    """The blob key of a document's seal, beside the document's own key."""
    return object_key(repository_unique_id, document_unique_id) + SEAL_SUFFIX


def document_uri(document_unique_id: str) -> str:
    return f"urn:oid:{document_unique_id}" if _is_oid(document_unique_id) else document_unique_id


def _is_oid(value: str) -> bool:
    return bool(value) and all(part.isdigit() for part in value.split("."))


@attrs.frozen
class RepositorySeal:
    """The repository's sealing identity: a private key and its certificate chain (leaf first)."""

    key: SigningKey
    chain: tuple[x509.Certificate, ...]

    @classmethod
    def from_files(cls, certificate: str | Path, key: str | Path) -> "RepositorySeal":
        certs = tuple(x509.load_pem_x509_certificates(Path(certificate).read_bytes()))
        if not certs:
            raise ValueError(f"{certificate}: no certificate")
        private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
        public = private.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        leaf = certs[0].public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        if public != leaf:
            raise ValueError(f"{key}: not the private key of the first certificate of {certificate}")
        return cls(private, certs)  # type: ignore[arg-type]

    def seal(self, document_unique_id: str, sha256: bytes) -> bytes:
        return sign_digests({document_uri(document_unique_id): sha256}, self.key, list(self.chain),
                            description=DESCRIPTION)

    def trust(self) -> TrustStore:
        """Seals are checked against this identity: its chain's last certificate as the anchor, and
        only its own leaf as a signer."""
        leaf = self.chain[0]
        fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
        return TrustStore((self.chain[-1],), signer_fingerprints=frozenset({fingerprint}))


def verify_stored(
    blobs, vault, repository_unique_id: str, document_unique_id: str, trust: TrustStore,
    *, now: dt.datetime | None = None,
) -> SignatureVerdict:
    """The seal of a stored document checked against the bytes stored (decrypted) and `trust`."""
    try:
        with blobs.open_read(seal_key(repository_unique_id, document_unique_id)) as r:
            seal = b"".join(r)
    except BlobNotFound:
        return SignatureVerdict(SignatureStatus.UNSIGNED, "no seal stored for this document",
                                now or dt.datetime.now(dt.timezone.utc), kind="dsg-detached")
    binding = DocumentBinding(repository_unique_id, document_unique_id)
    out = bytearray()
    try:
        with blobs.open_read(object_key(repository_unique_id, document_unique_id)) as r:
            decryptor = SegmentDecryptor(vault.get, binding)
            for chunk in r:
                out += decryptor.update(chunk)
            out += decryptor.finalize()
    except BlobNotFound:
        return SignatureVerdict(SignatureStatus.INVALID, "the sealed document is not stored",
                                now or dt.datetime.now(dt.timezone.utc), kind="dsg-detached")
    except BlobIntegrityError as exc:
        return SignatureVerdict(SignatureStatus.INVALID, f"the stored document fails its encryption's "
                                f"authentication: {exc}", now or dt.datetime.now(dt.timezone.utc), kind="dsg-detached")
    uri = document_uri(document_unique_id)
    stored = bytes(out)
    return verify_detached(seal, lambda u: stored if u == uri else None, trust, now=now)


__all__: Sequence[str] = ("RepositorySeal", "SEAL_SUFFIX", "seal_key", "verify_stored", "document_uri")
