"""Bulk writes by each store's own fast path, inside the caller's transaction.

- PostgreSQL: `COPY ... FROM STDIN` in binary, through asyncpg's
  `copy_records_to_table` on the connection SQLAlchemy holds (the same
  transaction). COPY has no ON CONFLICT, so `copy_or_insert` falls back to a
  plain `INSERT ... ON CONFLICT DO NOTHING` for a chunk that meets rows already
  stored (only after a crash mid-ingest, or two workers on one batch).
- SQLite: one prepared `executemany` of a plain INSERT per chunk, through the
  driver (`exec_driver_sql`), so SQLAlchemy compiles nothing per row. (Tried and
  measured slower: one `INSERT ... SELECT ... FROM json_each(?)` per chunk, the
  small values as one JSON array and the blobs cut out of one concatenated blob by
  `substr`, which would run GIL-free in one `sqlite3_step`: 1.11 s against 0.87 s for
  50,000 result rows alone, and no overlap with parsing gained in the ingest.)

Rows are tuples in the order of `columns`. Written by hand because SQLAlchemy's
executemany paths build a dict and bind each parameter per row, which costs more
than the database's own work for these rows (see bench/ingest.py, bench/intake.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Row = tuple[Any, ...]


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    ignore_duplicates: bool = False,
) -> None:
    """Insert `rows` in the caller's transaction (fast path of the dialect)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        if ignore_duplicates:
            await _insert_ignoring(conn, table, columns, rows)
        else:
            await _copy(conn, table, columns, rows)
        return
    verb = "INSERT OR IGNORE" if ignore_duplicates else "INSERT"
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    await conn.exec_driver_sql(f"{verb} INTO {table.name} ({names}) VALUES ({marks})", list(rows))


async def copy_or_insert(
    engine: AsyncEngine,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    guard: Callable[[AsyncConnection], Awaitable[None]] | None = None,
) -> None:
    """One transaction: `rows` in, a row already stored (same primary key) kept as it
    was. PostgreSQL tries COPY first and redoes the chunk with ON CONFLICT DO NOTHING
    only if COPY met a stored row. `guard` runs first in the transaction (a lease check
    that raises aborts the write)."""
    if not rows:
        return
    if engine.dialect.name != "postgresql":
        async with engine.begin() as conn:
            if guard is not None:
                await guard(conn)
            await insert_rows(conn, table, columns, rows, ignore_duplicates=True)
        return
    import asyncpg

    try:
        async with engine.begin() as conn:
            if guard is not None:
                await guard(conn)
            await _copy(conn, table, columns, rows)
    except asyncpg.UniqueViolationError:
        async with engine.begin() as conn:
            if guard is not None:
                await guard(conn)
            await _insert_ignoring(conn, table, columns, rows)


async def _copy(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    # SQLAlchemy's asyncpg adapter opens its transaction at the first statement;
    # one cheap statement first puts the COPY inside it (not in autocommit).
    await conn.execute(text("SELECT 1"))
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))


async def _insert_ignoring(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    names = ", ".join(columns)
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await conn.execute(text("SELECT 1"))
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.executemany(
        f"INSERT INTO {table.name} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows
    )
