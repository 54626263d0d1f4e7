"""A throw-away PKI for TLS tests (node authentication, ITI-19), generated with `cryptography`.

Adapted from tests/repository/certs.py (signature PKI): leaves here carry what TLS peers check —
extendedKeyUsage serverAuth / clientAuth (RFC 5280 §4.2.1.12) and, for the server, a
subjectAltName with DNS `localhost` and IP 127.0.0.1 (RFC 6125 §6.4; RFC 2818 §3.1 for the IP).
`write_pki` writes every certificate and key as PEM files, the form `TlsSettings` takes.
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
class Issued:
    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())  # intermediates, leaf excluded

    @property
    def cert_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


def make_ca(cn: str, *, kind: str = "ec", days: int = 3650) -> Issued:
    key = new_key(kind)
    subject = name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=3 * 365))  # before any leaf it issues, the expired one too
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def make_intermediate(root: Issued, cn: str) -> Issued:
    """A CA certificate issued by `root` (as IGC-Santé's issuing CAs are, under its root)."""
    ca = make_ca(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    return Issued(ca.key, cert)


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
    """A TLS leaf of `ca`; `usage`: "server" or "client" (extendedKeyUsage)."""
    key = new_key(kind)
    eku = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}[usage]
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
                digital_signature=True, content_commitment=False, key_encipherment=kind == "rsa",
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    alt = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    chain = (ca.cert, *ca.chain) if ca.cert.issuer != ca.cert.subject else ()
    return Issued(key, builder.sign(ca.key, hashes.SHA256()), chain)


@dataclass(frozen=True)
class Pem:
    """One party's PEM files."""

    certificate: Path
    private_key: Path
    subject: str


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


def _write(directory: Path, label: str, issued: Issued) -> Pem:
    cert = directory / f"{label}.crt"
    key = directory / f"{label}.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    key.chmod(0o600)
    return Pem(cert, key, issued.subject)


def write_pki(directory: Path) -> TlsPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Carnet Test Node CA")
    other = make_ca("Some Other CA")
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "other-ca.pem").write_bytes(other.cert_pem)
    self_ca = make_ca("Self Signed Node")
    issuing = make_intermediate(ca, "Carnet Test Issuing CA")
    client = make_leaf(ca, "Cabinet Martin", usage="client")
    combined = directory / "client-combined.pem"
    combined.write_bytes(client.cert_pem + client.key_pem)
    return TlsPki(
        ca_bundle=directory / "ca.pem",
        other_ca_bundle=directory / "other-ca.pem",
        server=_write(directory, "server", make_leaf(ca, "carnet.test", usage="server",
                                                     dns=("localhost",), ips=("127.0.0.1",))),
        server_ip_only=_write(directory, "server-ip", make_leaf(ca, "127.0.0.1", usage="server",
                                                                ips=("127.0.0.1",))),
        rogue_server=_write(directory, "rogue", make_leaf(other, "carnet.test", usage="server",
                                                          dns=("localhost",), ips=("127.0.0.1",))),
        client=_write(directory, "client", client),
        client_rsa=_write(directory, "client-rsa", make_leaf(ca, "Clinique RSA", usage="client", kind="rsa")),
        expired=_write(directory, "expired", make_leaf(
            ca, "Cabinet Expired", usage="client",
            not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=30))),
        not_yet_valid=_write(directory, "future", make_leaf(
            ca, "Cabinet Future", usage="client",
            not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=400))),
        foreign=_write(directory, "foreign", make_leaf(other, "Mallory", usage="client")),
        self_signed=_write(directory, "self", Issued(self_ca.key, self_ca.cert)),
        chained_server=_write(directory, "chained-server", make_leaf(
            issuing, "carnet-chained.test", usage="server", dns=("localhost",), ips=("127.0.0.1",))),
        chained_client=_write(directory, "chained-client", make_leaf(issuing, "Hopital Chained", usage="client")),
        combined=combined,
    )
