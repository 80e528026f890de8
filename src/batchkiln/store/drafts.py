"""A Job written while its request file is read: its rows committed as they come, the
Job published whole at the end.

`Kiln.submit` reads a request file once: each request is stored as soon as it is
validated, so the Job's key (which may derive from the content fingerprint), its
batches' keys and sizes, and its estimate are known only at the end. A draft

1. registers itself: a mark in `job_drafts` (store/unpublished.py), committed;
2. commits the request rows and their bodies (a table of their own) a chunk at a time,
   by the store's bulk path, under the Job's id and the batch id it chose for each shard.
   No job or batch row has those ids yet, and every reader of `requests` and
   `request_bodies` goes through a job or a batch, so nothing sees them;
3. `finish`es in one transaction, with the reads its caller made for the key and the
   budget (`connection`): claims its mark (gone: the draft was swept, so nothing is
   published), then inserts the job, its batches, their keys, the events and the
   estimate. The commit publishes the Job whole.

Leaving a draft without `finish` (a bad line, a custom_id twice, a key already taken, a
refused budget, any error) deletes its rows. A crash or a kill leaves them, with a mark
nobody touches any more, for the sweep (store/unpublished.py), at the start of every
draft and in the worker's housekeeping.

Why not one transaction, as before migration 0013: SQLite checkpoints only committed
pages, so the whole file's WAL (~250 MB for 200 MB of requests) was synced and copied
after everything else, at the commit, and the one write lock was held for the whole
read, stalling every other writer of the file. Committed as they come, the chunks are
checkpointed in the background (store/checkpoints.py) while the file is still read.

One chunk of rows is written while the next is read, on both stores: PostgreSQL's
COPY runs in the server's process, SQLite's packed INSERT (store/bulk.py) in one
`sqlite3_step` with the GIL released. The loop gives the write a turn every few rows,
since a task only runs when the loop yields, and holds at most two chunks.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.errors import StoreError
from batchkiln.lifecycle import State
from batchkiln.store.audit import append_event
from batchkiln.store.bulk import insert_together
from batchkiln.store.checkpoints import WalCheckpointer
from batchkiln.store.costs import NewEstimate, write_estimates
from batchkiln.store.tables import batches, idempotency_keys, jobs, request_bodies, requests
from batchkiln.store.transitions import BATCHES, JOBS, initial_state
from batchkiln.store.unpublished import TOUCH_EVERY, claim, delete_rows, register, sweep, touch

log = logging.getLogger(__name__)

# A chunk is written when it holds CHUNK rows or CHUNK_BYTES of bodies. Every chunk
# costs the writing thread two waits for the GIL (up to a switch interval, 5 ms, each,
# beside this CPU-bound loop): 200 MB of ~1 KB requests streamed in 3.56 s with
# 2,000-row chunks, 2.64 s with 5,000 (bench/intake.py). The byte cap bounds memory for
# big requests: at most two chunks are held, and SQLite binds a copy of the one being
# written. With ledger rows and bodies packed together (bulk.insert_together), a 4 MB cap
# peaked at 26-31 MB above the start on SQLite whatever the file's size, 3 MB at 22-24 MB
# in the same time. PostgreSQL writes two COPYs a chunk, each a few round trips that wait
# for this loop's next turn: 200 MB in 2.22-2.61 s with 8 MB chunks, 2.33-2.65 s with
# 6 MB, 2.57-3.09 s with 4 MB (interleaved runs), for a peak of ~28 MB instead of ~16 MB,
# flat from 50 MB to 200 MB either way.
CHUNK = 10_000
CHUNK_BYTES = {"sqlite": 3 << 20, "postgresql": 8 << 20}
_YIELD_EVERY = 128  # rows read between two turns given to the chunk being written
# rows read between two looks at the clock (a multiple of it divides _YIELD_EVERY): a
# read slower than 16 rows in STALE_AFTER - TOUCH_EVERY would be taken for dead
_CLOCK_EVERY = 16
REQUEST_COLUMNS = ("job_id", "seq", "custom_id", "line", "batch_id", "attempts")
BODY_COLUMNS = ("job_id", "seq", "body")


class DraftRow(Protocol):
    """What a draft stores of one request (intake.InputRequest is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def line(self) -> int: ...
    @property
    def custom_id(self) -> str: ...
    @property
    def canonical(self) -> bytes: ...
    @property
    def shard(self) -> int: ...


@dataclass(frozen=True)
class NewBatch:
    key: str
    tag: str
    shard: int
    start: int  # seq range [start, stop)
    stop: int
    wire_bytes: int


@dataclass(frozen=True)
class JobEstimate:
    """The admitted estimate of a new Job, stored with it."""

    rows: Sequence[NewEstimate]
    reason: str
    data: dict[str, Any]


class KeyTaken(Exception):
    """`finish` found the Job's key taken (another caller committed it first)."""


class RowsRefused(StoreError):
    """The store refused a chunk of request rows: a custom_id twice in the file (the
    unique index on (job_id, custom_id)), or another constraint."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _exact(data: bytes) -> bytes:
    """`data` in a bytes object of its own size: orjson's answer keeps the capacity of
    its write buffer (8 KB for a 1 KB body, measured with tracemalloc), which made a
    2,000-row chunk of ~1 KB bodies hold 16 MB. Copying it costs 0.3 us."""
    return bytes(memoryview(data))


def _unique_violation(exc: BaseException) -> bool:
    if isinstance(exc, (IntegrityError, sqlite3.IntegrityError)):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(exc, asyncpg.IntegrityConstraintViolationError)


class JobDraft:
    """The open transaction of one Job being created (see the module doc)."""

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        job_id: str,
        clock: Clock,
        checkpoints: WalCheckpointer | None,
        provider: str,
        source: str | None,
        options: dict[str, Any],
        worker: str | None,
    ) -> None:
        self.job_id = job_id
        self._conn = conn
        self._clock = clock
        self._checkpoints = checkpoints
        self._now = self._touched = clock.now()  # the Job's created_at
        self._provider = provider
        self._source = source
        self._options = options
        self._worker = worker
        self._batch_ids: list[str] = []  # the batch id chosen for each shard
        self._written: list[int] = []  # request rows written, by shard
        self.finished = False

    @property
    def connection(self) -> AsyncConnection:
        """The connection whose transaction `finish` publishes in: the caller's reads
        for the key and the budget go through it, so they and the publishing are one
        step (on SQLite its first statement takes the write lock; see
        store.database.reading)."""
        return self._conn

    async def write_requests(self, rows: Iterable[DraftRow]) -> None:
        """Every row of `rows`, a chunk at a time, each chunk committed; raises
        RowsRefused when the store refuses a chunk, and whatever `rows` raises."""
        job_id, batch_ids, written, clock = self.job_id, self._batch_ids, self._written, self._clock
        cap = CHUNK_BYTES[self._conn.dialect.name]
        chunk: list[tuple[Any, ...]] = []
        bodies: list[tuple[Any, ...]] = []
        size = 0
        writing: asyncio.Task[None] | None = None
        try:
            for r in rows:
                if r.shard >= len(batch_ids):  # a new shard: its batch id, for `finish`
                    if r.shard != len(batch_ids):
                        raise ValueError(f"shard {r.shard} before shard {len(batch_ids)}")
                    batch_ids.append(new_id("bat"))
                    written.append(0)
                written[r.shard] += 1
                body = _exact(r.canonical)
                size += len(body)
                seq = r.seq
                chunk.append((job_id, seq, r.custom_id, r.line, batch_ids[r.shard], 0))
                bodies.append((job_id, seq, body))
                slow = False
                if not len(chunk) % _CLOCK_EVERY:
                    if writing is not None and not len(chunk) % _YIELD_EVERY:
                        await asyncio.sleep(0)  # a turn for the chunk being written
                    # a slow read writes what it has, and the write touches the mark
                    slow = clock.now() - self._touched >= TOUCH_EVERY
                if slow or len(chunk) >= CHUNK or size >= cap:
                    if writing is not None:
                        await writing
                        writing = None
                    if slow:  # no hurry: written, and the mark touched, before reading on
                        await self._write(chunk, bodies)
                    else:
                        writing = asyncio.create_task(self._write(chunk, bodies))
                    chunk, bodies, size = [], [], 0
            if writing is not None:
                await writing
                writing = None
            if chunk:
                await self._write(chunk, bodies)
        finally:
            if writing is not None:
                # `rows` failed (a bad line): let the chunk in flight end before the
                # draft deletes its rows
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved: the error raised is the first one

    async def _write(self, chunk: list[tuple[Any, ...]], bodies: list[tuple[Any, ...]]) -> None:
        """One chunk, committed: on PostgreSQL its two COPYs in a transaction; on SQLite
        each packed statement commits itself on the driver (a transaction around them
        would cost the driver's thread two more waits for the GIL per chunk)."""
        conn = self._conn
        parts = [(requests, REQUEST_COLUMNS, chunk), (request_bodies, BODY_COLUMNS, bodies)]
        nbytes = sum(len(b[2]) for b in bodies)
        try:
            if conn.dialect.name == "postgresql":
                async with conn.begin():
                    await insert_together(conn, parts, consume=True)
            else:
                await insert_together(conn, parts, consume=True)
        except Exception as exc:
            if _unique_violation(exc):
                raise RowsRefused(str(exc).splitlines()[0]) from exc
            raise
        if self._checkpoints is not None:  # committed: its pages are in the WAL
            self._checkpoints.wrote(nbytes)
        if self._clock.now() - self._touched >= TOUCH_EVERY:
            await self._touch()

    async def _touch(self) -> None:
        """A sign of life on the draft's mark (DraftSwept if it has gone)."""
        now = self._clock.now()
        async with self._conn.begin():
            await touch(self._conn, self.job_id, now)
        self._touched = now

    async def finish(
        self,
        *,
        key: str,
        fingerprint: str,
        model: str,
        endpoint: str,
        request_count: int,
        new_batches: list[NewBatch],
        estimate: JobEstimate | None,
    ) -> None:
        """Insert the Job, its batches and their keys, the events and the estimate, in
        the transaction of `connection`, which the draft commits on leaving. KeyTaken if
        `key` is committed already; DraftSwept if the draft's rows were swept."""
        conn, now, worker, job_id = self._conn, self._now, self._worker, self.job_id
        # what was written must be the plan, shard by shard: the check the bulk tables'
        # foreign keys would have made row by row (migration 0011), and more
        planned = [nb.stop - nb.start for nb in sorted(new_batches, key=lambda nb: nb.shard)]
        if planned != self._written or sorted(nb.shard for nb in new_batches) != list(
            range(len(planned))
        ):
            raise ValueError(f"request rows written by shard {self._written}, planned {planned}")
        # first: a sweep that comes later finds no row, and one that came earlier took
        # the rows with it
        await claim(conn, job_id)
        try:
            async with conn.begin_nested():  # a savepoint: PostgreSQL aborts on a conflict
                await conn.execute(
                    insert(idempotency_keys).values(
                        key=key,
                        scope="job",
                        target_id=job_id,
                        fingerprint=fingerprint,
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise KeyTaken(key) from None
        await conn.execute(
            insert(jobs).values(
                id=job_id,
                key=key,
                fingerprint=fingerprint,
                provider=self._provider,
                model=model,
                endpoint=endpoint,
                source=self._source,
                request_count=request_count,
                options=self._options,
                **initial_state(JOBS),
                created_at=now,
                updated_at=now,
            )
        )
        for nb in new_batches:
            batch_id = self._batch_ids[nb.shard]
            await conn.execute(
                insert(batches).values(
                    **batch_values(job_id, None, nb.key, nb.tag, nb.shard, 1),
                    id=batch_id,
                    request_count=nb.stop - nb.start,
                    wire_bytes=nb.wire_bytes,
                    next_check_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                insert(idempotency_keys).values(
                    key=nb.key,
                    scope="batch",
                    target_id=batch_id,
                    fingerprint=nb.tag,
                    created_at=now,
                )
            )
            await append_event(
                conn,
                at=now,
                kind="batch.created",
                worker=worker,
                job_id=job_id,
                batch_id=batch_id,
                to_state=State.NOT_SUBMITTED.value,
                reason=f"shard {nb.shard}: {nb.stop - nb.start} requests, key derived",
                data={"key": nb.key, "tag": nb.tag},
            )
        await append_event(
            conn,
            at=now,
            kind="job.created",
            job_id=job_id,
            worker=worker,
            reason=f"{request_count} requests in {len(new_batches)} batch(es)",
            data={"key": key, "provider": self._provider, "model": model, "source": self._source},
        )
        if estimate is not None:
            await write_estimates(
                conn,
                job_id,
                estimate.rows,
                now=now,
                worker=worker,
                reason=estimate.reason,
                data=estimate.data,
            )
        self.finished = True


def batch_values(
    job_id: str, parent_id: str | None, key: str, tag: str, shard: int, attempt: int
) -> dict[str, Any]:
    """The columns every new batch row starts with (the caller adds ids, sizes, times)."""
    return {
        "job_id": job_id,
        "parent_id": parent_id,
        "key": key,
        "tag": tag,
        "shard": shard,
        "attempt": attempt,
        **initial_state(BATCHES),
        "submit_attempts": 0,
        "check_attempt": 0,
        "vendor_calls": 0,
    }


@asynccontextmanager
async def open_draft(
    engine: AsyncEngine,
    *,
    clock: Clock,
    checkpoints: WalCheckpointer | None,
    provider: str,
    source: str | None,
    options: dict[str, Any],
    worker: str | None,
) -> AsyncIterator[JobDraft]:
    """A registered JobDraft (stale drafts swept first): published if the body
    `finish`ed it and left normally, its rows deleted otherwise."""
    job_id = new_id("job")
    async with engine.connect() as conn:
        async with conn.begin():
            now = clock.now()
            await sweep(conn, now)
            await register(conn, job_id, worker, now)
        draft = JobDraft(
            conn,
            job_id=job_id,
            clock=clock,
            checkpoints=checkpoints,
            provider=provider,
            source=source,
            options=options,
            worker=worker,
        )
        try:
            yield draft
            if draft.finished:
                await conn.commit()
                return
        except BaseException:
            await _discard(conn, job_id)
            raise
        await _discard(conn, job_id)


async def _discard(conn: AsyncConnection, job_id: str) -> None:
    """Roll the draft's open transaction back and delete its rows, on its own connection
    (a second one per draft could exhaust the pool, many drafts each waiting for one);
    if that fails too (the database has gone), they are left for the sweep, and the
    caller's error stands."""
    try:
        await conn.rollback()
        async with conn.begin():
            await delete_rows(conn, job_id)
    except Exception as exc:
        log.warning("the rows of draft %s are left for the sweep: %s", job_id, exc)
