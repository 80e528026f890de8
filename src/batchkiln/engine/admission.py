"""One admission at a time: the budget check and what it admits (a Job with its
estimates, or a retry child's estimate) happen under a lock, so concurrent submitters
can never all see the same headroom and overshoot a global budget together.

- PostgreSQL (many workers on many machines): a transaction-scoped advisory lock,
  `pg_try_advisory_xact_lock`, on a connection of its own; a waiter gives its
  connection back between tries, so twenty waiters never exhaust the pool the holder
  needs for the admission itself. Committing that transaction releases the lock, and
  so does a dead process (its connection closes).
- SQLite (one machine): `BEGIN IMMEDIATE` cannot be held across the connections the
  admission itself writes on (it would wait for itself), so an exclusive `flock` on a
  file next to the database serialises processes; the kernel drops it when a process
  dies.
- Within a process, an asyncio lock keeps the tasks of one guard in line first.

Without a global budget nothing is shared between Jobs, and no lock is taken.
Written by hand: the lock has to span several of the store's own transactions.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select

from batchkiln.errors import StoreError
from batchkiln.store import Store

ADVISORY_KEY = 0x6B696C6E_0001  # "kiln" + 1: the admission lock's number
WAIT_LIMIT = 120.0  # real seconds; a holder takes milliseconds to seconds
_POLL = 0.005


class AdmissionLock:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._local = asyncio.Lock()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._local:
            if self.store.engine.dialect.name == "postgresql":
                async with self._advisory():
                    yield
            else:
                path = self.store.engine.url.database
                if path in (None, "", ":memory:"):
                    yield
                else:
                    async with _flocked(f"{path}.admission-lock"):
                        yield

    @asynccontextmanager
    async def _advisory(self) -> AsyncIterator[None]:
        deadline = time.monotonic() + WAIT_LIMIT
        delay = _POLL
        while True:
            async with self.store.engine.connect() as conn, conn.begin():
                attempt = select(func.pg_try_advisory_xact_lock(ADVISORY_KEY))
                got = (await conn.execute(attempt)).scalar()
                if got:
                    yield
                    return
            if time.monotonic() > deadline:
                raise StoreError("budget admission: the admission lock was not free for 120 s")
            await asyncio.sleep(delay)  # real time: another process holds the lock
            delay = min(0.1, delay * 2)


@asynccontextmanager
async def _flocked(path: str) -> AsyncIterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + WAIT_LIMIT
        delay = _POLL
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"budget admission: {path} stayed locked for 120 s") from None
                await asyncio.sleep(delay)  # real time: another process holds the lock
                delay = min(0.1, delay * 2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
