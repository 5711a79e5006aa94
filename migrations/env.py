"""Alembic environment for sigaudit.

Driven programmatically by ``scanner.store.migrate`` which hands over an open connection in
``config.attributes["connection"]`` (inside a transaction, holding the migration lock). For developers,
``alembic -c migrations/alembic.ini ...`` also works: the URL then comes from ``$SIGAUDIT_DB`` or the
default data directory.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from scanner.store.schema import UTCDateTime, metadata

config = context.config


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Migrations use plain SQLAlchemy types, never the store's own classes."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=_render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=False,
    )


def run_migrations_offline() -> None:
    from scanner.store.engine import default_db_url, parse_url

    context.configure(
        url=parse_url(config.get_main_option("sqlalchemy.url") or default_db_url()),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from scanner.store.engine import default_db_url
    from scanner.store.migrate import _migration_connection

    url = config.get_main_option("sqlalchemy.url") or default_db_url()
    with _migration_connection(url) as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
