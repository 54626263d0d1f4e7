"""Schema migrations (Alembic), configured in code: `carnet db upgrade` calls `upgrade(url)`.

No alembic.ini is needed: the script location is the `registry/migrations` package. A database
made by `registry.db.create_schema` (tests, first start before Alembic) has the tables but no
`alembic_version`; `upgrade` then stamps it at the baseline revision 0001 before upgrading, so it
is idempotent on every database Carnet can have made.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from registry.db import make_engine
from registry.schema import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"


def alembic_config(url: str | None = None, *, search_path: str | None = None) -> Config:
    """An Alembic Config for Carnet's migrations (`url` optional for offline/script use)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        # ConfigParser interpolation: '%' in a URL (encoded password) must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["search_path"] = search_path
    return cfg


def current_revision(url: str, search_path: str | None = None) -> str | None:
    """The revision the database is at (None: not under Alembic)."""
    engine = make_engine(url, pool_size=1, pg_search_path=search_path)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, search_path: str | None = None, revision: str = "head") -> None:
    """Bring the registry schema at `url` to `revision` (idempotent)."""
    engine = make_engine(url, pool_size=1, pg_search_path=search_path)
    try:
        with engine.connect() as conn:
            cfg = alembic_config(url, search_path=search_path)
            cfg.attributes["connection"] = conn
            names = set(inspect(conn).get_table_names())
            if "alembic_version" not in names and "patient" in names:
                # Tables made by metadata.create_all: the current schema if every table is
                # there, else the baseline (made before later revisions existed).
                complete = set(metadata.tables) <= names
                command.stamp(cfg, "head" if complete else BASELINE)
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


__all__ = ["BASELINE", "MIGRATIONS", "alembic_config", "current_revision", "upgrade"]
