"""Fixtures shared by every suite: a fake clock and a store on each database.

PostgreSQL tests skip with a reason on a laptop without a server, and fail
instead when CI=true, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from batchkiln.clock import FakeClock
from batchkiln.store import Store

POSTGRES_URL = os.environ.get(
    "KILN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


async def _postgres_store(clock: FakeClock) -> tuple[Store, str]:
    import asyncpg

    schema = f"kiln_test_{uuid.uuid4().hex[:12]}"
    raw = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(raw, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL not reachable at {raw}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: PostgreSQL tests must run, not skip)")
        pytest.skip(message)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    store = await Store.open(
        POSTGRES_URL,
        clock=clock,
        connect_args={"server_settings": {"search_path": schema}},
    )
    return store, schema


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: object
) -> AsyncIterator[Store]:
    """A migrated, empty store on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        s = await Store.open(f"sqlite:///{tmp_path}/kiln.db", clock=clock)
        yield s
        await s.close()
    else:
        s, schema = await _postgres_store(clock)
        yield s
        await s.close()
        await _drop_schema(schema)


@pytest.fixture
async def sqlite_store(clock: FakeClock, tmp_path: object) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite:///{tmp_path}/kiln.db", clock=clock)
    yield s
    await s.close()
