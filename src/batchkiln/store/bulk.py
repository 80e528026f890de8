"""Bulk writes by each store's own fast path, inside the caller's transaction.

- PostgreSQL: `COPY ... FROM STDIN` in binary, through asyncpg's
  `copy_records_to_table` on the connection SQLAlchemy holds (the same
  transaction). COPY has no ON CONFLICT, so `copy_or_insert` falls back to a
  plain `INSERT ... ON CONFLICT DO NOTHING` for a chunk that meets rows already
  stored (only after a crash mid-ingest, or two workers on one batch).
- SQLite: one `INSERT ... SELECT ... FROM json_each(?)` per chunk. The small values of
  every row go in one JSON array, and the byte strings are cut by `substr` out of one
  concatenated blob, so a whole chunk is one `sqlite3_step`, which the `sqlite3` module
  runs with the GIL released: the caller can parse the next chunk on the other core
  while SQLite writes this one. (A plain `executemany` takes the GIL back for every
  row, so beside a CPU-bound loop it waits a switch interval, 5 ms, per row: a
  50,000-row insert beside a busy thread took 293 s.) Alone it is no slower than
  `executemany`: 171,131 request rows of ~1.1 KB, 2.33 s against 2.69 s here.

Rows are tuples in the order of `columns`. Written by hand because SQLAlchemy's
executemany paths build a dict and bind each parameter per row, which costs more
than the database's own work for these rows (see bench/ingest.py, bench/intake.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import LargeBinary, Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Row = tuple[Any, ...]


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    ignore_duplicates: bool = False,
    consume: bool = False,
) -> None:
    """Insert `rows` in the caller's transaction (fast path of the dialect). `consume`
    (SQLite): empty the `rows` list once packed, so its values are freed while SQLite
    writes the packed copy (which SQLite copies once more to bind it)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        if ignore_duplicates:
            await _insert_ignoring(conn, table, columns, rows)
        else:
            await _copy(conn, table, columns, rows)
        return
    sql, packed = packed_insert(table, columns, rows, ignore_duplicates=ignore_duplicates)
    if consume and isinstance(rows, list):
        rows.clear()
    await conn.exec_driver_sql(sql, packed)


def packed_insert(
    table: Table, columns: Sequence[str], rows: Sequence[Row], *, ignore_duplicates: bool = False
) -> tuple[str, tuple[bytes, ...]]:
    """SQLite: the one `INSERT ... SELECT ... FROM json_each(?1)` statement for `rows` and
    its parameters (?1 the rows, ?2 their byte strings when the table has any), for a
    caller that runs it on the driver itself (store.ledger folds a lease check in)."""
    sql, blobs = _packed_insert(table, tuple(columns), ignore_duplicates)
    return sql, _pack(rows, blobs)


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


@functools.lru_cache(maxsize=32)
def _packed_insert(
    table: Table, columns: tuple[str, ...], ignore_duplicates: bool
) -> tuple[str, tuple[int, ...]]:
    """The SQLite statement that inserts one packed chunk (see `_pack`), and the
    positions of the byte-string columns."""
    blobs = tuple(
        i for i, name in enumerate(columns) if isinstance(table.c[name].type, LargeBinary)
    )
    values, at = [], 0
    for i in range(len(columns)):
        if i in blobs:  # 1-based offset and length into ?2; NULL offset gives NULL
            values.append(f"substr(?2, j.row->>{at}, j.row->>{at + 1})")
            at += 2
        else:
            values.append(f"j.row->>{at}")
            at += 1
    verb = "INSERT OR IGNORE" if ignore_duplicates else "INSERT"
    # MATERIALIZED: json_each renders an element's text again for every reference to
    # its `value` (one per column); read once into a scratch table, each row's text is
    # parsed once and its other columns hit SQLite's JSON parse cache. 50,000 result
    # rows of ~2 KB: 0.43 s of SQL instead of 0.66-0.86 s (stdlib executemany: 0.49-0.61).
    sql = (
        f"WITH j(row) AS MATERIALIZED (SELECT value FROM json_each(?1))"
        f" {verb} INTO {table.name} ({', '.join(columns)})"
        f" SELECT {', '.join(values)} FROM j"
    )
    return sql, blobs


def _pack(rows: Sequence[Row], blobs: tuple[int, ...]) -> tuple[bytes, ...]:
    """(JSON array of rows, concatenated byte strings): a byte string is replaced by its
    1-based offset and length in the blob, a None one by two nulls. json_each walks the
    array in order, so rows go in in the order given."""
    if not blobs:
        return (orjson.dumps(rows),)
    parts: list[bytes] = []
    offset = 1
    if len(blobs) == 1:  # the common shape (a request body, a result line): no list copy
        at = blobs[0]
        flat: list[tuple[Any, ...]] = []
        for row in rows:
            blob = row[at]
            if blob is None:
                flat.append((*row[:at], None, None, *row[at + 1 :]))
            else:
                flat.append((*row[:at], offset, len(blob), *row[at + 1 :]))
                parts.append(blob)
                offset += len(blob)
        return orjson.dumps(flat), b"".join(parts)
    packed: list[list[Any]] = []
    for row in rows:
        values = list(row)
        for i in reversed(blobs):
            blob = values[i]
            if blob is None:
                values[i : i + 1] = (None, None)
            else:
                values[i : i + 1] = (offset, len(blob))
                parts.append(blob)
                offset += len(blob)
        packed.append(values)
    return orjson.dumps(packed), b"".join(parts)
