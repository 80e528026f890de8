"""Jobs and their idempotency keys.

Creating a Job is one transaction: the key row (the guard), the job, every
request of the ledger and the first batches. Either all of it is stored or
none, and a second caller with the same key gets the first caller's Job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.errors import NotFound
from batchkiln.intake import KeyConflict
from batchkiln.lifecycle import JobEvent, JobState, State
from batchkiln.store.audit import append_event
from batchkiln.store.bulk import insert_rows
from batchkiln.store.costs import NewEstimate, write_estimates
from batchkiln.store.rows import JobRow, from_row
from batchkiln.store.tables import batches, idempotency_keys, jobs, requests
from batchkiln.store.transitions import BATCHES, JOBS, initial_state, move

_CHUNK = 2000
_YIELD_EVERY = 128  # rows read between two turns given to the chunk being written


def _exact(body: Any) -> bytes:
    """`body` as JSON in a bytes object of its own size: orjson's answer keeps the
    capacity of its write buffer (8 KB for a 1 KB body, measured with tracemalloc), which
    made a 2,000-row chunk of ~1 KB bodies hold 16 MB. Copying it costs 0.3 us."""
    return bytes(memoryview(orjson.dumps(body)))


REQUEST_COLUMNS = ("job_id", "seq", "custom_id", "line", "body", "batch_id", "attempts")
KEY_RETENTION_SECONDS = 30 * 86400  # published in the README; the reaper deletes after


class RequestLike(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def line(self) -> int: ...
    @property
    def custom_id(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...


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


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class JobRepository:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def create(
        self,
        *,
        key: str,
        fingerprint: str,
        provider: str,
        model: str,
        endpoint: str,
        source: str | None,
        request_count: int,
        options: dict[str, Any],
        request_rows: Iterable[RequestLike],
        new_batches: list[NewBatch],
        worker: str | None = None,
        estimate: JobEstimate | None = None,
    ) -> tuple[JobRow, bool]:
        """Store a new Job, or return the existing one for `key` (created=False).

        Its estimate is written in the same transaction, so a Job never exists without
        the estimate its budget counts. Raises KeyConflict when `key` is already taken
        by different content, and whatever `request_rows` raises (FileChanged) with
        nothing stored."""
        existing = await self._existing(key, fingerprint)
        if existing is not None:
            return existing, False
        now = self._clock.now()
        job_id = new_id("job")
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(idempotency_keys).values(
                        key=key,
                        scope="job",
                        target_id=job_id,
                        fingerprint=fingerprint,
                        created_at=now,
                    )
                )
                await conn.execute(
                    insert(jobs).values(
                        id=job_id,
                        key=key,
                        fingerprint=fingerprint,
                        provider=provider,
                        model=model,
                        endpoint=endpoint,
                        source=source,
                        request_count=request_count,
                        options=options,
                        **initial_state(JOBS),
                        created_at=now,
                        updated_at=now,
                    )
                )
                batch_ids = await self._insert_batches(conn, job_id, new_batches, now, worker)
                await self._insert_requests(conn, job_id, request_rows, new_batches, batch_ids)
                await append_event(
                    conn,
                    at=now,
                    kind="job.created",
                    job_id=job_id,
                    worker=worker,
                    reason=f"{request_count} requests in {len(new_batches)} batch(es)",
                    data={"key": key, "provider": provider, "model": model, "source": source},
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
        except IntegrityError:
            # Lost the race for the key: the winner's Job is committed by now.
            existing = await self._existing(key, fingerprint)
            if existing is None:
                raise
            return existing, False
        return await self.get(job_id), True

    async def _existing(self, key: str, fingerprint: str) -> JobRow | None:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(idempotency_keys).where(
                            idempotency_keys.c.key == key, idempotency_keys.c.scope == "job"
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        if row["fingerprint"] != fingerprint:
            raise KeyConflict(key)
        return await self.get(row["target_id"])

    async def _insert_batches(
        self,
        conn: AsyncConnection,
        job_id: str,
        new_batches: list[NewBatch],
        now: float,
        worker: str | None,
    ) -> list[str]:
        ids = []
        for nb in new_batches:
            batch_id = await insert_batch(
                conn,
                job_id=job_id,
                parent_id=None,
                key=nb.key,
                tag=nb.tag,
                shard=nb.shard,
                attempt=1,
                request_count=nb.stop - nb.start,
                wire_bytes=nb.wire_bytes,
                now=now,
            )
            ids.append(batch_id)
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
        return ids

    async def _insert_requests(
        self,
        conn: AsyncConnection,
        job_id: str,
        request_rows: Iterable[RequestLike],
        new_batches: list[NewBatch],
        batch_ids: list[str],
    ) -> None:
        """Every request row, a chunk at a time, by the dialect's fast path
        (PostgreSQL COPY, SQLite one executemany), in the job's transaction.

        On PostgreSQL a chunk's COPY runs while the next chunk is read (the server
        works in its own process; the loop gives the COPY a turn every few rows), so at
        most two chunks are held. On SQLite each chunk is written while the loop waits:
        executemany needs the GIL back for every row, and beside this CPU-bound loop it
        would crawl (see engine/ingest.py)."""
        bounds = sorted(zip(new_batches, batch_ids, strict=True), key=lambda nb: nb[0].start)
        overlap = conn.dialect.name == "postgresql"
        shard = 0
        chunk: list[tuple[Any, ...]] = []
        writing: asyncio.Task[None] | None = None
        try:
            for r in request_rows:
                seq = r.seq
                while shard < len(bounds) and seq >= bounds[shard][0].stop:
                    shard += 1
                if shard == len(bounds) or seq < bounds[shard][0].start:
                    raise ValueError(f"request {seq} is in no shard")
                chunk.append(
                    (job_id, seq, r.custom_id, r.line, _exact(r.body), bounds[shard][1], 0)
                )
                if writing is not None and not len(chunk) % _YIELD_EVERY:
                    await asyncio.sleep(0)  # a turn for the chunk being written
                if len(chunk) >= _CHUNK:
                    if writing is not None:
                        await writing
                    write = insert_rows(conn, requests, REQUEST_COLUMNS, chunk)
                    if overlap:
                        writing = asyncio.create_task(write)
                    else:
                        await write
                    chunk = []
            if writing is not None:
                await writing
            await insert_rows(conn, requests, REQUEST_COLUMNS, chunk)
        finally:
            if writing is not None:
                # the file failed (FileChanged) or changed under us: let the chunk in
                # flight end before the transaction rolls back around it
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved: the error raised is the first one

    async def get(self, job_id_or_key: str) -> JobRow:
        """A Job by its id, else by its idempotency key: two explicit lookups, ids first
        (a key can no longer look like an id, see intake.keys.check_user_key; one stored
        before that rule still never shadows the job whose id it copies)."""
        async with self._engine.connect() as conn:
            row = None
            for column in (jobs.c.id, jobs.c.key):
                row = (
                    (
                        await conn.execute(
                            select(jobs)
                            .where(column == job_id_or_key)
                            .order_by(jobs.c.created_at.desc())
                            .limit(1)
                        )
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    break
        if row is None:
            raise NotFound(f"no job with id or key {job_id_or_key!r}")
        return from_row(JobRow, row)

    async def many(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        """Several Jobs by id, in one query."""
        wanted = sorted(set(job_ids))
        if not wanted:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(jobs).where(jobs.c.id.in_(wanted)))
            return {r["id"]: from_row(JobRow, r) for r in rows.mappings()}

    async def list(self, *, limit: int = 50) -> list[JobRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(jobs).order_by(jobs.c.created_at.desc()).limit(limit))
            return [from_row(JobRow, r) for r in rows.mappings()]


async def insert_batch(
    conn: AsyncConnection,
    *,
    job_id: str,
    parent_id: str | None,
    key: str,
    tag: str,
    shard: int,
    attempt: int,
    request_count: int,
    wire_bytes: int,
    now: float,
) -> str:
    """A new batch row in its initial state, due now, with its key row; returns its id."""
    batch_id = new_id("bat")
    await conn.execute(
        insert(batches).values(
            id=batch_id,
            job_id=job_id,
            parent_id=parent_id,
            key=key,
            tag=tag,
            shard=shard,
            attempt=attempt,
            **initial_state(BATCHES),
            request_count=request_count,
            wire_bytes=wire_bytes,
            submit_attempts=0,
            check_attempt=0,
            vendor_calls=0,
            next_check_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    await conn.execute(
        insert(idempotency_keys).values(
            key=key, scope="batch", target_id=batch_id, fingerprint=tag, created_at=now
        )
    )
    return batch_id


async def settle_job(
    conn: AsyncConnection, job_id: str, *, now: float, worker: str | None
) -> JobState | None:
    """Inside the caller's transaction, once every batch of the Job is done: move the Job
    to `done` (every request has an outcome: summary, key archived, `job.done`) or to
    `awaiting_retry` (failures wait for a manual retry). Returns the new state, or None
    while a batch is still live.

    This decision sits in the store on purpose: it must commit in the transaction that
    closes the last batch (or starts or cancels a retry), or a crash between the two
    strands the Job (a done batch is never claimed again to finish its job later; the
    property test found exactly that)."""
    live = await conn.execute(
        select(func.count()).where(batches.c.job_id == job_id, batches.c.state != "done")
    )
    if live.scalar_one():
        return None
    job = (await conn.execute(select(jobs.c.status, jobs.c.key).where(jobs.c.id == job_id))).one()
    state = JobState(job.status)
    counted = await conn.execute(
        select(requests.c.outcome, func.count())
        .where(requests.c.job_id == job_id)
        .group_by(requests.c.outcome)
    )
    counts = {(o or "pending"): int(n) for o, n in counted.all()}
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    if counts.get("pending"):
        if state != JobState.ACTIVE:
            return None
        await move(
            conn,
            JOBS,
            job_id,
            state,
            JobEvent.HELD,
            now=now,
            worker=worker,
            reason=f"{counts['pending']} request(s) wait for `kiln retry`: {summary}",
            data={"counts": counts},
        )
        return JobState.AWAITING_RETRY
    shape = (
        await conn.execute(
            select(func.count(), func.max(batches.c.attempt)).where(batches.c.job_id == job_id)
        )
    ).one()
    outcome = {
        "counts": counts,
        "batches": int(shape[0]),
        "attempts": int(shape[1] or 0),
        "succeeded": set(counts) == {"succeeded"},
    }
    await move(
        conn,
        JOBS,
        job_id,
        state,
        JobEvent.DONE,
        now=now,
        worker=worker,
        reason=summary,
        values={"outcome": outcome, "finished_at": now},
        data=outcome,
    )
    expires = now + KEY_RETENTION_SECONDS
    await conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.key == job.key, idempotency_keys.c.scope == "job")
        .values(archived_at=now, expires_at=expires)
    )
    await append_event(
        conn,
        at=now,
        kind="key.archived",
        job_id=job_id,
        worker=worker,
        data={"key": job.key, "expires_at": expires},
    )
    return JobState.DONE
