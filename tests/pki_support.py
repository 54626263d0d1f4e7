"""The one throw-away PKI of the tests, generated in memory with `cryptography` (never loaded from disk).

- `make_ca` (a root, or with `issuer` an intermediate) and `make_leaf` build certificates with the
  extensions the checkers look at: basicConstraints, keyUsage, SKI/AKI (so that `cryptography`'s and
  OpenSSL's path validation accept them);
- a leaf's `usage` says what it is for: "server" / "client" / "node" (both) carry extendedKeyUsage
  serverAuth / clientAuth (RFC 5280 §4.2.1.12) and, with `dns` / `ips`, a subjectAltName (RFC 6125 §6.4;
  RFC 2818 §3.1 for an IP address) — TLS node authentication, ITI-19; "signing" is a document-signing
  certificate (keyUsage digitalSignature + nonRepudiation, no extendedKeyUsage) for XML signatures;
- `write_pki` writes a whole TLS test PKI as PEM files (the form `TlsSettings` takes);
  `make_signing_pki` builds the signature PKI of the repository tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def new_key(kind: str = "ec") -> PrivateKey:
    # EC P-256 by default: generated in microseconds, where RSA-2048 takes tens of milliseconds.
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def name(cn: str, org: str = "Carnet Test") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class Pem:
    """One party's PEM files."""

    certificate: Path
    private_key: Path
    subject: str


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())  # intermediates, leaf excluded

    @property
    def cert_pem(self) -> bytes:
        """The certificate followed by its intermediates (the form a TLS peer presents)."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def write(self, directory: Path, label: str) -> Pem:
        """`label`.crt (certificate and intermediates) and `label`.key (mode 0600) in `directory`."""
        cert = directory / f"{label}.crt"
        key = directory / f"{label}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return Pem(cert, key, self.subject)


_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)


def make_ca(cn: str, *, kind: str = "ec", days: int = 3650, issuer: Issued | None = None) -> Issued:
    """A self-signed root CA, or with `issuer` an intermediate CA issued by it (as IGC-Santé's issuing CAs
    are, under its root)."""
    key = new_key(kind)
    subject = name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    if issuer is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        issuer_name, signing_key, path_length = subject, key, None
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        issuer_name, signing_key, path_length = issuer.cert.subject, issuer.key, 0
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=3 * 365))  # before any leaf it issues, the expired one too
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    return Issued(key, cert)


_EKU = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "node": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    "signing": [],
}


def make_leaf(
    ca: Issued,
    cn: str,
    *,
    usage: str,
    kind: str = "ec",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> Issued:
    """A leaf of `ca`; `usage`: "server", "client", "node" (TLS, see the module) or "signing"."""
    key = new_key(kind)
    signing = usage == "signing"
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=signing,
                key_encipherment=not signing and kind == "rsa", data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if _EKU[usage]:
        builder = builder.add_extension(x509.ExtendedKeyUsage(_EKU[usage]), critical=False)
    alt = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    chain = (ca.cert, *ca.chain) if ca.cert.issuer != ca.cert.subject else ()
    return Issued(key, builder.sign(ca.key, hashes.SHA256()), chain)


def expired_leaf(ca: Issued, cn: str, *, usage: str, kind: str = "ec") -> Issued:
    """A leaf of `ca` that expired 30 days ago."""
    return make_leaf(ca, cn, usage=usage, kind=kind,
                     not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=30))


def not_yet_valid_leaf(ca: Issued, cn: str, *, usage: str, kind: str = "ec") -> Issued:
    """A leaf of `ca` valid from tomorrow."""
    return make_leaf(ca, cn, usage=usage, kind=kind,
                     not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=400))


# --- the TLS PKI, as files (tests/tls, tests/config, tests/pix_v2) ---------------------------------------


@dataclass(frozen=True)
class TlsPki:
    """Files for every party of the tests; `ca_bundle` trusts only the Carnet test CA."""

    ca_bundle: Path
    other_ca_bundle: Path  # trusts only the other CA
    server: Pem  # the Carnet node: localhost + 127.0.0.1, signed by the test CA
    server_ip_only: Pem  # same CA, SAN holds only 127.0.0.1 (no DNS name)
    rogue_server: Pem  # localhost + 127.0.0.1, signed by the other CA
    client: Pem  # a valid node certificate
    client_rsa: Pem  # a valid RSA node certificate
    expired: Pem  # test CA, expired 30 days ago
    not_yet_valid: Pem  # test CA, valid from tomorrow
    foreign: Pem  # signed by the other CA
    self_signed: Pem
    chained_server: Pem  # issued by an intermediate of the test CA; the file holds leaf + intermediate
    chained_client: Pem  # same, for a client
    combined: Path  # the client's certificate and key in one PEM file


def write_pki(directory: Path) -> TlsPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Carnet Test Node CA")
    other = make_ca("Some Other CA")
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "other-ca.pem").write_bytes(other.cert_pem)
    issuing = make_ca("Carnet Test Issuing CA", issuer=ca)
    client = make_leaf(ca, "Cabinet Martin", usage="client")
    combined = directory / "client-combined.pem"
    combined.write_bytes(client.cert_pem + client.key_pem)
    local = {"dns": ("localhost",), "ips": ("127.0.0.1",)}
    return TlsPki(
        ca_bundle=directory / "ca.pem",
        other_ca_bundle=directory / "other-ca.pem",
        server=make_leaf(ca, "carnet.test", usage="server", **local).write(directory, "server"),
        server_ip_only=make_leaf(ca, "127.0.0.1", usage="server", ips=("127.0.0.1",)).write(directory, "server-ip"),
        rogue_server=make_leaf(other, "carnet.test", usage="server", **local).write(directory, "rogue"),
        client=client.write(directory, "client"),
        client_rsa=make_leaf(ca, "Clinique RSA", usage="client", kind="rsa").write(directory, "client-rsa"),
        expired=expired_leaf(ca, "Cabinet Expired", usage="client").write(directory, "expired"),
        not_yet_valid=not_yet_valid_leaf(ca, "Cabinet Future", usage="client").write(directory, "future"),
        foreign=make_leaf(other, "Mallory", usage="client").write(directory, "foreign"),
        self_signed=make_ca("Self Signed Node").write(directory, "self"),
        chained_server=make_leaf(issuing, "carnet-chained.test", usage="server", **local).write(
            directory, "chained-server"),
        chained_client=make_leaf(issuing, "Hopital Chained", usage="client").write(directory, "chained-client"),
        combined=combined,
    )


# --- the signature PKI (tests/repository) ---------------------------------------------------------------


@dataclass(frozen=True)
class SigningPki:
    ca: Issued
    ca_ec: Issued
    other_ca: Issued
    leaf: Issued
    leaf_ec: Issued
    expired: Issued
    foreign: Issued


def make_signing_pki() -> SigningPki:
    """Document-signing certificates: RSA (the common case, rsa-sha256) and EC, an expired one, one of a CA
    the trust store does not hold."""
    ca = make_ca("Carnet Test Root CA", kind="rsa")
    ca_ec = make_ca("Carnet Test EC Root CA", kind="ec")
    other = make_ca("Some Other CA", kind="rsa")
    return SigningPki(
        ca=ca,
        ca_ec=ca_ec,
        other_ca=other,
        leaf=make_leaf(ca, "Dr Alice Martin", usage="signing", kind="rsa"),
        leaf_ec=make_leaf(ca_ec, "Dr Bob EC", usage="signing", kind="ec"),
        expired=expired_leaf(ca, "Dr Expired", usage="signing", kind="rsa"),
        foreign=make_leaf(other, "Mallory", usage="signing", kind="rsa"),
    )
