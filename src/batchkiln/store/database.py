"""Opening a database: URL rules, engine settings per dialect, and migrations.

Every way opening can fail ends as one sentence naming the thing (`open_database`,
`describe_failure`): a URL that is not one or names an unsupported database
(`DatabaseURLError`), a file that is not a database or is corrupt, a read-only file or
folder, a server that cannot be reached ("the database at HOST:PORT"), an unknown
database or user (`StoreError`). Passwords never appear: URLs go through `mask_url`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Insert, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from batchkiln.errors import DatabaseURLError, StoreError

DEFAULT_URL = "sqlite:///.kiln/kiln.db"
MIGRATIONS = Path(__file__).parent / "migrations"
SUPPORTED = (
    "sqlite:///PATH (also sqlite+aiosqlite://) or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB"
    " (also postgres://, postgresql+asyncpg://)"
)
_SQLITE = ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite")
_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+asyncpg")


def mask_url(url: str) -> str:
    """The URL with its password replaced by *** (settings.mask_url, imported late:
    the store must not depend on the settings module)."""
    from batchkiln.settings import mask_url as _mask

    return _mask(url)


def _parse(raw: str) -> URL:
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError):
        raise DatabaseURLError(
            f"the database URL {mask_url(raw)!r} (KILN_DATABASE_URL) is not a URL: use {SUPPORTED}",
            name="KILN_DATABASE_URL",
        ) from None
    if parsed.drivername not in _SQLITE + _POSTGRES:
        raise DatabaseURLError(
            f"the database URL {mask_url(raw)!r} (KILN_DATABASE_URL) names an unsupported"
            f" database {parsed.drivername!r}: use {SUPPORTED}",
            name="KILN_DATABASE_URL",
        )
    return parsed


def database_url(url: str | None = None) -> str:
    """The URL to use (default: a local SQLite file; the App passes KILN_DATABASE_URL).

    Plain `sqlite://` and `postgresql://` URLs get the async drivers we ship.
    """
    raw = url or DEFAULT_URL
    parsed = _parse(raw)
    if parsed.drivername in _SQLITE:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername == "sqlite+aiosqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder {folder} for the SQLite database"
                f" {parsed.database}: {exc.strerror or exc}"
            ) from None
    return parsed.render_as_string(hide_password=False)


async def open_database(
    url: str | None, *, run_migrations: bool = True, **kwargs: Any
) -> AsyncEngine:
    """An engine on the database at `url` (else the default SQLite file), migrated to head;
    any failure is a StoreError (DatabaseURLError for the URL itself) in one sentence."""
    full = database_url(url)
    try:
        engine = create_engine(full, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise DatabaseURLError(
            f"the database URL {mask_url(full)!r} cannot be used ({exc}): use {SUPPORTED}",
            name="KILN_DATABASE_URL",
        ) from None
    if not run_migrations:
        return engine
    try:
        await migrate(engine)
    except BaseException as exc:
        await engine.dispose()
        failure = describe_failure(exc, full)
        if failure is None:
            raise
        raise failure from None
    return engine


def describe_failure(exc: BaseException, url: str) -> StoreError | None:
    """The one-sentence StoreError for a database failure at `url`, or None when `exc`
    is not one (a bug, a cancellation: let it through)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_failure(exc, parsed.database or ":memory:")
    return _server_failure(exc, parsed)


def _sqlite_failure(exc: BaseException, path: str) -> StoreError | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.Error):
        return None
    detail = str(orig)
    name = getattr(orig, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in detail:
        return StoreError(
            f"{path} is not a SQLite database or is corrupt ({detail}): restore it from a"
            " backup, or set KILN_DATABASE_URL to a new file"
        )
    folder = Path(path).resolve().parent
    if "readonly" in detail or "unable to open" in detail:
        if Path(path).is_dir():
            return StoreError(f"the SQLite database {path} is a directory, not a file")
        if not _can_create_in(folder):
            return StoreError(
                f"the folder {folder} holding the SQLite database {path} is read-only (SQLite"
                " writes its -wal and -shm files beside the database): make it writable or"
                " set KILN_DATABASE_URL to a file in a writable folder"
            )
        if Path(path).exists() and not _can_write(Path(path)):
            return StoreError(
                f"the SQLite database {path} is read-only: make it writable or set"
                " KILN_DATABASE_URL to a writable copy"
            )
    if "locked" in detail or "busy" in detail:
        return StoreError(f"the SQLite database {path} is locked by another process ({detail})")
    return StoreError(f"the SQLite database {path}: {detail}")


def _can_create_in(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _can_write(path: Path) -> bool:
    try:
        with path.open("r+b"):
            return True
    except OSError:
        return False


_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EADDRNOTAVAIL,
}


def _network_failure(exc: BaseException) -> bool:
    """A failure to reach a server (not a file's OSError, which names its file)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.filename is None and exc.errno in _NETWORK_ERRNOS


def _server_failure(exc: BaseException, parsed: URL) -> StoreError | None:
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    shown = mask_url(parsed.render_as_string(hide_password=False))
    if isinstance(exc, socket.gaierror):
        return StoreError(
            f"cannot reach the database at {where}: the host name does not resolve"
            f" ({exc.strerror}); check KILN_DATABASE_URL ({shown})"
        )
    if _network_failure(exc):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return StoreError(
            f"cannot reach the database at {where} ({reason}): is PostgreSQL running there?"
            f" (KILN_DATABASE_URL={shown})"
        )
    if not isinstance(exc, DBAPIError):
        return None
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    detail = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
    if code == "3D000":
        return StoreError(
            f"the database {parsed.database!r} does not exist on the server at {where}:"
            f" create it (createdb {parsed.database}) or fix KILN_DATABASE_URL ({shown})"
        )
    if code in ("28000", "28P01"):
        return StoreError(
            f"the database at {where} refused user {parsed.username!r} ({detail}): fix the"
            f" user or password in KILN_DATABASE_URL ({shown})"
        )
    if isinstance(exc.orig, OSError) or "connection" in detail.lower():
        return StoreError(f"lost the connection to the database at {where} ({detail})")
    return StoreError(f"the database at {where}: {detail}")


# The bulk writes use `->>` (3.38) and MATERIALIZED common table expressions (3.35).
SQLITE_NEEDED = (3, 38, 0)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if make_url(url).get_backend_name() == "sqlite" and sqlite3.sqlite_version_info < SQLITE_NEEDED:
        raise StoreError(
            f"SQLite {'.'.join(map(str, SQLITE_NEEDED))} or newer is needed; this Python's"
            f" sqlite3 module has {sqlite3.sqlite_version}: use a newer Python build, or"
            " PostgreSQL (KILN_DATABASE_URL)"
        )
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


_PAGE_SIZE = 16384
_CHECKPOINT_BYTES = 64 << 20  # the WAL is checkpointed when it passes this


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's deferred BEGIN lets two writers both read, then one fails to
    # upgrade its lock without waiting. BEGIN IMMEDIATE takes the write lock up
    # front and honours busy_timeout, so compare-and-set writers queue instead.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # 16 KB pages for a new database (a no-op on one that has tables; it must come
        # before WAL mode, which fixes the page size): request and result rows of
        # ~1-2 KB are written in bulk, and bigger pages cost fewer page headers, WAL
        # frames and checkpoint copies: 200 MB of requests wrote in 1.66 s instead of
        # 2.24 s, and the checkpoint after it took 0.5 s instead of 0.9 s (4 KB pages,
        # SQLite's default). A database made with 4 KB pages keeps them.
        cursor.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Bulk writes (results, request rows): in WAL mode with synchronous=NORMAL
        # each checkpoint syncs the WAL and the database file; checkpointing every
        # 64 MB instead of every 4 MB (the default 1,000 pages) cuts those syncs
        # 16-fold at the same bytes written (bench/ingest.py, bench/intake.py), and
        # journal_size_limit truncates the WAL back after each checkpoint. The page
        # cache stays at its 2 MB default: a larger one only grows the RSS with the
        # size of the batch (the inserts append at the right edge of the keys).
        cursor.execute("PRAGMA page_size")
        page_size = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_BYTES // page_size}")
        cursor.execute("PRAGMA journal_size_limit=67108864")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# Alembic's `op` and `context` are module-level proxies to the migration running now, so
# two migrations at once in one process (two stores opened in two threads, as the CLI
# contract test does) run each other's operations on the wrong connection. One at a
# time per process; the wait is asynchronous, so two opens in one event loop do not
# deadlock either (the first yields to the loop at every statement).
_MIGRATING = threading.Lock()


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic upgrade, inside the async engine)."""

    def _upgrade(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    while not _MIGRATING.acquire(blocking=False):  # noqa: ASYNC110 - a lock across threads
        await asyncio.sleep(0.005)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    finally:
        _MIGRATING.release()


@asynccontextmanager
async def reading(
    engine: AsyncEngine, conn: AsyncConnection | None = None
) -> AsyncIterator[AsyncConnection]:
    """`conn` when the caller reads inside its own transaction, else a new connection.
    On SQLite every transaction takes the write lock (BEGIN IMMEDIATE, above), so a
    read made while the caller holds one must go through the caller's connection."""
    if conn is not None:
        yield conn
        return
    async with engine.connect() as fresh:
        yield fresh


def insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Insert:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()  # type: ignore[no-any-return]
