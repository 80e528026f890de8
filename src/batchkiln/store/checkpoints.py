"""SQLite: the WAL checkpointed in a thread of its own while bulk writes go on.

In WAL mode a commit appends its pages to the -wal file, and a checkpoint copies them
into the database file and, with synchronous=NORMAL, syncs both files. SQLite's own
autocheckpoint runs inside the commit that crosses its threshold (64 MB here, see
store.database), on the writer's thread, and the writer waits for it: the one that fell
on the last chunk of a 25,000-line ingest took 0.13 s, about 0.1 s of it in fsync, with
nothing left to overlap it. SQLite's documentation allows for running "checkpoints
during idle moments or in a separate thread or process" (https://www.sqlite.org/wal.html,
"Automatic Checkpoint"), and the `sqlite3` module has no WAL hook to start one, so the
bulk writer (a chunk of results) reports the bytes it committed (`wrote`) and, past
`every` bytes since the last start, a PASSIVE checkpoint runs here on a connection of
its own. PASSIVE copies what was committed when it starts and takes no lock a writer
needs; once it has caught up, the next write transaction starts the WAL again from its
top.

The writer's autocheckpoint stays, as the safety net for the writes nobody reports and
for a checkpoint that falls behind. Two checkpoints never wait for each other: the second
to ask gets SQLITE_BUSY at once and skips (PASSIVE never calls the busy handler). A
checkpoint that fails is logged and changes nothing else: the WAL keeps every commit
until one succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

# Bytes committed between two checkpoints: about one chunk of results (~4 MB). Ingest
# on SQLite, median of interleaved runs (bench/ingest.py's store and file): 25,000 lines
# 0.56 s with no background checkpoint, 0.50 s every 4 MB, 0.51 s every 8 MB; 50,000
# lines 1.24 s and 1.01 s; 100,000 lines 2.07 s and 1.95 s.
EVERY = 4 << 20


class WalCheckpointer:
    """Background PASSIVE checkpoints of one SQLite database file."""

    def __init__(self, path: str, *, every: int = EVERY) -> None:
        self.path = path
        self.every = every
        self.runs = 0  # checkpoints made
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, copied frames)
        self._pending = 0  # bytes reported since the last checkpoint started
        self._running = False
        self._closed = False
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._done: Future[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kiln-wal-checkpoint")

    @classmethod
    def for_url(cls, url: URL) -> WalCheckpointer | None:
        """One for a SQLite file (None for PostgreSQL or an in-memory database)."""
        database = url.database
        if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return None
        if database.startswith("file:") or url.query.get("mode") == "memory":
            return None  # a URI filename: leave it to SQLite's own checkpoints
        return cls(str(Path(database).resolve()))  # as opened, whatever the cwd later

    def wrote(self, nbytes: int) -> None:
        """`nbytes` were committed; start a checkpoint if `every` have been since the
        last one started and none is running (a running one takes another turn)."""
        with self._lock:  # held while submitting: `aclose` cannot slip in between
            self._pending += nbytes
            if self._closed or self._running or self._pending < self.every:
                return
            self._running = True
            self._pending = 0
            self._done = self._thread.submit(self._drain)

    async def settled(self) -> None:
        """Wait until no checkpoint is running."""
        done = self._done
        if done is not None:
            await asyncio.wrap_future(done)

    async def aclose(self) -> None:
        """Wait for a running checkpoint, then close its connection; later reports are
        ignored."""
        with self._lock:
            self._closed = True
        await self.settled()
        await asyncio.to_thread(self._thread.shutdown)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drain(self) -> None:
        while True:
            self._checkpoint()
            with self._lock:
                if self._closed or self._pending < self.every:
                    self._running = False
                    return
                self._pending = 0

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                # mode=rw: never create a database file that is not there any more
                uri = f"{Path(self.path).absolute().as_uri()}?mode=rw"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
                self._conn.execute("PRAGMA synchronous=NORMAL")  # as the writers' (database)
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("background WAL checkpoint of %s failed: %s", self.path, exc)
            return
        self.last = (int(row[0]), int(row[1]), int(row[2]))
        self.runs += 1
