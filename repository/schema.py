"""The repository's tables live in `registry.schema` (one Carnet schema, one Alembic history:
revision 0002 adds `dossier_key`); this module names them for the repository's code."""

from __future__ import annotations

from sqlalchemy import Engine

from registry.schema import dossier_key, metadata

KEY_ID = 32  # UUID, hex


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


__all__ = ["KEY_ID", "create_schema", "dossier_key", "metadata"]
