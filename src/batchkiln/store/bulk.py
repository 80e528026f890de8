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

import asyncio
import functools
import operator
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


async def insert_together(
    conn: AsyncConnection,
    parts: Sequence[tuple[Table, Sequence[str], list[Row]]],
    *,
    consume: bool = False,
) -> None:
    """Several tables' rows in the caller's transaction, in the order given (a table's
    rows after the one before it). On SQLite every part is packed first and all are
    handed to the driver's thread at once, so it writes them back to back: one chunk of
    a request file (its ledger rows and its bodies) written as two calls, one after the
    other, took 18 % longer (50 MB of requests: 0.66-0.76 s against 0.52-0.60 s), since
    the second was packed only once the first had come back, and every return to the
    event loop costs the driver's thread a wait for the GIL. Errors are the driver's
    own (sqlite3's, asyncpg's): on SQLite the first one is raised once every part has
    run, on PostgreSQL the parts after a failed one are not run; either way the caller
    rolls its transaction back."""
    if conn.dialect.name == "postgresql":  # one COPY at a time on a connection
        for table, columns, rows in parts:
            await insert_rows(conn, table, columns, rows, consume=consume)
        return
    statements = []
    for table, columns, rows in parts:
        if rows:
            statements.append(packed_insert(table, columns, rows))
            if consume:
                rows.clear()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # aiosqlite: its thread runs calls in order
    done = await asyncio.gather(
        *(driver.execute(sql, params) for sql, params in statements), return_exceptions=True
    )
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome


def packed_insert(
    table: Table, columns: Sequence[str], rows: Sequence[Row], *, ignore_duplicates: bool = False
) -> tuple[str, tuple[Any, ...]]:
    """SQLite: the one `INSERT ... SELECT ... FROM json_each(?1)` statement for `rows` and
    its parameters (?1 the rows, ?2 their byte strings when the table has any, then one
    per fixed column), for a caller that runs it on the driver itself (store.ledger folds
    a lease check in, with parameters numbered after these)."""
    names = tuple(columns)
    blobs = _blob_columns(table, names)
    fixed = _fixed_columns(rows, [i for i in range(len(names)) if i not in blobs])
    sql = _packed_sql(table, names, blobs, fixed, ignore_duplicates)
    first = rows[0]
    return sql, (*_pack(rows, blobs, fixed), *(first[i] for i in fixed))


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
def _blob_columns(table: Table, columns: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(i for i, name in enumerate(columns) if isinstance(table.c[name].type, LargeBinary))


_FIXABLE = (str, int, type(None))


def _fixed_columns(rows: Sequence[Row], candidates: list[int]) -> tuple[int, ...]:
    """The columns that hold one value in every row of `rows` (the same str, int or
    None, type and all: 1 == 1.0 == True): bound once as a parameter instead of packed
    in every row. A chunk of results usually has ~9 such columns of 14 (its batch, job,
    outcome, no error, ...), and each packed value costs SQLite a JSON lookup per row:
    50,000 rows of ~2 KB took 0.31-0.36 s of SQL with them bound, 0.39-0.43 s packed.
    Checking costs ~0.3 ms a 2,000-row chunk (a C-level count per candidate)."""
    first, last = rows[0], rows[-1]
    fixed = []
    for i in candidates:
        value = first[i]
        kind = type(value)
        if kind not in _FIXABLE or type(last[i]) is not kind or last[i] != value:
            continue
        column = [row[i] for row in rows]
        if column.count(value) != len(column):
            continue
        if kind is int and not all(type(v) is int for v in column):
            continue  # an equal bool or float: keep each row's own
        fixed.append(i)
    return tuple(fixed)


@functools.lru_cache(maxsize=64)
def _packed_sql(
    table: Table,
    columns: tuple[str, ...],
    blobs: tuple[int, ...],
    fixed: tuple[int, ...],
    ignore_duplicates: bool,
) -> str:
    """The SQLite statement that inserts one packed chunk (see `_pack`)."""
    varying = [i for i in range(len(columns)) if i not in blobs and i not in fixed]
    number = 3 if blobs else 2  # the first fixed column's parameter
    values = []
    for i in range(len(columns)):
        if i in fixed:
            values.append(f"?{number + fixed.index(i)}")
        elif i in blobs:  # 1-based offset and length into ?2; NULL offset gives NULL
            at = len(varying) + 2 * blobs.index(i)
            values.append(f"substr(?2, j.row->>{at}, j.row->>{at + 1})")
        else:
            values.append(f"j.row->>{varying.index(i)}")
    verb = "INSERT OR IGNORE" if ignore_duplicates else "INSERT"
    # MATERIALIZED: json_each renders an element's text again for every reference to
    # its `value` (one per column); read once into a scratch table, each row's text is
    # parsed once and its other columns hit SQLite's JSON parse cache. 50,000 result
    # rows of ~2 KB: 0.43 s of SQL instead of 0.66-0.86 s (stdlib executemany: 0.49-0.61).
    # The statement starts with INSERT (the WITH belongs to its SELECT): the sqlite3
    # module opens its implicit transaction (legacy isolation levels) only before a
    # statement it sees start with INSERT, UPDATE, DELETE or REPLACE.
    return (
        f"{verb} INTO {table.name} ({', '.join(columns)})"
        f" WITH j(row) AS MATERIALIZED (SELECT value FROM json_each(?1))"
        f" SELECT {', '.join(values)} FROM j"
    )


def _pack(rows: Sequence[Row], blobs: tuple[int, ...], fixed: tuple[int, ...]) -> tuple[bytes, ...]:
    """(JSON array of rows, concatenated byte strings): each row is its varying values
    (not the blobs, not the `fixed` columns) then a 1-based offset and length in the blob
    for each byte string (two nulls for a None one). json_each walks the array in order,
    so rows go in in the order given."""
    varying = [i for i in range(len(rows[0])) if i not in blobs and i not in fixed]
    take = _getter(varying)
    if not blobs:
        return (orjson.dumps([take(row) for row in rows]),)
    parts: list[bytes] = []
    offset = 1
    flat: list[tuple[Any, ...]] = []
    if len(blobs) == 1:  # the common shape (a request body, a result line)
        at = blobs[0]
        for row in rows:
            blob = row[at]
            if blob is None:
                flat.append((*take(row), None, None))
            else:
                flat.append((*take(row), offset, len(blob)))
                parts.append(blob)
                offset += len(blob)
        return orjson.dumps(flat), _blob(parts)
    for row in rows:
        spans: list[int | None] = []
        for i in blobs:
            blob = row[i]
            if blob is None:
                spans += (None, None)
            else:
                spans += (offset, len(blob))
                parts.append(blob)
                offset += len(blob)
        flat.append((*take(row), *spans))
    return orjson.dumps(flat), _blob(parts)


def _blob(parts: list[bytes]) -> bytes:
    """The byte strings in one blob; never an empty one, whose substr SQLite makes NULL
    (it has no bytes to point at), so a chunk of empty byte strings stays empty ones."""
    return b"".join(parts) or b"\0"


def _getter(positions: list[int]) -> Callable[[Row], tuple[Any, ...]]:
    """A row's values at `positions`, as a tuple (itemgetter gives a bare value for one)."""
    if not positions:
        return lambda row: ()
    if len(positions) == 1:
        at = positions[0]
        return lambda row: (row[at],)
    return operator.itemgetter(*positions)
