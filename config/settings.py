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
    s3_region = ""
    s3_create_bucket = false

    [repository.signatures]                # see repository.signatures.SignaturePolicy.from_mapping
    mode = "off"                           # off | record | reject
    trust_anchors = ["/etc/carnet/ca"]

Environment: CARNET_DATA_DIR, CARNET_HOST, CARNET_HTTP_PORT, CARNET_DATABASE_URL, CARNET_THREADS, CARNET_WORKERS,
CARNET_PUBLIC_URL, CARNET_MAX_QUERY_RESULTS, CARNET_RELAXED_RULES (comma-separated),
CARNET_HOME_COMMUNITY_ID, and for the repository CARNET_REPOSITORY_UNIQUE_ID, CARNET_REGISTRY_URL,
CARNET_BLOB_STORE, CARNET_BLOB_DIR, CARNET_MASTER_KEY_FILE, CARNET_S3_ENDPOINT, CARNET_S3_BUCKET,
CARNET_S3_ACCESS_KEY, CARNET_S3_SECRET_KEY, CARNET_S3_SECURE, CARNET_S3_REGION, CARNET_S3_CREATE_BUCKET,
CARNET_SIGNATURE_MODE, CARNET_SIGNATURE_TRUST_ANCHORS.
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
    s3_region: str | None = None
    s3_create_bucket: bool = False
    signatures: Mapping[str, Any] = attrs.field(factory=dict)
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
        return f"http://{self.host}:{self.http_port}"


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
    "s3_region": ("repository", str),
    "s3_create_bucket": ("repository", lambda v: _bool(v)),
}
# TOML keys of [repository] whose setting name differs
_TOML_NAMES = {"repository_unique_id": "unique_id"}
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
            key = _TOML_NAMES.get(name, name) if table == "repository" else name
            if key in doc.get(table, {}):
                values[name] = _convert(name, doc[table][key])
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
