"""Carnet's settings: embedded defaults < TOML file < CARNET_* environment < command-line flags.

TOML layout (every key optional)::

    [carnet]
    data_dir = "var"
    host = "127.0.0.1"
    http_port = 8080
    database_url = "postgresql://carnet@db/carnet"   # default: SQLite in data_dir
    threads = 4
    workers = 1                                       # serving processes (one core each)
    public_url = "https://xds.example.org"            # base URL written in the served WSDLs

    [registry]
    max_query_results = 10000
    relaxed_rules = ["DE.languageCode"]               # validation rules downgraded to warnings
    home_community_id = "urn:oid:1.2.3"

    [repository]
    unique_id = "1.2.250.1.999.1"          # repositoryUniqueId; default: a 2.25 OID made once in data_dir
    registry_url = ""                      # empty: the registry of this Carnet, in process
    blob_store = "fs"                      # fs | s3
    blob_dir = "var/blobs"                 # fs: default data_dir/blobs
    master_key_file = "var/master.key"     # default data_dir/master.key; CARNET_MASTER_KEY (base64) wins
    s3_endpoint = "minio.example:9000"
    s3_bucket = "carnet"
    s3_access_key = "…"                    # or CARNET_S3_ACCESS_KEY
    s3_secret_key = "…"                    # or CARNET_S3_SECRET_KEY
    s3_secure = true                       # TLS
    s3_ca_file = "/etc/carnet/s3-ca.pem"   # CA bundle for the S3 server's certificate (default: SSL_CERT_FILE, else certifi's)
    s3_cert_check = true                   # false: do not verify the S3 server's certificate (tests only)
    s3_region = ""
    s3_create_bucket = false
    seal_certificate = "/etc/carnet/seal.pem"  # the repository seals each new document (repository.seal):
    seal_key = "/etc/carnet/seal.key"          #   its certificate chain (leaf first) and private key, PEM

    [repository.signatures]                # see repository.signatures.SignaturePolicy.from_mapping
    mode = "off"                           # off | record | reject
    trust_anchors = ["/etc/carnet/ca"]

    [pix]
    mllp_port = 2575                       # HL7v2 ITI-8/9 over MLLP; 0: no MLLP listener
    mllp_max_message_bytes = 1048576
    domains = ["1.2.250.1.999.1.1"]        # assigning authorities (IPP domains) the PIX Manager knows
    ins_oids = ["1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9"]   # accepted INS: production only
    device_id = "1.2.250.1.999.2"          # HL7v3 device id of this PIX Manager (ITI-44/45 answers)
    application = "CARNET"                 # MSH-3 / MSH-4 of HL7v2 answers
    facility = "CARNET"
    [[pix.authorities]]                    # a domain as HL7v2 senders name it (also a known domain)
    oid = "1.2.250.1.999.1.1"
    namespace = "HOPITAL_A"                # CX.4.1: resolves namespace-only CX.4
    sources = ["HIS_A"]                    # MSH-3 applications allowed to feed it (empty: any)
    default_for = ["HIS_A"]                # CX without CX.4 from these applications is of this domain
    [[pix.consumers]]                      # ITI-10 (mllp) / ITI-46 (soap) update notifications
    protocol = "mllp"                      # mllp | soap
    host = "his.example"                   # mllp: host and port; soap: url = "https://…"
    port = 2576
    domains = ["1.2.250.1.999.1.1"]        # the consumer's domains of interest (empty: all)

    [atna]
    audit = true                           # audit every transaction (ITI-20)
    audit_source_id = "carnet"
    enterprise_site_id = ""
    spool_max_events = 100000              # the durable spool (data_dir/audit-spool.db) is bounded
    sender_process = true                  # deliver the spool from a process of its own (carnet serve)
    spool_synchronous = "auto"             # auto (as durable as the registry) | full (fsync each) | normal
    arr = true                             # the built-in Audit Record Repository (ITI-20 receiver, ITI-81)
    arr_syslog_port = 0                    # syslog over TLS (RFC 5425) for other nodes; 0: off
    arr_udp_port = 0                       # syslog over UDP (RFC 5426); 0: off
    [[atna.destinations]]                  # where events go besides the built-in ARR
    transport = "tls"                      # tls | tcp | udp
    host = "arr.example"
    port = 6514

    [tls]                                  # ITI-19 node authentication, shared by every port
    certificate = "/etc/carnet/node.pem"
    private_key = "/etc/carnet/node.key"
    ca_bundle = "/etc/carnet/ca.pem"       # CAs whose certificates peers must present
    require_client_certificate = true
    http = false                           # HTTPS on http_port
    mllp = false                           # MLLP over TLS
    minimum_version = "TLSv1.2"            # or TLSv1.3 (ITI TF-2a §3.19.6; RFC 8996, RFC 9325)
    verify_server_hostname = true          # outbound: false trusts the CA only (IP-addressed benches)

Environment: CARNET_DATA_DIR, CARNET_HOST, CARNET_HTTP_PORT, CARNET_DATABASE_URL, CARNET_THREADS, CARNET_WORKERS,
CARNET_PUBLIC_URL, CARNET_MAX_QUERY_RESULTS, CARNET_RELAXED_RULES (comma-separated),
CARNET_HOME_COMMUNITY_ID, and for the repository CARNET_REPOSITORY_UNIQUE_ID, CARNET_REGISTRY_URL,
CARNET_BLOB_STORE, CARNET_BLOB_DIR, CARNET_MASTER_KEY_FILE, CARNET_S3_ENDPOINT, CARNET_S3_BUCKET,
CARNET_S3_ACCESS_KEY, CARNET_S3_SECRET_KEY, CARNET_S3_SECURE, CARNET_S3_CA_FILE, CARNET_S3_CERT_CHECK, CARNET_S3_REGION, CARNET_S3_CREATE_BUCKET, CARNET_SEAL_CERTIFICATE, CARNET_SEAL_KEY,
CARNET_SIGNATURE_MODE, CARNET_SIGNATURE_TRUST_ANCHORS; for PIX CARNET_MLLP_PORT, CARNET_MLLP_MAX_MESSAGE_BYTES,
CARNET_PIX_DOMAINS and CARNET_INS_OIDS (comma-separated), CARNET_PIX_DEVICE_ID; for ATNA CARNET_AUDIT, CARNET_AUDIT_SOURCE_ID,
CARNET_ENTERPRISE_SITE_ID, CARNET_SPOOL_MAX_EVENTS, CARNET_AUDIT_SENDER_PROCESS, CARNET_SPOOL_SYNCHRONOUS, CARNET_ARR, CARNET_ARR_SYSLOG_PORT, CARNET_ARR_UDP_PORT; for
TLS CARNET_TLS_CERTIFICATE, CARNET_TLS_PRIVATE_KEY, CARNET_TLS_CA_BUNDLE, CARNET_TLS_REQUIRE_CLIENT_CERTIFICATE,
CARNET_TLS_HTTP, CARNET_TLS_MLLP, CARNET_TLS_MINIMUM_VERSION, CARNET_TLS_VERIFY_SERVER_HOSTNAME. Consumers and audit destinations (lists of tables) come from TOML only.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

import attrs


class SettingsError(Exception):
    pass


@attrs.frozen
class Settings:
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    http_port: int = 8080
    database_url: str | None = None
    threads: int = 4
    workers: int = 1
    public_url: str | None = None
    max_query_results: int = 10000
    relaxed_rules: tuple[str, ...] = ()
    home_community_id: str | None = None
    repository_unique_id: str | None = None
    registry_url: str | None = None
    blob_store: str = "fs"
    blob_dir: Path | None = None
    master_key_file: Path | None = None
    s3_endpoint: str | None = None
    s3_bucket: str = "carnet"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = True
    s3_ca_file: Path | None = None
    s3_cert_check: bool = True
    s3_region: str | None = None
    s3_create_bucket: bool = False
    seal_certificate: Path | None = None
    seal_key: Path | None = None
    signatures: Mapping[str, Any] = attrs.field(factory=dict)
    # PIX Manager (issue 4)
    mllp_port: int = 2575
    mllp_max_message_bytes: int = 1024 * 1024
    pix_domains: tuple[str, ...] = ()
    # Every INS OID by default (a test bench); production sets the first two (DESIGN.md §4).
    ins_oids: tuple[str, ...] = (
        "1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11",
    )
    pix_consumers: tuple[Mapping[str, Any], ...] = ()
    pix_authorities: tuple[Mapping[str, Any], ...] = ()  # {oid, namespace, sources, default_for}
    pix_application: str = "CARNET"  # MSH-3 / MSH-4 of the PIX Manager's HL7v2 answers
    pix_facility: str = "CARNET"
    pix_device_id: str = ""  # the PIX Manager's HL7v3 device id (an OID); default: the one addressed
    # ATNA (issue 5)
    audit: bool = True
    audit_source_id: str = "carnet"
    enterprise_site_id: str = ""
    spool_max_events: int = 100_000
    audit_sender_process: bool = True  # carnet serve delivers the spool from a process of its own
    spool_synchronous: str = "auto"  # auto | full | normal (see config.site.open_spool)
    arr: bool = True
    arr_syslog_port: int = 0
    arr_udp_port: int = 0
    audit_destinations: tuple[Mapping[str, Any], ...] = ()
    # TLS, ITI-19 (issue 5)
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_ca_bundle: Path | None = None
    tls_require_client_certificate: bool = True
    tls_http: bool = False
    tls_mllp: bool = False
    tls_minimum_version: str = "TLSv1.2"
    tls_verify_server_hostname: bool = True
    config_dir: Path | None = None  # where relative paths of the config file are resolved

    @property
    def blob_path(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def registry_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls_http else 'http'}://{self.host}:{self.http_port}"

    @property
    def known_domains(self) -> tuple[str, ...]:
        """The PIX Manager's assigning authorities: `domains` and those of `authorities`."""
        return tuple(dict.fromkeys([*self.pix_domains, *(str(a["oid"]) for a in self.pix_authorities)]))

    def tls(self):
        """The node's TLS identity (config.tls.TlsSettings), or None when no certificate is set."""
        if not self.tls_certificate:
            return None
        from config.tls import TlsSettings

        return TlsSettings.from_mapping({
            "certificate": str(self.tls_certificate),
            "private_key": str(self.tls_private_key or self.tls_certificate),
            "ca_bundle": str(self.tls_ca_bundle) if self.tls_ca_bundle else None,
            "require_client_certificate": self.tls_require_client_certificate,
            "minimum_version": self.tls_minimum_version,
        }, base_dir=self.config_dir)


# name -> (TOML table, converter)
_FIELDS: dict[str, tuple[str, Any]] = {
    "data_dir": ("carnet", Path),
    "host": ("carnet", str),
    "http_port": ("carnet", int),
    "database_url": ("carnet", str),
    "threads": ("carnet", int),
    "workers": ("carnet", int),
    "public_url": ("carnet", str),
    "max_query_results": ("registry", int),
    "relaxed_rules": ("registry", lambda v: tuple(v) if isinstance(v, (list, tuple)) else _split(v)),
    "home_community_id": ("registry", str),
    "repository_unique_id": ("repository", str),
    "registry_url": ("repository", str),
    "blob_store": ("repository", lambda v: _choice(v, ("fs", "s3"))),
    "blob_dir": ("repository", Path),
    "master_key_file": ("repository", Path),
    "s3_endpoint": ("repository", str),
    "s3_bucket": ("repository", str),
    "s3_access_key": ("repository", str),
    "s3_secret_key": ("repository", str),
    "s3_secure": ("repository", lambda v: _bool(v)),
    "s3_ca_file": ("repository", lambda v: Path(v) if str(v) else None),
    "s3_cert_check": ("repository", lambda v: _bool(v)),
    "s3_region": ("repository", str),
    "s3_create_bucket": ("repository", lambda v: _bool(v)),
    "seal_certificate": ("repository", lambda v: Path(v) if str(v) else None),
    "seal_key": ("repository", lambda v: Path(v) if str(v) else None),
    "mllp_port": ("pix", int),
    "mllp_max_message_bytes": ("pix", int),
    "pix_domains": ("pix", lambda v: _strings(v)),
    "ins_oids": ("pix", lambda v: _strings(v)),
    "pix_device_id": ("pix", str),
    "pix_application": ("pix", str),
    "pix_facility": ("pix", str),
    "tls_minimum_version": ("tls", lambda v: _choice(v, ("TLSv1.2", "TLSv1.3"))),
    "tls_verify_server_hostname": ("tls", lambda v: _bool(v)),
    "audit": ("atna", lambda v: _bool(v)),
    "audit_source_id": ("atna", str),
    "enterprise_site_id": ("atna", str),
    "spool_max_events": ("atna", int),
    "audit_sender_process": ("atna", lambda v: _bool(v)),
    "spool_synchronous": ("atna", lambda v: _choice(str(v).lower(), ("auto", "full", "normal"))),
    "arr": ("atna", lambda v: _bool(v)),
    "arr_syslog_port": ("atna", int),
    "arr_udp_port": ("atna", int),
    "tls_certificate": ("tls", Path),
    "tls_private_key": ("tls", Path),
    "tls_ca_bundle": ("tls", Path),
    "tls_require_client_certificate": ("tls", lambda v: _bool(v)),
    "tls_http": ("tls", lambda v: _bool(v)),
    "tls_mllp": ("tls", lambda v: _bool(v)),
}
# TOML keys whose setting name differs (the table already says which part it belongs to)
_TOML_NAMES = {
    "repository_unique_id": "unique_id",
    "pix_domains": "domains",
    "pix_device_id": "device_id",
    "pix_application": "application",
    "pix_facility": "facility",
    "tls_minimum_version": "minimum_version",
    "tls_verify_server_hostname": "verify_server_hostname",
    "tls_certificate": "certificate",
    "tls_private_key": "private_key",
    "tls_ca_bundle": "ca_bundle",
    "tls_require_client_certificate": "require_client_certificate",
    "audit_sender_process": "sender_process",
    "tls_http": "http",
    "tls_mllp": "mllp",
}
# Lists of tables (TOML only): setting name -> (table, key, required keys of each entry)
_TABLE_LISTS = {
    "pix_consumers": ("pix", "consumers", ("protocol",)),
    "pix_authorities": ("pix", "authorities", ("oid",)),
    "audit_destinations": ("atna", "destinations", ("transport",)),
}
_ENV_NAMES = {"repository_unique_id": "CARNET_REPOSITORY_UNIQUE_ID"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    if str(value) not in allowed:
        raise ValueError(f"one of {', '.join(allowed)}")
    return str(value)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return _split(value)


def _split(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def _convert(name: str, value: Any) -> Any:
    try:
        return _FIELDS[name][1](value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: {value!r} is not valid ({exc})") from None


def load_settings(
    config_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get("CARNET_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read {config_file}: {exc}") from None
        for name, (table, _) in _FIELDS.items():
            key = _TOML_NAMES.get(name, name)
            if key in doc.get(table, {}):
                values[name] = _convert(name, doc[table][key])
        for name, (table, key, required) in _TABLE_LISTS.items():
            entries = doc.get(table, {}).get(key)
            if entries is None:
                continue
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise SettingsError(f"[[{table}.{key}]] must be a list of tables")
            for e in entries:
                missing = [k for k in required if k not in e]
                if missing:
                    raise SettingsError(f"[[{table}.{key}]] entry {e!r} lacks {', '.join(missing)}")
            values[name] = tuple(dict(e) for e in entries)
        signatures = doc.get("repository", {}).get("signatures")
        if signatures is not None:
            values["signatures"] = dict(signatures)
        values["config_dir"] = Path(config_file).resolve().parent
    for name in _FIELDS:
        env = environ.get(_ENV_NAMES.get(name, "CARNET_" + name.upper()))
        if env is not None and env != "":
            values[name] = _convert(name, env)
    sig_env = {
        "mode": environ.get("CARNET_SIGNATURE_MODE"),
        "trust_anchors": environ.get("CARNET_SIGNATURE_TRUST_ANCHORS"),
    }
    if any(sig_env.values()):
        values["signatures"] = {**values.get("signatures", {}), **{k: v for k, v in sig_env.items() if v}}
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _convert(name, value)
    return Settings(**values)


def repository_unique_id(settings: Settings) -> str:
    """The repositoryUniqueId: configured, else an OID under 2.25 (ITU-T X.667, from a UUID) made
    on first start and kept in the data dir, so that it never changes for stored documents."""
    if settings.repository_unique_id:
        return settings.repository_unique_id
    path = settings.data_dir / "repository.oid"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        import uuid

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        oid = f"2.25.{uuid.uuid4().int}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(oid + "\n", encoding="ascii")
        try:
            os.link(tmp, path)  # first writer wins when nodes start together on a shared dir
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text(encoding="ascii").strip()
