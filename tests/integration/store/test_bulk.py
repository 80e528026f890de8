"""Bulk writes store exactly the rows given, by each store's own fast path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, Text, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from batchkiln.store.bulk import copy_or_insert, insert_rows

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=True),
    Column("head", LargeBinary, nullable=True),
    Column("score", String(20), nullable=True),
    Column("tail", LargeBinary, nullable=False),
)
COLUMNS = ("id", "name", "head", "score", "tail")
ROWS: list[tuple[Any, ...]] = [
    (1, "plain", b"\x00\x01binary\xff", "a", b'{"json":true}'),
    (2, None, None, None, b""),
    (3, 'quotes " and \\ and \n newline', b"", "x" * 20, b"\n" * 3),
    (4, "déjà vu ☃ 🎉", "☃".encode(), "-1.5", bytes(range(256))),
    (5, "", b"h" * 70_000, "0", b"t"),
]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/bulk.db")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(things).order_by(things.c.id))).all()
    return [tuple(r) for r in rows]


async def test_sqlite_packed_insert_stores_every_value_exactly(engine: AsyncEngine) -> None:
    """Text, NULLs, empty and binary byte strings (two blob columns) come back as given."""
    async with engine.begin() as conn:
        await insert_rows(conn, things, COLUMNS, ROWS)
    assert await _stored(engine) == ROWS


async def test_sqlite_packed_insert_is_one_statement_per_chunk(engine: AsyncEngine) -> None:
    """A chunk is one INSERT ... SELECT (one sqlite3_step, run with the GIL released)."""
    statements: list[str] = []

    def trace(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", trace)
    many = [(i, f"n{i}", None, None, b"x" * i) for i in range(10, 1010)]
    async with engine.begin() as conn:
        await insert_rows(conn, things, COLUMNS, many)
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 1 and "json_each" in inserts[0]
    assert len(await _stored(engine)) == 1000


async def test_values_shared_by_every_row_are_bound_once_and_stored_exactly(
    engine: AsyncEngine,
) -> None:
    """Columns with one value in every row of a chunk (text, NULL) go in as one bound
    parameter each, not one JSON value a row, and come back as given."""
    statements: list[str] = []

    def trace(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", trace)
    same = [(i, "same ☃", None, "s", b"t" * i) for i in range(1, 101)]
    async with engine.begin() as conn:
        await insert_rows(conn, things, COLUMNS, same)
    (insert,) = [s for s in statements if "INSERT" in s]
    assert "SELECT j.row->>0, ?3, substr(?2, j.row->>1, j.row->>2), ?4," in insert
    assert await _stored(engine) == same


async def test_equal_values_of_other_types_are_not_taken_for_one(engine: AsyncEngine) -> None:
    """1, 1.0 and True are equal in Python but stored apart (text column: '1', '1.0',
    '1'), and a one-row chunk (every column shared) stores its row as given."""
    rows = [(1, "n", None, 1, b"x"), (2, "n", None, 1.0, b"x"), (3, "n", None, True, b"x")]
    async with engine.begin() as conn:
        await insert_rows(conn, things, COLUMNS, rows)
        await insert_rows(conn, things, COLUMNS, [(4, "", b"", "0", b"")])
        stored = (await conn.execute(select(things.c.score).order_by(things.c.id))).scalars()
        assert list(stored) == ["1", "1.0", "1", "0"]
    assert (await _stored(engine))[3] == (4, "", b"", "0", b"")


async def test_sqlite_insert_or_ignore_keeps_the_stored_row(engine: AsyncEngine) -> None:
    """copy_or_insert over rows already stored keeps them as they were and adds the rest."""
    await copy_or_insert(engine, things, COLUMNS, ROWS[:2])
    changed = [(1, "changed", None, None, b"new"), *ROWS[2:]]
    await copy_or_insert(engine, things, COLUMNS, changed)
    assert await _stored(engine) == ROWS


async def test_a_table_without_blobs_packs_its_rows_alone(engine: AsyncEngine) -> None:
    """With no byte-string column the statement takes the JSON array only."""
    plain = Table("plain", MetaData(), Column("id", Integer, primary_key=True), Column("v", Text))
    async with engine.begin() as conn:
        await conn.run_sync(plain.metadata.create_all)
        await insert_rows(conn, plain, ("id", "v"), [(1, "one"), (2, None)])
        rows = (await conn.execute(select(plain).order_by(plain.c.id))).all()
    assert [tuple(r) for r in rows] == [(1, "one"), (2, None)]


async def test_a_new_sqlite_store_uses_16_kb_pages_and_checkpoints_every_64_mb(
    tmp_path: Path,
) -> None:
    """New databases get 16 KB pages; one made with 4 KB pages keeps them, and both
    checkpoint the WAL after 64 MB."""
    import sqlite3

    from batchkiln.clock import FakeClock
    from batchkiln.store import Store

    old = tmp_path / "old.db"
    made = sqlite3.connect(old)
    made.execute("CREATE TABLE t (x)")
    made.close()
    for path, page in ((tmp_path / "new.db", 16384), (old, 4096)):
        store = await Store.open(f"sqlite:///{path}", clock=FakeClock())
        async with store.engine.connect() as conn:
            size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
            every = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one()
        await store.close()
        assert (size, size * every) == (page, 64 << 20)


async def test_a_single_blob_column_packs_nulls_and_bytes(engine: AsyncEngine) -> None:
    """The one-blob fast path keeps NULL, empty and binary byte strings apart."""
    one = Table(
        "one", MetaData(), Column("id", Integer, primary_key=True), Column("b", LargeBinary)
    )
    rows = [(1, None), (2, b""), (3, b"\x00\xff"), (4, b"x" * 5000)]
    async with engine.begin() as conn:
        await conn.run_sync(one.metadata.create_all)
        await insert_rows(conn, one, ("id", "b"), rows)
        stored = (await conn.execute(select(one).order_by(one.c.id))).all()
    assert [tuple(r) for r in stored] == rows


async def test_a_sqlite_too_old_for_the_bulk_writes_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python whose SQLite predates 3.38 is refused in one sentence naming both versions."""
    import sqlite3

    from batchkiln.clock import FakeClock
    from batchkiln.errors import StoreError
    from batchkiln.store import Store

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.37.2")
    with pytest.raises(StoreError, match=r"SQLite 3\.38\.0 or newer is needed.* has 3\.37\.2"):
        await Store.open(f"sqlite:///{tmp_path}/old.db", clock=FakeClock())
    assert not (tmp_path / "old.db").exists()


async def test_insert_together_writes_each_table_its_rows_and_raises_the_drivers_error(
    engine: AsyncEngine,
) -> None:
    """Two tables' chunks go in together, each exactly; a refused row raises the driver's
    IntegrityError and the caller's rollback leaves neither table written."""
    import sqlite3

    from batchkiln.store.bulk import insert_together

    extra = Table("extra", MetaData(), Column("id", Integer, primary_key=True), Column("b", Text))
    async with engine.begin() as conn:
        await conn.run_sync(extra.metadata.create_all)
        parts = [(things, COLUMNS, list(ROWS)), (extra, ("id", "b"), [(1, "x"), (2, None)])]
        await insert_together(conn, parts, consume=True)
        assert [rows for _, _, rows in parts] == [[], []]
        assert (await conn.execute(select(extra).order_by(extra.c.id))).all() == [
            (1, "x"),
            (2, None),
        ]
    assert await _stored(engine) == ROWS
    async with engine.connect() as conn:
        await conn.begin()
        again = [(things, COLUMNS, [(9, "n", None, None, b"")]), (extra, ("id", "b"), [(1, "y")])]
        with pytest.raises(sqlite3.IntegrityError, match=r"UNIQUE constraint failed: extra\.id"):
            await insert_together(conn, again)
        await conn.rollback()
    assert await _stored(engine) == ROWS
