"""Migrations produce exactly the tables the code defines, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from batchkiln.store import Store
from batchkiln.store.tables import metadata


async def test_migrations_from_empty_match_the_table_definitions(store: Store) -> None:
    """Running every migration on an empty database leaves no diff against the tables."""

    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection)  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_every_table_exists_after_migrating(store: Store) -> None:
    """All the tables of the schema are created, and Alembic records its head."""
    async with store.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert set(metadata.tables) <= names
    assert "alembic_version" in names
