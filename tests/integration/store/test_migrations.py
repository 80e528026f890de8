"""Migrations produce exactly the tables the code defines, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

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


async def test_vendor_lines_are_compressed_with_lz4_on_postgresql(store: Store) -> None:
    """PostgreSQL stores result lines and request bodies with lz4, and 0010 downgrades."""
    if store.dialect != "postgresql":
        return  # no per-column compression on SQLite: 0010 is a no-op there
    from alembic import command

    from batchkiln.store.database import alembic_config, migrate

    query = text(
        "SELECT attrelid::regclass::text || '.' || attname, attcompression::text FROM pg_attribute"
        " WHERE attrelid IN (to_regclass('results'), to_regclass('requests'),"
        " to_regclass('request_bodies')) AND attname IN ('raw', 'body') AND NOT attisdropped"
    )
    async with store.engine.connect() as conn:
        assert dict((await conn.execute(query)).all()) == {
            "results.raw": "l",
            "request_bodies.body": "l",
        }
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0009"))
    async with store.engine.connect() as conn:
        assert set(dict((await conn.execute(query)).all()).values()) == {""}
    async with store.engine.connect() as conn:
        assert set(dict((await conn.execute(query)).all())) == {"results.raw", "requests.body"}
    await migrate(store.engine)
    async with store.engine.connect() as conn:
        assert set(dict((await conn.execute(query)).all()).values()) == {"l"}


async def test_0011_drops_the_bulk_tables_row_foreign_keys_and_downgrades(store: Store) -> None:
    """requests and results lose their per-row foreign keys and keep their rows; the
    downgrade brings the keys back, on both databases."""
    from alembic import command

    from batchkiln.store.database import alembic_config, migrate

    from .helpers import make_job

    job = await make_job(store, n=5)

    def keys(c: Any) -> set[str]:
        found = inspect(c)
        return {
            f"{table}.{fk['constrained_columns'][0]}"
            for table in ("requests", "results")
            for fk in found.get_foreign_keys(table)
        }

    async with store.engine.connect() as conn:
        assert await conn.run_sync(keys) == set()
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0010"))
    async with store.engine.connect() as conn:
        assert await conn.run_sync(keys) == {
            "requests.job_id",
            "requests.batch_id",
            "results.batch_id",
        }
    await migrate(store.engine)
    async with store.engine.connect() as conn:
        assert await conn.run_sync(keys) == set()
    assert (await store.ledger.job_counts(job.id)) == {"pending": 5}


async def test_0012_moves_request_bodies_to_their_own_table_and_back(store: Store) -> None:
    """Bodies move out of `requests` into `request_bodies` with every byte, and the
    downgrade puts each back on its own row, on both databases."""
    from alembic import command

    from batchkiln.store.database import alembic_config, migrate

    from .helpers import make_job

    job = await make_job(store, n=5)
    (batch,) = await store.batches.for_job(job.id)
    bodies = await store.ledger.requests_of(batch.id)
    assert len(bodies) == 5 and len({body for _, body in bodies}) == 5

    def columns(c: Any) -> list[str]:
        return [col["name"] for col in inspect(c).get_columns("requests")]

    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0011"))
    async with store.engine.connect() as conn:
        assert "body" in await conn.run_sync(columns)
        assert not await conn.run_sync(lambda c: inspect(c).has_table("request_bodies"))
        back = (await conn.execute(text("SELECT seq, body FROM requests ORDER BY seq"))).all()
    assert [tuple(r) for r in back] == bodies
    await migrate(store.engine)
    async with store.engine.connect() as conn:
        assert "body" not in await conn.run_sync(columns)
    assert await store.ledger.requests_of(batch.id) == bodies
    assert (await store.ledger.job_counts(job.id)) == {"pending": 5}


async def test_0013_adds_job_drafts_and_its_downgrade_drops_open_drafts_rows(
    store: Store,
) -> None:
    """`job_drafts` comes and goes; a downgrade deletes the rows of drafts still open
    (they have no job) and keeps every published Job's."""
    from alembic import command

    from batchkiln.store.database import alembic_config, migrate

    from .helpers import make_job

    job = await make_job(store, n=3)
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO job_drafts (job_id, worker, started_at, touched_at)"
                " VALUES ('job_open', NULL, 1, 1)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO requests (job_id, seq, custom_id, line, batch_id, attempts)"
                " VALUES ('job_open', 0, 'a', 1, 'bat_x', 0)"
            )
        )
        await conn.execute(
            text("INSERT INTO request_bodies (job_id, seq, body) VALUES ('job_open', 0, :b)"),
            {"b": b"{}"},
        )
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0012"))
    async with store.engine.connect() as conn:
        assert not await conn.run_sync(lambda c: inspect(c).has_table("job_drafts"))
        left = (await conn.execute(text("SELECT DISTINCT job_id FROM requests"))).scalars().all()
        bodies = (await conn.execute(text("SELECT count(*) FROM request_bodies"))).scalar_one()
    assert left == [job.id] and bodies == 3
    await migrate(store.engine)
    assert await store.jobs.sweep_drafts() == []
    assert (await store.ledger.job_counts(job.id)) == {"pending": 3}


def test_stores_opened_at_once_in_threads_all_migrate(tmp_path: Path) -> None:
    """Alembic's proxies are process-wide: four stores opened in four threads at once
    each end at head (they once ran each other's operations and failed or hung)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    def open_one(i: int) -> str:
        async def go() -> str:
            store = await Store.open(f"sqlite:///{tmp_path}/k{i}.db")
            try:
                async with store.engine.connect() as conn:
                    return str((await conn.execute(text("SELECT * FROM alembic_version"))).scalar())
            finally:
                await store.close()

        return asyncio.run(go())

    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(open_one, range(4)))
    assert len(set(versions)) == 1 and versions[0] is not None
