"""A Job written in one transaction while its request file is read.

`Kiln.submit` reads a request file once: each request is stored as soon as it is
validated, so the Job's key (which may derive from the content fingerprint), its
batches' keys and sizes, and its estimate are known only at the end. The draft opens
the transaction with a provisional job row and a provisional batch row per shard (so
every request row's references hold as it is written), streams the request rows and
their bodies (a table of their own) in by the store's bulk path, and `finish` gives
those rows their real keys, counts and events, then commits. No reader ever sees a
provisional row: they exist only inside the uncommitted transaction (PostgreSQL's
snapshots, SQLite's WAL readers), and leaving the draft without `finish` (a bad line,
a refused budget, a key already taken, a crash) rolls every row back.

One chunk of rows is written while the next is read, on both stores: PostgreSQL's
COPY runs in the server's process, SQLite's packed INSERT (store/bulk.py) in one
`sqlite3_step` with the GIL released. The loop gives the write a turn every few rows,
since a task only runs when the loop yields, and holds at most two chunks.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.errors import StoreError
from batchkiln.lifecycle import State
from batchkiln.store.audit import append_event
from batchkiln.store.bulk import insert_together
from batchkiln.store.costs import NewEstimate, write_estimates
from batchkiln.store.tables import batches, idempotency_keys, jobs, request_bodies, requests
from batchkiln.store.transitions import BATCHES, JOBS, initial_state

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
        now: float,
        provider: str,
        source: str | None,
        worker: str | None,
    ) -> None:
        self.job_id = job_id
        self._conn = conn
        self._now = now
        self._provider = provider
        self._source = source
        self._worker = worker
        self._batch_ids: list[str] = []
        self._written: list[int] = []  # request rows written, by shard
        self.finished = False

    @property
    def connection(self) -> AsyncConnection:
        """The draft's transaction, for reads made while it is open (on SQLite another
        connection would wait behind its write lock; see store.database.reading)."""
        return self._conn

    async def write_requests(self, rows: Iterable[DraftRow]) -> None:
        """Every row of `rows`, a chunk at a time, in the draft's transaction; raises
        RowsRefused when the store refuses a chunk, and whatever `rows` raises."""
        job_id, batch_ids, written = self.job_id, self._batch_ids, self._written
        cap = CHUNK_BYTES[self._conn.dialect.name]
        chunk: list[tuple[Any, ...]] = []
        bodies: list[tuple[Any, ...]] = []
        size = 0
        writing: asyncio.Task[None] | None = None
        try:
            for r in rows:
                if r.shard >= len(batch_ids):  # a new shard: its batch row comes first
                    if writing is not None:
                        await writing
                        writing = None
                    await self._provisional_batch(r.shard)
                    written.append(0)
                written[r.shard] += 1
                body = _exact(r.canonical)
                size += len(body)
                seq = r.seq
                chunk.append((job_id, seq, r.custom_id, r.line, batch_ids[r.shard], 0))
                bodies.append((job_id, seq, body))
                if writing is not None and not len(chunk) % _YIELD_EVERY:
                    await asyncio.sleep(0)  # a turn for the chunk being written
                if len(chunk) >= CHUNK or size >= cap:
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self._write(chunk, bodies))
                    chunk, bodies, size = [], [], 0
            if writing is not None:
                await writing
                writing = None
            await self._write(chunk, bodies)
        finally:
            if writing is not None:
                # `rows` failed (a bad line): let the chunk in flight end before the
                # transaction rolls back around it
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved: the error raised is the first one

    async def _write(self, chunk: list[tuple[Any, ...]], bodies: list[tuple[Any, ...]]) -> None:
        parts = [(requests, REQUEST_COLUMNS, chunk), (request_bodies, BODY_COLUMNS, bodies)]
        try:
            await insert_together(self._conn, parts, consume=True)
        except Exception as exc:
            if _unique_violation(exc):
                raise RowsRefused(str(exc).splitlines()[0]) from exc
            raise

    async def _provisional_batch(self, shard: int) -> None:
        """A batch row for `shard` with a placeholder key and tag (both unique, as the
        schema wants; real tags are 8 characters, these 16), given its own at `finish`."""
        if shard != len(self._batch_ids):
            raise ValueError(f"shard {shard} before shard {len(self._batch_ids)}")
        batch_id = new_id("bat")
        await self._conn.execute(
            insert(batches).values(
                **batch_values(self.job_id, None, f"draft:{batch_id}", batch_id[4:20], shard, 1),
                id=batch_id,
                request_count=0,
                wire_bytes=0,
                next_check_at=self._now,
                created_at=self._now,
                updated_at=self._now,
            )
        )
        self._batch_ids.append(batch_id)

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
        """Give the Job and its batches their keys and sizes, record the events and the
        estimate; the draft commits on leaving. KeyTaken if `key` is committed already."""
        conn, now, worker, job_id = self._conn, self._now, self._worker, self.job_id
        # what was written must be the plan, shard by shard: the check the bulk tables'
        # foreign keys would have made row by row (migration 0011), and more
        planned = [nb.stop - nb.start for nb in sorted(new_batches, key=lambda nb: nb.shard)]
        if planned != self._written or sorted(nb.shard for nb in new_batches) != list(
            range(len(planned))
        ):
            raise ValueError(f"request rows written by shard {self._written}, planned {planned}")
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
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                key=key,
                fingerprint=fingerprint,
                model=model,
                endpoint=endpoint,
                request_count=request_count,
            )
        )
        for nb in new_batches:
            batch_id = self._batch_ids[nb.shard]
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(
                    key=nb.key,
                    tag=nb.tag,
                    request_count=nb.stop - nb.start,
                    wire_bytes=nb.wire_bytes,
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
    now: float,
    provider: str,
    source: str | None,
    options: dict[str, Any],
    worker: str | None,
) -> AsyncIterator[JobDraft]:
    """A JobDraft in a new transaction: committed if the body `finish`ed it and left
    normally, rolled back otherwise."""
    job_id = new_id("job")
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await conn.execute(
                insert(jobs).values(
                    id=job_id,
                    key=f"draft:{job_id}",
                    fingerprint="",
                    provider=provider,
                    model="",
                    endpoint="",
                    source=source,
                    request_count=0,
                    options=options,
                    **initial_state(JOBS),
                    created_at=now,
                    updated_at=now,
                )
            )
            draft = JobDraft(
                conn, job_id=job_id, now=now, provider=provider, source=source, worker=worker
            )
            yield draft
        except BaseException:
            await transaction.rollback()
            raise
        if draft.finished:
            await transaction.commit()
        else:
            await transaction.rollback()
