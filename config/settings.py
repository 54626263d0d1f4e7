"""Carnet's settings: embedded defaults < TOML file < CARNET_* environment < command-line flags.

TOML layout (every key optional)::

    [carnet]
    data_dir = "var"
    host = "127.0.0.1"
    http_port = 8080
    database_url = "postgresql://carnet@db/carnet"   # default: SQLite in data_dir
    threads = 4
    public_url = "https://xds.example.org"            # base URL written in the served WSDLs

    [registry]
    max_query_results = 10000
    relaxed_rules = ["DE.languageCode"]               # validation rules downgraded to warnings
    home_community_id = "urn:oid:1.2.3"

Environment: CARNET_DATA_DIR, CARNET_HOST, CARNET_HTTP_PORT, CARNET_DATABASE_URL, CARNET_THREADS,
CARNET_PUBLIC_URL, CARNET_MAX_QUERY_RESULTS, CARNET_RELAXED_RULES (comma-separated),
CARNET_HOME_COMMUNITY_ID.
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
    public_url: str | None = None
    max_query_results: int = 10000
    relaxed_rules: tuple[str, ...] = ()
    home_community_id: str | None = None

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
    "public_url": ("carnet", str),
    "max_query_results": ("registry", int),
    "relaxed_rules": ("registry", lambda v: tuple(v) if isinstance(v, (list, tuple)) else _split(v)),
    "home_community_id": ("registry", str),
}


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
            if name in doc.get(table, {}):
                values[name] = _convert(name, doc[table][name])
    for name in _FIELDS:
        env = environ.get("CARNET_" + name.upper())
        if env is not None and env != "":
            values[name] = _convert(name, env)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _convert(name, value)
    return Settings(**values)
