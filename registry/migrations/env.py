"""Alembic environment, configured programmatically by `registry.migrate`.

`config.attributes["connection"]` (an open SQLAlchemy Connection) is used when given; otherwise
an engine is made from `sqlalchemy.url` (and `config.attributes["search_path"]` for PostgreSQL).
"""

from __future__ import annotations

from alembic import context

from registry.db import make_engine
from registry.schema import metadata

config = context.config
target_metadata = metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = make_engine(
        config.get_main_option("sqlalchemy.url"),
        pool_size=1,
        pg_search_path=config.attributes.get("search_path"),
    )
    try:
        with engine.connect() as conn:
            _configure(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
