"""Signed documents: XML-DSig / XAdES verification at intake, DSG detached signatures, the repository seal.

Issue 3 "Signed CDA"; DESIGN.md §4 (Signature) and §7 (signxml 5.x).

* `verify_enveloped` checks a CDA (or any XML document) carrying an enveloped XML-DSig or XAdES
  (B level) signature as a child of its document element.
* `verify_detached` checks an IHE DSG detached signature document (ITI TF-3 §5.5, formatCode
  `urn:ihe:iti:dsg:detached:2014`): an XAdES signature whose `ds:Manifest` (or, equally accepted,
  `ds:SignedInfo`) holds one `ds:Reference` per signed document, its URI naming the document's
  uniqueId (e.g. `urn:oid:1.2.250…`) and its digest taken over the document's bytes.
* `seal` / `sign_detached` produce the repository's own XAdES-B signatures.
* `SignaturePolicy` is what the ITI-41 handler calls (`check_document`).

Every verification returns a frozen `SignatureVerdict` and never raises for a bad document: the
input is parsed with the one hardened parser (`soap.xmlparse`: no DTD, no entities, no network,
size and depth caps), and anything signxml raises while processing hostile input becomes an
`invalid` verdict. Only programming errors (wrong argument types) and exceptions raised by the
caller's own resolver propagate.

Status precedence, worst first: `invalid` (the bytes do not match the signature, or the signature
cannot be processed) > `untrusted` (no chain to a configured CA, or signer constraints not met) >
`expired` (the chain is trusted but a certificate is outside its validity period at `now`) >
`valid`. `unsigned` means no `ds:Signature` at all. A signature whose trust fails is still checked
cryptographically (with its own certificate), so a tampered document signed by an unknown CA is
reported `invalid`, not `untrusted`.

What signxml does and what this module adds (measured on signxml 5.2, cryptography 50):
* signxml verifies SignedInfo, every same-document reference, the XAdES SignedProperties and
  SigningCertificate(V2) digest, and the certificate chain (our `TrustStore`, through a subclass of
  its chain verifier: signxml itself only takes a PEM file name).
* XML-DSig leaves `ds:Manifest` reference validation to the application (XML-DSig §5.1): this module
  checks DSG manifest references itself, from the manifest signxml returned as signed (never from
  the unverified tree), digesting the resolved bytes with the declared DigestMethod; transforms
  are limited to the c14n family (document parsed with the hardened parser, then canonicalised).
* External references placed directly in SignedInfo are pre-checked here (to name a missing or
  altered URI), then handed to signxml as bytes; signxml then tries to parse those bytes as XML and
  refuses one carrying a DTD, so such a document can only be signed through a manifest.
* XAdES signing time is the signer's claim (B level, no time-stamp: no XAdES-T), so certificate
  validity is checked at `now`, never at the claimed signing time.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier, methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate
from signxml.util import X509CertChainVerifier
from signxml.xades import (
    XAdESDataObjectFormat,
    XAdESSignatureConfiguration,
    XAdESSigner,
    XAdESVerifier,
)

from registry.errors import RegistryError, XdsErrorCode
from registry.model import Slot
from soap.xmlparse import DEFAULT_MAX_BYTES, XmlInputError, parse_xml, safe_parser

log = logging.getLogger(__name__)

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NAMESPACES = ("http://uri.etsi.org/01903/v1.3.2#", "http://uri.etsi.org/01903/v1.4.1#")
ENVELOPED_TRANSFORM = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"

# ITI TF-3 §5.5 / ITI TF-1 §37: formatCode of a DSG detached signature document
DSG_DETACHED_FORMAT_CODE = "urn:ihe:iti:dsg:detached:2014"
# Extra metadata slot (ITI TF-3 §4.2.3.1.3: `urn:` but not `urn:ihe:`, so the registry keeps it)
SIGNATURE_VERIFICATION_SLOT = "urn:carnet:signatureVerification"
SLOT_VALUE_MAX = 256  # ebRIM 3.0 rim:Value is a LongName (256 characters)

XML_MIME_TYPES = frozenset({"text/xml", "application/xml"})
DEPTH_LIMIT = 256  # CDA bodies nest deeper than SOAP messages; libxml2's own cap is 256 too

_DS = {"ds": DS_NS}
Resolver = Callable[[str], "bytes | None"]


class SignatureStatus(str, enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    UNSIGNED = "unsigned"
    UNVERIFIED = "unverified"  # not checked: the document is larger than the policy's `max_bytes`


class ReferenceStatus(str, enum.Enum):
    OK = "ok"
    MISSING = "missing"  # the resolver does not know the URI
    MISMATCH = "mismatch"  # digest differs (document changed), or unreadable DigestValue
    UNSUPPORTED = "unsupported"  # algorithm or transform we do not process: never counted as ok


@attrs.frozen
class ReferenceResult:
    uri: str
    status: ReferenceStatus
    reason: str = ""


@attrs.frozen
class SignatureVerdict:
    """The outcome of one verification. `signer_subject` is RFC 4514; `signature_method` the
    SignatureMethod Algorithm URI; `kind` is `xmldsig`, `xades` or `dsg-detached`."""

    status: SignatureStatus
    reason: str
    checked_at: dt.datetime
    kind: str | None = None
    signature_method: str | None = None
    signer_subject: str | None = None
    signing_time: dt.datetime | None = None
    references: tuple[ReferenceResult, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is SignatureStatus.VALID

    def slot_values(self) -> tuple[str, ...]:
        """`key=value` strings, each ≤ 256 characters, in this order (absent keys omitted):
        status, kind, checkedAt, method, signer, signingTime, reason. Times are UTC, XDS DTM
        form `YYYYMMDDhhmmss`."""
        pairs = [("status", self.status.value), ("kind", self.kind), ("checkedAt", _dtm(self.checked_at))]
        pairs += [("method", self.signature_method), ("signer", self.signer_subject)]
        pairs += [("signingTime", _dtm(self.signing_time) if self.signing_time else None)]
        if self.status is not SignatureStatus.VALID:
            pairs.append(("reason", self.reason))
        return tuple(_slot_value(k, v) for k, v in pairs if v)

    def as_slot(self) -> Slot:
        return Slot(SIGNATURE_VERIFICATION_SLOT, self.slot_values())


def _dtm(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def _slot_value(key: str, value: str) -> str:
    text = f"{key}={' '.join(str(value).split())}"
    return text if len(text) <= SLOT_VALUE_MAX else text[: SLOT_VALUE_MAX - 1] + "…"


# --------------------------------------------------------------------------------------- trust


@attrs.frozen
class TrustStore:
    """Trusted CA certificates plus optional constraints on the signing (end-entity) certificate.

    `signer_subjects`: RFC 4514 subjects accepted as signers (empty: any signer the CAs vouch for).
    `signer_fingerprints`: lowercase hex SHA-256 of accepted signer certificates (empty: any).
    `allow_sha1`: accept SHA-1 signature and digest methods (legacy signers; off by default).
    """

    anchors: tuple[x509.Certificate, ...]
    signer_subjects: frozenset[str] = frozenset()
    signer_fingerprints: frozenset[str] = frozenset()
    allow_sha1: bool = False

    @classmethod
    def from_pem(cls, pems: Iterable[bytes], **constraints: Any) -> "TrustStore":
        anchors: list[x509.Certificate] = []
        for pem in pems:
            anchors.extend(x509.load_pem_x509_certificates(pem))
        return cls(tuple(anchors), **_constraints(constraints))

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], **constraints: Any) -> "TrustStore":
        """PEM files, or directories whose `*.pem`, `*.crt`, `*.cer` files are read (not recursive).
        Raises ValueError (a configuration error) when no certificate is found."""
        paths = [Path(p) for p in paths]
        files: list[Path] = []
        for p in paths:
            if p.is_dir():
                files += sorted(f for f in p.iterdir() if f.suffix.lower() in {".pem", ".crt", ".cer"})
            else:
                files.append(p)
        store = cls.from_pem((f.read_bytes() for f in files), **constraints)
        if not store.anchors:
            raise ValueError(f"no CA certificate found in {', '.join(map(str, paths))}")
        return store

    def signature_methods(self) -> frozenset[SignatureMethod]:
        return frozenset(
            m for m in SignatureMethod if not m.name.startswith("HMAC") and (self.allow_sha1 or "SHA1" not in m.name)
        )

    def digest_algorithms(self) -> frozenset[DigestAlgorithm]:
        return frozenset(d for d in DigestAlgorithm if self.allow_sha1 or "SHA1" not in d.name)

    def signer_refusal(self, cert: x509.Certificate) -> str | None:
        """Why the signer constraints refuse `cert`, or None when they accept it."""
        subject = cert.subject.rfc4514_string()
        if self.signer_subjects and subject not in self.signer_subjects:
            return f"signer {subject!r} is not among the accepted signers"
        if self.signer_fingerprints and cert.fingerprint(hashes.SHA256()).hex() not in self.signer_fingerprints:
            return f"signer certificate {subject!r} is not among the accepted certificates"
        return None


def _constraints(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    for key in ("signer_subjects", "signer_fingerprints"):
        if key in out:
            out[key] = frozenset(str(v).lower() if key == "signer_fingerprints" else str(v) for v in out[key])
    return out


def _check_signing_key_usage(policy: Any, cert: x509.Certificate, key_usage: x509.KeyUsage | None) -> None:
    # A document-signing certificate: digitalSignature, or nonRepudiation (contentCommitment) alone,
    # as on French health professional signature certificates.
    if key_usage is None or not (key_usage.digital_signature or key_usage.content_commitment):
        raise ValueError("certificate KeyUsage allows neither digitalSignature nor nonRepudiation")


class _TrustStoreChainVerifier(X509CertChainVerifier):
    """signxml's chain verifier with our in-memory trust anchors instead of a PEM file."""

    def __init__(self, trust: TrustStore, verification_time: dt.datetime) -> None:
        ee_policy = verification.ExtensionPolicy.permit_all().require_present(
            x509.KeyUsage, verification.Criticality.AGNOSTIC, _check_signing_key_usage
        )
        super().__init__(ca_pem_file=None, verification_time=verification_time, ee_policy=ee_policy)
        self._trust = trust

    @property
    def store(self) -> verification.Store:
        return verification.Store(list(self._trust.anchors))


class _TrustMixin:
    trust: TrustStore

    def get_cert_chain_verifier(self, ca_pem_file: Any, ee_policy: Any, ca_policy: Any) -> X509CertChainVerifier:
        return _TrustStoreChainVerifier(self.trust, self._get_cert_verification_time())  # type: ignore[attr-defined]


class _DsigVerifier(_TrustMixin, XMLVerifier):
    pass


class _XadesVerifier(_TrustMixin, XAdESVerifier):
    pass


def chain_is_trusted(trust: TrustStore, chain: Sequence[x509.Certificate], at: dt.datetime) -> bool:
    """Whether `chain` (leaf first) builds to a trust anchor at time `at`."""
    try:
        _TrustStoreChainVerifier(trust, at).verify(list(chain))
        return True
    except InvalidCertificate:
        return False


# --------------------------------------------------------------------------------- verification


@attrs.frozen
class _Outcome:
    status: SignatureStatus
    reason: str
    kind: str
    method: str | None
    signer: x509.Certificate | None = None
    signing_time: dt.datetime | None = None
    results: tuple[Any, ...] = ()  # signxml VerifyResults: what was actually signed


def verify_enveloped(
    document_bytes: bytes, trust: TrustStore, *, now: dt.datetime | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> SignatureVerdict:
    """Verify the enveloped XML-DSig or XAdES signature of an XML document (e.g. a CDA).

    The `ds:Signature` must be a child of the document element and one of its references must
    cover the whole document (URI "" with the enveloped-signature transform, or `#<root Id>`)."""
    now = _utc(now)
    try:
        root = parse_xml(document_bytes, max_bytes=max_bytes, max_depth=DEPTH_LIMIT)
    except XmlInputError as exc:
        return _verdict(SignatureStatus.INVALID, f"document refused by the hardened XML parser: {exc}", now)
    if root.tag == f"{{{DS_NS}}}Signature":
        return _verdict(
            SignatureStatus.INVALID, "the document is itself a signature (detached or enveloping): not enveloped", now
        )
    sig = root.find("ds:Signature", _DS)
    if sig is None:
        if root.find(".//ds:Signature", _DS) is not None:
            return _verdict(SignatureStatus.INVALID, "ds:Signature is not a child of the document element", now)
        return _verdict(SignatureStatus.UNSIGNED, "no ds:Signature in the document", now)
    outcome = _verify_signature(document_bytes, sig, trust, now)
    if outcome.results and outcome.status is not SignatureStatus.INVALID and not _covers_document(sig, root):
        reason = "no signature reference covers the whole document"
        outcome = attrs.evolve(outcome, status=SignatureStatus.INVALID, reason=reason)
    return _from_outcome(outcome, now)


def verify_detached(
    dsg_bytes: bytes,
    resolver: Resolver,
    trust: TrustStore,
    *,
    now: dt.datetime | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SignatureVerdict:
    """Verify an IHE DSG detached signature document (ITI TF-3 §5.5) against the documents it
    references; `resolver(uri)` returns a referenced document's bytes, or None when unknown."""
    now = _utc(now)
    try:
        root = parse_xml(dsg_bytes, max_bytes=max_bytes, max_depth=DEPTH_LIMIT)
    except XmlInputError as exc:
        return _verdict(SignatureStatus.INVALID, f"signature document refused by the hardened XML parser: {exc}", now)
    sig = root if root.tag == f"{{{DS_NS}}}Signature" else root.find("ds:Signature", _DS)
    if sig is None:
        return _verdict(SignatureStatus.UNSIGNED, "no ds:Signature in the signature document", now, kind="dsg-detached")

    fetched: dict[str, bytes | None] = {}

    def fetch(uri: str) -> bytes | None:
        if uri not in fetched:
            fetched[uri] = resolver(uri)
        return fetched[uri]

    # External references in SignedInfo: checked first, so a missing or altered document is named.
    direct = [r for r in sig.findall("ds:SignedInfo/ds:Reference", _DS) if _is_external(r.get("URI"))]
    direct_results = [_check_reference(r, fetch, trust) for r in direct]
    bad = [r for r in direct_results if r.status is not ReferenceStatus.OK]
    if bad:
        reason = _reference_reason(bad)
        return _verdict(SignatureStatus.INVALID, reason, now, kind="dsg-detached", references=tuple(direct_results))

    outcome = _verify_signature(dsg_bytes, sig, trust, now, uri_resolver=lambda uri: fetched.get(uri))
    outcome = attrs.evolve(outcome, kind="dsg-detached")
    if outcome.status is SignatureStatus.INVALID or not outcome.results:
        return _from_outcome(outcome, now, tuple(direct_results))

    # Manifest references (the DSG form): only manifests inside what was verified as signed.
    manifest_refs = [
        ref
        for result in outcome.results
        if result.signed_xml is not None
        for manifest in result.signed_xml.iter(f"{{{DS_NS}}}Manifest")
        for ref in manifest.findall("ds:Reference", _DS)
    ]
    references = tuple(direct_results + [_check_reference(r, fetch, trust) for r in manifest_refs])
    bad = [r for r in references if r.status is not ReferenceStatus.OK]
    if not references:
        outcome = attrs.evolve(outcome, status=SignatureStatus.INVALID, reason="the signature references no document")
    elif bad:
        outcome = attrs.evolve(outcome, status=SignatureStatus.INVALID, reason=_reference_reason(bad))
    return _from_outcome(outcome, now, references)


def _verify_signature(
    data: bytes,
    sig: etree._Element,
    trust: TrustStore,
    now: dt.datetime,
    uri_resolver: Callable[[str], Any] | None = None,
) -> _Outcome:
    is_xades = any(sig.find(f".//{{{ns}}}QualifyingProperties") is not None for ns in XADES_NAMESPACES)
    kind = "xades" if is_xades else "xmldsig"
    method_el = sig.find("ds:SignedInfo/ds:SignatureMethod", _DS)
    method = method_el.get("Algorithm") if method_el is not None else None
    certs, cert_error = _embedded_certificates(sig)
    base = dict(kind=kind, method=method)
    if cert_error:
        return _Outcome(SignatureStatus.INVALID, cert_error, **base)
    if not certs:
        return _Outcome(
            SignatureStatus.UNTRUSTED,
            "the signature carries no X.509 certificate: its signer cannot be identified",
            **base,
        )

    def run(at: dt.datetime, x509_cert: x509.Certificate | None = None) -> list[Any]:
        config_cls = XAdESSignatureConfiguration if is_xades else SignatureConfiguration
        config = config_cls(
            location="./",
            expect_references=True,
            verification_time=at,
            signature_methods=trust.signature_methods(),
            digest_algorithms=trust.digest_algorithms(),
        )
        verifier = _XadesVerifier() if is_xades else _DsigVerifier()
        verifier.trust = trust
        results = verifier.verify(
            data, x509_cert=x509_cert, parser=safe_parser(), uri_resolver=uri_resolver, expect_config=config
        )
        return results if isinstance(results, list) else [results]

    try:
        results = run(now)
    except InvalidCertificate as exc:
        return _trust_failure(run, certs, trust, now, str(exc), base)
    except Exception as exc:  # hostile input inside signxml: any failure is a bad signature
        # the signer named is the one the (unverified) certificate claims
        return _Outcome(SignatureStatus.INVALID, _signxml_reason(exc), signer=_leaf(certs), **base)

    signer = _signer_of(results, certs)
    signing_time = _signing_time(results)
    refusal = trust.signer_refusal(signer) if signer is not None else "signing certificate not found"
    verified = dict(signer=signer, signing_time=signing_time, results=tuple(results), **base)
    if refusal:
        return _Outcome(SignatureStatus.UNTRUSTED, refusal, **verified)
    return _Outcome(SignatureStatus.VALID, "signature verified", **verified)


def _trust_failure(
    run: Callable[..., list[Any]],
    certs: list[x509.Certificate],
    trust: TrustStore,
    now: dt.datetime,
    chain_error: str,
    base: dict[str, Any],
) -> _Outcome:
    """The chain did not verify at `now`: first check integrity with the embedded certificate (a
    tampered document is `invalid` whoever signed it), then tell `expired` from `untrusted`."""
    leaf = _leaf(certs)
    try:
        results = run(leaf.not_valid_before_utc, x509_cert=leaf)
    except Exception as exc:
        return _Outcome(SignatureStatus.INVALID, _signxml_reason(exc), signer=leaf, **base)
    chain = [leaf] + [c for c in certs if c is not leaf]
    outcome = dict(signer=leaf, signing_time=_signing_time(results), results=tuple(results), **base)
    # A time at which every embedded certificate is valid (when one exists): if the chain verifies
    # then, it is trusted and only `now` is outside a validity period.
    probes = (max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs))
    if probes[0] <= probes[1] and chain_is_trusted(trust, chain, probes[0]):
        expired = [c for c in chain if now > c.not_valid_after_utc]
        if expired:
            names = "; ".join(
                f"{c.subject.rfc4514_string()} expired {c.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}" for c in expired
            )
            return _Outcome(SignatureStatus.EXPIRED, f"certificate outside its validity period: {names}", **outcome)
        early = [c for c in chain if now < c.not_valid_before_utc]
        if early:
            reason = f"certificate not yet valid: {early[0].subject.rfc4514_string()}"
            return _Outcome(SignatureStatus.UNTRUSTED, reason, **outcome)
        # the anchor itself is outside its validity period at `now`
        return _Outcome(SignatureStatus.EXPIRED, f"certificate chain not valid at {now:%Y-%m-%dT%H:%M:%SZ}", **outcome)
    return _Outcome(SignatureStatus.UNTRUSTED, f"no trusted certificate chain: {_first_line(chain_error)}", **outcome)


def _embedded_certificates(sig: etree._Element) -> tuple[list[x509.Certificate], str | None]:
    certs = []
    for el in sig.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _DS):
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode("".join((el.text or "").split())))
            # cryptography parses names and validity lazily: read them now, so that a damaged
            # certificate is reported here rather than raising later (found by hypothesis)
            cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc
            certs.append(cert)
        except (ValueError, TypeError, binascii.Error) as exc:
            return [], f"unreadable X509Certificate in the signature: {_first_line(str(exc))}"
    return certs, None


def _leaf(certs: list[x509.Certificate]) -> x509.Certificate:
    """The end-entity certificate: the one that issued none of the others."""
    issuers = {c.issuer for c in certs}
    for cert in certs:
        if cert.subject not in issuers or len(certs) == 1:
            return cert
    return certs[0]


def _signer_of(results: list[Any], certs: list[x509.Certificate]) -> x509.Certificate | None:
    key = results[0].signature_key if results else None
    for cert in certs:
        pem = cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if pem == key:
            return cert
    return None


def _signing_time(results: list[Any]) -> dt.datetime | None:
    for result in results:
        props = getattr(result, "signed_properties", None)
        if props is None:
            continue
        for ns in XADES_NAMESPACES:
            el = props.find(f"{{{ns}}}SigningTime")
            if el is not None and el.text:
                try:
                    return _utc(dt.datetime.fromisoformat(el.text.strip()))
                except ValueError:
                    return None
    return None


def _covers_document(sig: etree._Element, root: etree._Element) -> bool:
    root_ids = {root.get(a) for a in ("Id", "ID", "id", "{http://www.w3.org/XML/1998/namespace}id")} - {None}
    for ref in sig.findall("ds:SignedInfo/ds:Reference", _DS):
        uri = ref.get("URI")
        if uri == "":
            transforms = {t.get("Algorithm") for t in ref.findall("ds:Transforms/ds:Transform", _DS)}
            if ENVELOPED_TRANSFORM in transforms:
                return True
        elif uri and uri.startswith("#") and uri[1:] in root_ids:
            return True
    return False


def _is_external(uri: str | None) -> bool:
    return bool(uri) and not uri.startswith("#")  # type: ignore[union-attr]


_C14N = {m.value: m for m in CanonicalizationMethod}


def _check_reference(ref: etree._Element, fetch: Callable[[str], bytes | None], trust: TrustStore) -> ReferenceResult:
    """Digest check of one reference to an external document (XML-DSig §4.4.3, reference validation)."""
    uri = ref.get("URI") or ""
    if not _is_external(uri):
        return ReferenceResult(uri, ReferenceStatus.UNSUPPORTED, "manifest reference is not a document URI")
    method_el = ref.find("ds:DigestMethod", _DS)
    try:
        digest_alg = DigestAlgorithm(method_el.get("Algorithm") if method_el is not None else None)
    except ValueError:
        return ReferenceResult(uri, ReferenceStatus.UNSUPPORTED, "unknown DigestMethod")
    if digest_alg not in trust.digest_algorithms():
        return ReferenceResult(uri, ReferenceStatus.UNSUPPORTED, f"DigestMethod {digest_alg.name} not accepted")
    transforms = [t.get("Algorithm") for t in ref.findall("ds:Transforms/ds:Transform", _DS)]
    unsupported = [t for t in transforms if t not in _C14N]
    if unsupported:
        return ReferenceResult(uri, ReferenceStatus.UNSUPPORTED, f"transform {unsupported[0]} not supported")
    data = fetch(uri)
    if data is None:
        return ReferenceResult(uri, ReferenceStatus.MISSING, "referenced document not found")
    if transforms:
        try:
            data = _canonicalize(data, _C14N[transforms[-1]])
        except XmlInputError as exc:
            return ReferenceResult(uri, ReferenceStatus.MISMATCH, f"referenced document refused: {exc}")
    value_el = ref.find("ds:DigestValue", _DS)
    try:
        text = value_el.text if value_el is not None else None
        expected = base64.b64decode("".join((text or "").split()), validate=True)
    except binascii.Error:
        return ReferenceResult(uri, ReferenceStatus.MISMATCH, "unreadable DigestValue")
    actual = hashlib.new(_HASHLIB_NAMES[digest_alg], data).digest()
    if actual != expected:
        reason = "digest mismatch: the document differs from the signed one"
        return ReferenceResult(uri, ReferenceStatus.MISMATCH, reason)
    return ReferenceResult(uri, ReferenceStatus.OK)


_HASHLIB_NAMES = {
    DigestAlgorithm.SHA1: "sha1",
    DigestAlgorithm.SHA224: "sha224",
    DigestAlgorithm.SHA256: "sha256",
    DigestAlgorithm.SHA384: "sha384",
    DigestAlgorithm.SHA512: "sha512",
    DigestAlgorithm.SHA3_224: "sha3_224",
    DigestAlgorithm.SHA3_256: "sha3_256",
    DigestAlgorithm.SHA3_384: "sha3_384",
    DigestAlgorithm.SHA3_512: "sha3_512",
}


def _canonicalize(data: bytes, method: CanonicalizationMethod) -> bytes:
    root = parse_xml(data, max_depth=DEPTH_LIMIT)
    exclusive = method.value.startswith("http://www.w3.org/2001/10/xml-exc-c14n#")
    # signxml likewise serialises C14N 1.1 with libxml2's C14N 1.0 (identical without xml:base/xml:id subtleties)
    with_comments = method.value.endswith("#WithComments")
    return etree.tostring(root, method="c14n", exclusive=exclusive, with_comments=with_comments)


def _reference_reason(bad: list[ReferenceResult]) -> str:
    return "; ".join(f"{r.uri}: {r.status.value} ({r.reason})" for r in bad)


def _signxml_reason(exc: Exception) -> str:
    return f"signature verification failed: {exc.__class__.__name__}: {_first_line(str(exc))}"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _utc(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.timezone.utc)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _verdict(
    status: SignatureStatus,
    reason: str,
    now: dt.datetime,
    *,
    kind: str | None = None,
    references: tuple[ReferenceResult, ...] = (),
) -> SignatureVerdict:
    return SignatureVerdict(status=status, reason=reason, checked_at=now, kind=kind, references=references)


def _from_outcome(
    outcome: _Outcome, now: dt.datetime, references: tuple[ReferenceResult, ...] = ()
) -> SignatureVerdict:
    return SignatureVerdict(
        status=outcome.status,
        reason=outcome.reason,
        checked_at=now,
        kind=outcome.kind,
        signature_method=outcome.method,
        signer_subject=outcome.signer.subject.rfc4514_string() if outcome.signer is not None else None,
        signing_time=outcome.signing_time,
        references=references,
    )


# -------------------------------------------------------------------------------------- signing

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _signature_method_for(key: SigningKey) -> SignatureMethod:
    if isinstance(key, rsa.RSAPrivateKey):
        return SignatureMethod.RSA_SHA256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return SignatureMethod.ECDSA_SHA384 if key.curve.key_size > 256 else SignatureMethod.ECDSA_SHA256
    raise TypeError(f"unsupported signing key {type(key).__name__}")


def seal(
    document_bytes: bytes,
    key: SigningKey,
    cert_chain: Sequence[x509.Certificate],
    *,
    description: str = "Carnet repository seal",
) -> bytes:
    """The repository's XAdES-B enveloped seal of an XML document (a `ds:Signature` appended to the
    document element); verify it with `verify_enveloped`. Raises XmlInputError for a document
    the hardened parser refuses. The sealed bytes differ from the input (its XDS hash and size
    change, the prolog outside the root element is dropped): to prove a stored document's bytes
    unchanged without altering them, use `sign_detached` and keep the result next to the blob."""
    root = parse_xml(document_bytes, max_depth=DEPTH_LIMIT)
    signer = XAdESSigner(
        method=methods.enveloped,
        signature_algorithm=_signature_method_for(key),
        digest_algorithm=DigestAlgorithm.SHA256,
        data_object_format=XAdESDataObjectFormat(Description=description, MimeType="text/xml"),
    )
    signed = signer.sign(root, key=key, cert=list(cert_chain))
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def sign_detached(
    documents: Mapping[str, bytes],
    key: SigningKey,
    cert_chain: Sequence[x509.Certificate],
    *,
    description: str = "IHE DSG detached signature",
) -> bytes:
    """A DSG-style detached XAdES-B signature document (ITI TF-3 §5.5) over `documents`
    (uniqueId URI → bytes): a `ds:Manifest` with one SHA-256 reference per document, no transform,
    signed (enveloping, in a `ds:Object`) with SignedProperties and the certificate chain."""
    if not documents:
        raise ValueError("sign_detached needs at least one document")
    digests = {uri: hashlib.sha256(data).digest() for uri, data in documents.items()}
    return sign_digests(digests, key, cert_chain, description=description)


def sign_digests(
    digests: Mapping[str, bytes],
    key: SigningKey,
    cert_chain: Sequence[x509.Certificate],
    *,
    description: str = "IHE DSG detached signature",
) -> bytes:
    """`sign_detached` from the SHA-256 digests of the documents (URI → 32 bytes), computed while
    they streamed: the documents themselves are not needed (the repository's seal)."""
    if not digests:
        raise ValueError("sign_digests needs at least one digest")
    manifest = etree.Element(f"{{{DS_NS}}}Manifest", nsmap={"ds": DS_NS}, Id="manifest")
    for uri, digest in digests.items():
        if len(digest) != 32:
            raise ValueError(f"{uri}: not a SHA-256 digest")
        ref = etree.SubElement(manifest, f"{{{DS_NS}}}Reference", URI=uri)
        etree.SubElement(ref, f"{{{DS_NS}}}DigestMethod", Algorithm=DigestAlgorithm.SHA256.value)
        etree.SubElement(ref, f"{{{DS_NS}}}DigestValue").text = base64.b64encode(digest).decode()
    signer = XAdESSigner(
        method=methods.enveloping,
        signature_algorithm=_signature_method_for(key),
        digest_algorithm=DigestAlgorithm.SHA256,
        data_object_format=XAdESDataObjectFormat(Description=description, MimeType="text/xml"),
    )
    signed = signer.sign(manifest, key=key, cert=list(cert_chain))
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


# --------------------------------------------------------------------------------------- policy


class SignatureMode(str, enum.Enum):
    OFF = "off"  # nothing verified
    RECORD = "record"  # verified; the verdict becomes the DocumentEntry slot SIGNATURE_VERIFICATION_SLOT
    REJECT = "reject"  # an invalid, untrusted or expired signature fails the submission


REJECTED = frozenset({SignatureStatus.INVALID, SignatureStatus.UNTRUSTED, SignatureStatus.EXPIRED})
SIGNATURE_RULE = "repository.signature"


@attrs.frozen
class SignaturePolicy:
    """Signature checks at ITI-41 intake (issue 3). `require_signature` makes an unsigned XML
    document fail in `reject` mode (and be recorded as `status=unsigned` in `record` mode)."""

    mode: SignatureMode = SignatureMode.OFF
    trust: TrustStore | None = None
    require_signature: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES

    def __attrs_post_init__(self) -> None:
        if self.mode is not SignatureMode.OFF and self.trust is None:
            raise ValueError(f"signature mode {self.mode.value!r} needs a trust store (CA certificates)")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, base_dir: Path | None = None) -> "SignaturePolicy":
        """From a TOML table such as::

            [repository.signatures]
            mode = "record"                       # off | record | reject
            trust_anchors = ["/etc/carnet/ca"]    # PEM files or directories
            signer_subjects = []                  # RFC 4514 subjects (empty: any)
            signer_fingerprints = []              # SHA-256 hex of signer certificates (empty: any)
            allow_sha1 = false
            require_signature = false
        """
        mode = SignatureMode(str(table.get("mode", "off")).lower())
        trust = None
        anchors = table.get("trust_anchors") or ()
        if isinstance(anchors, str):
            anchors = [a.strip() for a in anchors.split(",") if a.strip()]
        if anchors:
            paths = [Path(a) if Path(a).is_absolute() or base_dir is None else base_dir / a for a in anchors]
            trust = TrustStore.from_paths(
                paths,
                signer_subjects=table.get("signer_subjects", ()),
                signer_fingerprints=table.get("signer_fingerprints", ()),
                allow_sha1=bool(table.get("allow_sha1", False)),
            )
        return cls(mode=mode, trust=trust, require_signature=bool(table.get("require_signature", False)))

    def check_document(
        self,
        mime_type: str,
        document_bytes: bytes,
        *,
        unique_id: str = "",
        format_code: str | None = None,
        resolver: Resolver | None = None,
        signs: Iterable[str] = (),
        now: dt.datetime | None = None,
    ) -> tuple[SignatureVerdict | None, list[RegistryError]]:
        """Verify one submitted document. Returns (None, []) when the policy is off or the document
        is not XML; otherwise the verdict and, in `reject` mode, the errors that fail the
        submission (XDSRepositoryMetadataError, location = the document's uniqueId). A DSG
        detached signature (formatCode `urn:ihe:iti:dsg:detached:2014`) is verified against
        `resolver` (uniqueId URI → bytes of a document of the same submission or already stored);
        `signs`: the uniqueIds of the documents the submission's `signs` associations say it signs
        (ITI TF-3 §5.5), each of which its verified references must include."""
        if self.mode is SignatureMode.OFF or not is_xml_mime_type(mime_type):
            return None, []
        assert self.trust is not None
        if format_code == DSG_DETACHED_FORMAT_CODE:
            verdict = verify_detached(
                document_bytes, resolver or _resolve_nothing, self.trust, now=now, max_bytes=self.max_bytes
            )
            verdict = _check_signs(verdict, signs)
        else:
            verdict = verify_enveloped(document_bytes, self.trust, now=now, max_bytes=self.max_bytes)
        if self.mode is not SignatureMode.REJECT:
            return verdict, []
        refused = verdict.status in REJECTED or (self.require_signature and verdict.status is SignatureStatus.UNSIGNED)
        if not refused:
            return verdict, []
        what = "detached signature" if format_code == DSG_DETACHED_FORMAT_CODE else "document signature"
        message = f"document {unique_id or '(no uniqueId)'}: {what} {verdict.status.value}: {verdict.reason}"
        error = RegistryError(XdsErrorCode.XDSRepositoryMetadataError, message, unique_id, rule=SIGNATURE_RULE)
        return verdict, [error]

    def slot_for(self, verdict: SignatureVerdict | None) -> Slot | None:
        """The extra-metadata slot to add to the DocumentEntry in `record` mode (None otherwise,
        and for unsigned documents unless `require_signature`)."""
        if self.mode is not SignatureMode.RECORD or verdict is None:
            return None
        if verdict.status is SignatureStatus.UNSIGNED and not self.require_signature:
            return None
        return verdict.as_slot()


def is_xml_mime_type(mime_type: str) -> bool:
    base = mime_type.split(";", 1)[0].strip().lower()
    return base in XML_MIME_TYPES or base.endswith("+xml")


def _resolve_nothing(uri: str) -> bytes | None:
    return None


def _bare_uid(uri: str) -> str:
    return uri[len("urn:oid:"):] if uri.startswith("urn:oid:") else uri


def _check_signs(verdict: SignatureVerdict, signs: Iterable[str]) -> SignatureVerdict:
    """A valid DSG verdict stays valid only if every document a `signs` association names is among
    the documents its signature covers (verified references); else it is invalid, with the reason."""
    if verdict.status is not SignatureStatus.VALID:
        return verdict
    covered = {_bare_uid(r.uri) for r in verdict.references if r.status is ReferenceStatus.OK}
    missing = [uid for uid in dict.fromkeys(_bare_uid(u) for u in signs) if uid not in covered]
    if not missing:
        return verdict
    return attrs.evolve(
        verdict, status=SignatureStatus.INVALID,
        reason=f"a signs association names {', '.join(missing)}, which the signature does not cover",
    )
