"""Alembic migrations of the registry schema (`registry/schema.py` is their target).

Run them with `registry.migrate.upgrade(url)` (the CLI's `carnet db upgrade`); no alembic.ini is
needed. New revision: `alembic -c <(python -m registry.migrate ini) revision -m "…"`, or write the
file by hand in `versions/` following 0001.
"""
