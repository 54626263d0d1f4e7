"""Node authentication (IHE ATNA, ITI-19 Authenticate Node): TLS for every listening port and every
outbound connection of Carnet.

ITI TF-2 §3.19.6 (ITI-19, "STX: TLS 1.2 Floor using BCP195" option): mutual authentication with X.509
certificates, TLS 1.2 or later (RFC 8996 deprecates TLS 1.0 and 1.1), the cipher suites BCP195
recommends (RFC 9325 §4.2). One `TlsSettings` serves every port (HTTP SOAP endpoints, MLLP, syslog
receiver) and every client (remote registry, ARR, PIX consumers):

- `server_context_factory(tls, on_failure=...)`: for `reactor.listenSSL`, `SSL4ServerEndpoint`,
  `TLSMemoryBIOFactory(creator, False, factory)` or `listen_tls`. Client certificates are checked
  against `ca_bundle` (missing, expired, not yet valid, unknown CA → the handshake is refused) and
  each refused connection is reported once to `on_failure` as a `NodeAuthFailure`, which the caller
  audits as DCM 110113 Security Alert / EventTypeCode 110126 Node Authentication (DICOM PS3.15 A.5).
- `client_context_factory(tls, hostname)`: Twisted outbound connections (syslog to the ARR, PIX
  notifications) presenting our certificate and checking the server's against `ca_bundle` and its
  host name (RFC 6125), or against the CA only (`verify_hostname=False`, IP-addressed test benches).
- `ssl_context_for_client(tls)`: the same for blocking stdlib clients (`http.client`, `urllib`,
  `repository.registry_client.SoapRegistryClient(ssl_context=...)`).
- `listen_tls(reactor, port, factory, tls, ...)`: listen with any protocol factory over TLS;
  `tls_server_factory(factory, tls, ...)`: the wrapped factory, for `adoptStreamPort`.
- `HttpsPolicy(tls)`: for `twisted.web.client.Agent` (HTTPS with our certificate).
- `peer_subject(transport)`: the authenticated peer's certificate subject, for audit messages.

How refusals are observed: the pyOpenSSL info callback of the server context sees every alert
Carnet *sends* (SSL_CB_WRITE_ALERT); a fatal alert sent before the handshake is done is a refused
connection — exactly one per connection, since TLS closes after a fatal alert (RFC 8446 §6.2,
RFC 5246 §7.2.2). The verify callback, run while OpenSSL checks the peer's chain, records the
verification error and the presented certificate (OpenSSL keeps no peer certificate after a failed
verification). This works whatever wraps the factory (listenSSL, endpoints, `twisted.web`) and costs
nothing per byte. Connections that end before any alert (a peer that hangs up mid-handshake, plain
text sent to a TLS port, which OpenSSL drops without an alert) are not reported: no certificate was
refused there.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import ssl
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

log = logging.getLogger("carnet.tls")

# RFC 9325 §4.2 (BCP195) recommended TLS 1.2 cipher suites, in OpenSSL's names:
# TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128_GCM_SHA256,256_GCM_SHA384}. TLS 1.3 suites (all AEAD) are
# OpenSSL's defaults and are not restricted by this string.
BCP195_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ]
)

# Protocol floor: ITI TF-2 §3.19.6 "TLS 1.2 Floor"; RFC 8996 §§2-3 forbid TLS 1.0 and 1.1.
MINIMUM_VERSIONS = {"TLSv1.2": (SSL.TLS1_2_VERSION, ssl.TLSVersion.TLSv1_2),
                    "TLSv1.3": (SSL.TLS1_3_VERSION, ssl.TLSVersion.TLSv1_3)}


class TlsConfigurationError(Exception):
    """The TLS settings cannot be used (missing file, unreadable PEM, key not matching the
    certificate, unknown cipher string). Raised when a factory is built, i.e. at startup."""


def _path(value: Any) -> Path:
    return value if isinstance(value, Path) else Path(value)


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else _path(value)


@attrs.frozen
class TlsSettings:
    """One node's TLS identity and trust (shared by every port and client).

    `certificate`: PEM, our certificate first, then any intermediates (sent to peers).
    `private_key`: PEM (unencrypted) of the certificate's key; may be the same file.
    `ca_bundle`: PEM of the CAs whose certificates we accept from peers (clients of our ports, and
    servers we connect to). Without it, a server cannot check client certificates and a client
    falls back to the system's trust store.
    `require_client_certificate`: servers refuse a client with no certificate (ITI-19 mutual
    authentication). When False, a client may come without one, but a certificate it does present
    must still verify.
    `minimum_version`: "TLSv1.2" (the floor) or "TLSv1.3".
    `ciphers`: OpenSSL cipher string for TLS 1.2; default `BCP195_CIPHERS`."""

    certificate: Path = attrs.field(converter=_path)
    private_key: Path = attrs.field(converter=_path)
    ca_bundle: Path | None = attrs.field(default=None, converter=_optional_path)
    require_client_certificate: bool = True
    minimum_version: str = attrs.field(default="TLSv1.2")
    ciphers: str | None = None

    @minimum_version.validator
    def _check_version(self, _attribute: Any, value: str) -> None:
        if value not in MINIMUM_VERSIONS:
            raise TlsConfigurationError(
                f"minimum_version must be one of {', '.join(MINIMUM_VERSIONS)} "
                f"(ITI TF-2 §3.19.6, RFC 8996: nothing below TLS 1.2), got {value!r}"
            )

    @property
    def cipher_string(self) -> str:
        return self.ciphers or BCP195_CIPHERS

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base_dir: Path | None = None) -> "TlsSettings":
        """From a TOML table / dict with the keys `certificate`, `private_key` (default: the
        certificate file), `ca_bundle`, `require_client_certificate`, `minimum_version`, `ciphers`.
        Relative paths are resolved against `base_dir` (the config file's directory)."""
        known = {"certificate", "private_key", "ca_bundle", "require_client_certificate",
                 "minimum_version", "ciphers"}
        unknown = set(values) - known
        if unknown:
            raise TlsConfigurationError(f"unknown TLS setting(s): {', '.join(sorted(unknown))}")
        if not values.get("certificate"):
            raise TlsConfigurationError("TLS needs a certificate (PEM file)")

        def resolve(v: Any) -> Path | None:
            if v in (None, ""):
                return None
            p = Path(v).expanduser()
            return p if p.is_absolute() or base_dir is None else base_dir / p

        require = values.get("require_client_certificate", True)
        if isinstance(require, str):
            require = require.strip().lower() in ("1", "true", "yes", "on")
        return cls(
            certificate=resolve(values["certificate"]),
            private_key=resolve(values.get("private_key") or values["certificate"]),
            ca_bundle=resolve(values.get("ca_bundle")),
            require_client_certificate=bool(require),
            minimum_version=str(values.get("minimum_version") or "TLSv1.2"),
            ciphers=values.get("ciphers") or None,
        )


# --------------------------------------------------------------------------------------- failures


class FailureReason(enum.Enum):
    """Why a connection was refused during the TLS handshake."""

    NO_CERTIFICATE = "no-certificate"  # a client certificate is required and none was sent
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
    UNTRUSTED_ISSUER = "untrusted-issuer"  # not issued by a CA of the bundle, or self-signed
    CERTIFICATE_REJECTED = "certificate-rejected"  # bad signature, revoked, wrong purpose, ...
    PROTOCOL_VERSION = "protocol-version"  # TLS 1.1 or older offered
    HANDSHAKE = "handshake"  # anything else: no shared cipher suite, malformed message, ...


@attrs.frozen
class NodeAuthFailure:
    """One connection refused by a Carnet TLS port, for the ATNA node authentication failure event
    (DCM 110113 Security Alert, EventTypeCode DCM 110126 Node Authentication, EventOutcomeIndicator
    4 minor failure; ITI TF-2 §3.19.6; DICOM PS3.15 A.5.3.11).

    `peer_host`/`peer_port`: the remote address (the audit's NetworkAccessPointID);
    `local_port`: the port that refused it; `reason`: a `FailureReason`; `detail`: readable text
    with the OpenSSL verification error and the TLS alert sent; `subject`/`issuer`: RFC 4514
    strings of the certificate the peer presented, None when it presented none."""

    peer_host: str | None
    peer_port: int | None
    local_port: int | None
    reason: FailureReason
    detail: str
    subject: str | None = None
    issuer: str | None = None
    alert: int | None = None  # the TLS AlertDescription sent (RFC 8446 §6)
    verify_error: int | None = None  # OpenSSL X509_V_ERR_* code


# TLS AlertDescription (RFC 8446 §6, RFC 5246 §7.2).
ALERTS = {
    10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow", 40: "handshake_failure",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    116: "certificate_required", 120: "no_application_protocol",
}

# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) → (reason, text).
_UNTRUSTED = FailureReason.UNTRUSTED_ISSUER
VERIFY_ERRORS: dict[int, tuple[FailureReason, str]] = {
    2: (_UNTRUSTED, "unable to get issuer certificate"),
    7: (FailureReason.CERTIFICATE_REJECTED, "certificate signature failure"),
    9: (FailureReason.CERTIFICATE_NOT_YET_VALID, "certificate is not yet valid"),
    10: (FailureReason.CERTIFICATE_EXPIRED, "certificate has expired"),
    18: (_UNTRUSTED, "self-signed certificate"),
    19: (_UNTRUSTED, "self-signed certificate in certificate chain"),
    20: (_UNTRUSTED, "unable to get local issuer certificate"),
    21: (_UNTRUSTED, "unable to verify the first certificate"),
    23: (FailureReason.CERTIFICATE_REJECTED, "certificate revoked"),
    24: (FailureReason.CERTIFICATE_REJECTED, "invalid CA certificate"),
    26: (FailureReason.CERTIFICATE_REJECTED, "unsupported certificate purpose"),
    27: (_UNTRUSTED, "certificate not trusted"),
    28: (FailureReason.CERTIFICATE_REJECTED, "certificate rejected"),
}

_FATAL = 2  # AlertLevel fatal (RFC 5246 §7.2)


@attrs.define
class _Handshake:
    """What one server-side connection learnt during its handshake. Holds nothing that refers
    back to the connection (it is the value of a WeakKeyDictionary keyed by the connection)."""

    done: bool = False
    reported: bool = False
    certificate_requested: bool = False  # a CertificateRequest was sent (RFC 5246 §7.4.4)
    verify_error: int | None = None
    cert_depth: int | None = None
    subject: str | None = None
    issuer: str | None = None


def _classify(alert: int, state: _Handshake) -> tuple[FailureReason, str]:
    alert_name = ALERTS.get(alert, f"alert {alert}")
    if state.verify_error is not None:
        reason, text = VERIFY_ERRORS.get(
            state.verify_error, (FailureReason.CERTIFICATE_REJECTED, "certificate verification failed")
        )
        return reason, f"{text} (X509 error {state.verify_error}); sent TLS alert {alert_name}"
    if alert == 70:
        return FailureReason.PROTOCOL_VERSION, f"protocol version below the floor; sent TLS alert {alert_name}"
    if alert == 116 or (alert == 40 and state.cert_depth is None and state.certificate_requested):
        # TLS 1.3 sends certificate_required (RFC 8446 §4.4.2.4); TLS 1.2 handshake_failure
        # (RFC 5246 §7.4.6), which OpenSSL also sends for other reasons: see `certificate_requested`.
        return FailureReason.NO_CERTIFICATE, f"no client certificate; sent TLS alert {alert_name}"
    if alert in (42, 43, 44, 45, 46, 48):
        return FailureReason.CERTIFICATE_REJECTED, f"certificate refused; sent TLS alert {alert_name}"
    return FailureReason.HANDSHAKE, f"handshake failed; sent TLS alert {alert_name}"


def _x509_names(cert: crypto.X509) -> tuple[str, str]:
    c = cert.to_cryptography()
    return c.subject.rfc4514_string(), c.issuer.rfc4514_string()


# --------------------------------------------------------------------------------------- server


def _check_files(tls: TlsSettings, *, need_ca: bool) -> None:
    for label, path in (("certificate", tls.certificate), ("private_key", tls.private_key)):
        if not path.is_file():
            raise TlsConfigurationError(f"TLS {label} {path} is not a readable file")
    if tls.ca_bundle is not None and not tls.ca_bundle.is_file():
        raise TlsConfigurationError(f"TLS ca_bundle {tls.ca_bundle} is not a readable file")
    if need_ca and tls.ca_bundle is None:
        raise TlsConfigurationError(
            "require_client_certificate needs a ca_bundle to check client certificates against"
        )


def _load_identity(ctx: SSL.Context, tls: TlsSettings) -> None:
    try:
        ctx.use_certificate_chain_file(str(tls.certificate))
    except SSL.Error as exc:
        raise TlsConfigurationError(f"cannot load TLS certificate {tls.certificate}: {exc}") from exc
    try:
        ctx.use_privatekey_file(str(tls.private_key))
        ctx.check_privatekey()
    except SSL.Error as exc:
        raise TlsConfigurationError(
            f"cannot use TLS private key {tls.private_key} with {tls.certificate}: {exc}"
        ) from exc


def _set_ciphers(ctx: SSL.Context, tls: TlsSettings) -> None:
    try:
        ctx.set_cipher_list(tls.cipher_string.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError) as exc:
        raise TlsConfigurationError(f"unusable TLS cipher string {tls.cipher_string!r}: {exc}") from exc


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """An `IOpenSSLServerConnectionCreator`: one configured OpenSSL context, one `SSL.Connection`
    per accepted connection, handshake refusals reported to `on_failure`. Build with
    `server_context_factory`."""

    def __init__(self, tls: TlsSettings, on_failure: Callable[[NodeAuthFailure], None] | None = None) -> None:
        _check_files(tls, need_ca=tls.require_client_certificate)
        self.settings = tls
        self.on_failure = on_failure
        self._handshakes: weakref.WeakKeyDictionary[SSL.Connection, _Handshake] = weakref.WeakKeyDictionary()
        self._context = self._make_context(tls)

    def _make_context(self, tls: TlsSettings) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(MINIMUM_VERSIONS[tls.minimum_version][0])
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        _load_identity(ctx, tls)
        _set_ciphers(ctx, tls)
        # A session resumed from another context must not skip the client check (SSL_CTX_set_session_id_context).
        ctx.set_session_id(hashlib.sha256(repr(tls).encode()).digest()[:32])
        if tls.ca_bundle is not None:
            try:
                ctx.load_verify_locations(str(tls.ca_bundle))
                # The CA names sent in CertificateRequest help clients pick their certificate
                # (RFC 5246 §7.4.4 certificate_authorities, RFC 8446 §4.2.4).
                ctx.load_client_ca(str(tls.ca_bundle).encode())
            except SSL.Error as exc:
                raise TlsConfigurationError(f"cannot load TLS ca_bundle {tls.ca_bundle}: {exc}") from exc
            mode = SSL.VERIFY_PEER
            if tls.require_client_certificate:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            ctx.set_verify(mode, self._verify)
        else:
            ctx.set_verify(SSL.VERIFY_NONE)
        ctx.set_info_callback(self._info)
        return ctx

    # IOpenSSLServerConnectionCreator
    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 - Twisted's name
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)  # Twisted's convention (ALPN helpers read it)
        self._handshakes[connection] = _Handshake()
        return connection

    # --- callbacks (run inside OpenSSL: never raise) -----------------------------------------------

    def _verify(self, connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        try:
            state = self._handshakes.get(connection)
            if state is not None:
                if state.cert_depth is None or depth <= state.cert_depth:
                    state.cert_depth = depth
                    state.subject, state.issuer = _x509_names(cert)
                if not ok and state.verify_error is None:
                    state.verify_error = errno
        except Exception:  # noqa: BLE001 - a callback inside OpenSSL must not raise
            log.exception("TLS verify callback failed")
        return bool(ok)

    def _info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        try:
            state = self._handshakes.get(connection)
            if state is None:
                return
            if where & SSL.SSL_CB_HANDSHAKE_DONE:
                state.done = True
            elif where & SSL.SSL_CB_LOOP and not state.certificate_requested:
                # OpenSSL's state names (SSL_state_string_long), stable since 1.1.0.
                if connection.get_state_string() == b"SSLv3/TLS write certificate request":
                    state.certificate_requested = True
            elif (where & SSL.SSL_CB_WRITE_ALERT) == SSL.SSL_CB_WRITE_ALERT and (ret >> 8) == _FATAL:
                if not state.done and not state.reported:
                    state.reported = True
                    self._report(state, ret & 0xFF, connection.get_app_data())
        except Exception:  # noqa: BLE001 - a callback inside OpenSSL must not raise
            log.exception("TLS info callback failed")

    def _report(self, state: _Handshake, alert: int, tls_protocol: Any) -> None:
        reason, detail = _classify(alert, state)
        host = port = local = None
        transport = getattr(tls_protocol, "transport", None)
        if transport is not None:
            peer = transport.getPeer()
            host, port = getattr(peer, "host", None), getattr(peer, "port", None)
            local = getattr(transport.getHost(), "port", None)
        failure = NodeAuthFailure(
            peer_host=host, peer_port=port, local_port=local, reason=reason, detail=detail,
            subject=state.subject, issuer=state.issuer, alert=alert, verify_error=state.verify_error,
        )
        log.warning("TLS node authentication failure from %s:%s: %s%s", host, port, detail,
                    f" (subject {state.subject})" if state.subject else "")
        if self.on_failure is not None:
            try:
                self.on_failure(failure)
            except Exception:  # noqa: BLE001 - an audit sink error must not break the port
                log.exception("on_failure callback failed for %s", failure)


def server_context_factory(
    tls: TlsSettings, *, on_failure: Callable[[NodeAuthFailure], None] | None = None
) -> ServerTls:
    """The TLS side of a listening port: pass it to `reactor.listenSSL(port, factory, it)`,
    `SSL4ServerEndpoint(reactor, port, it)`, `TLSMemoryBIOFactory(it, False, factory)`, or use
    `listen_tls`. `on_failure` runs on the reactor thread, once per refused connection; it must
    not block (hand the event to the audit sink's queue). Raises TlsConfigurationError."""
    return ServerTls(tls, on_failure)


def tls_server_factory(
    factory: Any, tls: TlsSettings | ServerTls, *, on_failure: Callable[[NodeAuthFailure], None] | None = None
) -> Any:
    """`factory` (any protocol factory: a `twisted.web` Site, an MLLP or syslog factory) wrapped in
    TLS: for `reactor.listenTCP` or `reactor.adoptStreamPort` (the multi-process `serve`)."""
    from twisted.protocols.tls import TLSMemoryBIOFactory

    if isinstance(tls, ServerTls):
        if on_failure is not None:
            raise ValueError("on_failure belongs to server_context_factory when a ServerTls is passed")
        creator = tls
    else:
        creator = server_context_factory(tls, on_failure=on_failure)
    return TLSMemoryBIOFactory(creator, False, factory)


def listen_tls(
    reactor: Any,
    port: int,
    factory: Any,
    tls: TlsSettings | ServerTls,
    *,
    interface: str = "",
    on_failure: Callable[[NodeAuthFailure], None] | None = None,
    backlog: int = 50,
) -> Any:
    """Listen on `interface`:`port` (0: any free port) with `factory` over TLS; returns the
    listening port (`.getHost().port`, `.stopListening()`)."""
    return reactor.listenTCP(
        port, tls_server_factory(factory, tls, on_failure=on_failure), backlog=backlog, interface=interface
    )


def peer_subject(transport: Any) -> str | None:
    """RFC 4514 subject of the certificate the peer of a TLS `transport` authenticated with
    (e.g. `request.channel.transport` in a twisted.web Resource), None without TLS or certificate."""
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        cert = get()
    except Exception:  # noqa: BLE001 - no TLS connection (yet)
        return None
    if cert is None:
        return None
    return cert.to_cryptography().subject.rfc4514_string()


# --------------------------------------------------------------------------------------- clients


@implementer(IOpenSSLClientConnectionCreator)
class ClientTls:
    """An `IOpenSSLClientConnectionCreator` for one server name: our certificate (with its chain),
    TLS 1.2+, BCP195 ciphers, the server's chain checked against `ca_bundle` by OpenSSL and its
    name (DNS-ID or IP-ID, RFC 6125 §6; RFC 2818 §3.1) by `service_identity` once the handshake is
    done. Build with `client_context_factory`."""

    def __init__(self, tls: TlsSettings, hostname: str, *, verify_hostname: bool = True) -> None:
        _check_files(tls, need_ca=False)
        self.settings = tls
        self.hostname = hostname
        self.verify_hostname = verify_hostname
        self._is_ip = _is_ip_address(hostname)
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(MINIMUM_VERSIONS[tls.minimum_version][0])
        ctx.set_options(SSL.OP_NO_COMPRESSION)
        _load_identity(ctx, tls)
        _set_ciphers(ctx, tls)
        try:
            if tls.ca_bundle is not None:
                ctx.load_verify_locations(str(tls.ca_bundle))
            else:
                ctx.set_default_verify_paths()
        except SSL.Error as exc:
            raise TlsConfigurationError(f"cannot load TLS ca_bundle {tls.ca_bundle}: {exc}") from exc
        ctx.set_verify(SSL.VERIFY_PEER)  # OpenSSL's own chain check; a failure aborts the handshake
        if verify_hostname:
            ctx.set_info_callback(self._check_name)
        self._context = ctx

    # IOpenSSLClientConnectionCreator
    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 - Twisted's name
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if not self._is_ip:
            # RFC 6066 §3: server_name carries DNS names only.
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        return connection

    def _check_name(self, connection: SSL.Connection, where: int, _ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        from service_identity import VerificationError
        from service_identity.pyopenssl import verify_hostname, verify_ip_address
        from twisted.python.failure import Failure

        try:
            if self._is_ip:
                verify_ip_address(connection, self.hostname)
            else:
                verify_hostname(connection, self.hostname)
        except VerificationError:
            # The application protocol's connectionLost gets the VerificationError.
            connection.get_app_data().failVerification(Failure())
        except Exception:  # noqa: BLE001 - inside OpenSSL: never raise; refuse the connection
            log.exception("TLS server name check failed")
            connection.get_app_data().failVerification(Failure())


def _is_ip_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def client_context_factory(tls: TlsSettings, hostname: str, *, verify_hostname: bool = True) -> ClientTls:
    """The TLS side of an outbound Twisted connection to `hostname`: presents our certificate and
    checks the server's against `ca_bundle` (the system's trust store without one) and, unless
    `verify_hostname` is False, against `hostname` (a DNS name or an IP address; SNI is sent for
    DNS names). `verify_hostname=False` pins trust to the CA bundle only (IP-addressed test
    benches). For `SSL4ClientEndpoint(reactor, host, port, it)`, `reactor.connectSSL`,
    `wrapClientTLS(it, endpoint)` or `TLSMemoryBIOFactory(it, True, factory)`.
    A refused server ends the connection: the protocol's connectionLost gets an `OpenSSL.SSL.Error`
    (certificate verify failed) or a `service_identity.VerificationError` (name mismatch).
    Raises TlsConfigurationError."""
    return ClientTls(tls, hostname, verify_hostname=verify_hostname)


@implementer(IPolicyForHTTPS)
class HttpsPolicy:
    """`twisted.web.client.Agent(reactor, contextFactory=HttpsPolicy(tls))`: HTTPS requests that
    present our certificate and check each server against `ca_bundle` and the URL's host name."""

    def __init__(self, tls: TlsSettings, *, verify_hostname: bool = True) -> None:
        self.settings = tls
        self.verify_hostname = verify_hostname
        self._creators: dict[str, ClientTls] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> ClientTls:  # noqa: N802 - Twisted's name
        name = hostname.decode("ascii")
        if name not in self._creators:  # one OpenSSL context per server name, reused
            self._creators[name] = ClientTls(self.settings, name, verify_hostname=self.verify_hostname)
        return self._creators[name]


def ssl_context_for_client(tls: TlsSettings, *, verify_hostname: bool = True) -> ssl.SSLContext:
    """A stdlib `ssl.SSLContext` for blocking HTTPS clients (`http.client.HTTPSConnection`,
    `urllib`, `SoapRegistryClient(url, ssl_context=...)`): our certificate, TLS 1.2+, BCP195
    ciphers, the server checked against `ca_bundle` (system trust store without one) and its
    host name unless `verify_hostname` is False. Raises TlsConfigurationError."""
    _check_files(tls, need_ca=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSIONS[tls.minimum_version][1]
    try:
        context.set_ciphers(tls.cipher_string)
    except ssl.SSLError as exc:
        raise TlsConfigurationError(f"unusable TLS cipher string {tls.cipher_string!r}: {exc}") from exc
    try:
        if tls.ca_bundle is not None:
            context.load_verify_locations(cafile=str(tls.ca_bundle))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigurationError(f"cannot load TLS ca_bundle {tls.ca_bundle}: {exc}") from exc
    try:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigurationError(
            f"cannot use TLS certificate {tls.certificate} with private key {tls.private_key}: {exc}"
        ) from exc
    context.check_hostname = verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context
