"""Waking idle workers: PostgreSQL LISTEN/NOTIFY, and the SQLite one-worker lock.

`notify_due` runs `pg_notify` inside the transaction that made a batch due (a
webhook, a new submission, a cancel, a retry), so the notification is delivered
at commit, never before the row is visible. `DueListener` holds one dedicated
asyncpg connection (not a pooled SQLAlchemy one: a pooled connection is handed
to other queries, and LISTEN belongs to its session) and calls back on every
notification. If that connection drops, the worker falls back to polling the
due queue and the listener reconnects on the next idle turn.

On SQLite only one worker process may step a database: `SqliteWorkerLock` takes
an exclusive `fcntl` lock on `<database>.worker.lock` (stdlib, POSIX; released
by the OS when the process dies, so a SIGKILLed worker never leaves it stale).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from batchkiln.errors import ConfigError

CHANNEL = "kiln_due"
log = logging.getLogger(__name__)


async def notify_due(conn: AsyncConnection, payload: str = "") -> None:
    """Wake idle workers once this transaction commits (PostgreSQL; a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {
                "channel": CHANNEL,
                "payload": payload[:200],
            },
        )


def asyncpg_dsn(url: str) -> str:
    """The plain libpq URL asyncpg wants, from a SQLAlchemy one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class DueListener:
    """LISTEN kiln_due on a dedicated connection; `on_due` is called for each NOTIFY."""

    def __init__(
        self, url: str, on_due: Callable[[], None], *, server_settings: dict[str, str] | None = None
    ) -> None:
        self.dsn = asyncpg_dsn(url)
        self.on_due = on_due
        self.server_settings = server_settings
        self._conn: Any = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> bool:
        """(Re)connect and LISTEN; False (and polling stays the fallback) on failure."""
        if self.connected:
            return True
        import asyncpg

        try:
            self._conn = await asyncpg.connect(
                self.dsn, timeout=5, server_settings=self.server_settings
            )
            await self._conn.add_listener(CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN %s failed (%s); polling the due queue instead", CHANNEL, exc)
            self._conn = None
            return False
        return True

    def _notified(self, *_args: object) -> None:
        self.on_due()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class SqliteWorkerLock:
    """One worker process per SQLite database: an exclusive lock file beside it."""

    def __init__(self, database: str) -> None:
        self.path = Path(f"{database}.worker.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"another kiln worker ({holder}) is already running on {self.path.name[:-12]};"
                " SQLite serves one worker process: stop it, or use PostgreSQL"
                " (KILN_DATABASE_URL=postgresql://...) to run several",
                name="KILN_DATABASE_URL",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def sqlite_database(url: str) -> str | None:
    """The file of a SQLite URL (None: not SQLite, or in memory)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    if parsed.database in (None, "", ":memory:"):
        return None
    return str(parsed.database)


__all__ = [
    "CHANNEL",
    "DueListener",
    "SqliteWorkerLock",
    "asyncpg_dsn",
    "notify_due",
    "sqlite_database",
]
