"""Alembic environment: migrations always run on a connection handed in by
`batchkiln.store.database.migrate`, never on one Alembic opens itself."""

from __future__ import annotations

from alembic import context

from batchkiln.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through batchkiln.store.database.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
