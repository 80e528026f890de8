"""Jobs and their idempotency keys.

Creating a Job publishes it in one transaction: the key row (the guard), the job and
its first batches, over the request rows its draft committed as it read them (see
store/drafts.py). Either the Job is published whole or its rows are deleted, and a
second caller with the same key gets the first caller's Job.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple, Protocol

import orjson
from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.errors import NotFound
from batchkiln.intake import KeyConflict
from batchkiln.lifecycle import JobEvent, JobState
from batchkiln.store.audit import append_event
from batchkiln.store.checkpoints import WalCheckpointer
from batchkiln.store.database import reading
from batchkiln.store.drafts import (
    JobDraft,
    JobEstimate,
    KeyTaken,
    NewBatch,
    batch_values,
    new_id,
    open_draft,
)
from batchkiln.store.rows import JobRow, from_row
from batchkiln.store.tables import batches, idempotency_keys, jobs, requests
from batchkiln.store.transitions import JOBS, move
from batchkiln.store.unpublished import sweep

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


class _Planned(NamedTuple):
    seq: int
    line: int
    custom_id: str
    canonical: bytes
    shard: int


def _shards(new_batches: list[NewBatch]) -> Callable[[int], int]:
    """seq -> the shard whose [start, stop) holds it (ValueError for none)."""
    ordered = sorted(new_batches, key=lambda nb: nb.start)
    starts = [nb.start for nb in ordered]

    def shard_of(seq: int) -> int:
        at = bisect.bisect_right(starts, seq) - 1
        if at < 0 or seq >= ordered[at].stop:
            raise ValueError(f"request {seq} is in no shard")
        return ordered[at].shard

    return shard_of


class JobRepository:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, checkpoints: WalCheckpointer | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._checkpoints = checkpoints

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
        """Store a new Job whose plan is known (its rows, shards and key), or return the
        existing one for `key` (created=False), by way of a draft (see store/drafts.py,
        which `Kiln.submit` drives while it reads the file).

        Its estimate is written in the same transaction, so a Job never exists without
        the estimate its budget counts. Raises KeyConflict when `key` is already taken
        by different content, and whatever `request_rows` raises with nothing stored."""
        existing = await self.existing(key, fingerprint)
        if existing is not None:
            return existing, False
        shard_of = _shards(new_batches)
        planned = (
            _Planned(r.seq, r.line, r.custom_id, orjson.dumps(r.body), shard_of(r.seq))
            for r in request_rows
        )
        try:
            async with self.draft(
                provider=provider, source=source, options=options, worker=worker
            ) as d:
                await d.write_requests(planned)
                await d.finish(
                    key=key,
                    fingerprint=fingerprint,
                    model=model,
                    endpoint=endpoint,
                    request_count=request_count,
                    new_batches=new_batches,
                    estimate=estimate,
                )
                job_id = d.job_id
        except KeyTaken:
            # Lost the race for the key: the winner's Job is committed by now.
            existing = await self.existing(key, fingerprint)
            if existing is None:
                raise
            return existing, False
        return await self.get(job_id), True

    def draft(
        self, *, provider: str, source: str | None, options: dict[str, Any], worker: str | None
    ) -> AbstractAsyncContextManager[JobDraft]:
        """A Job written while its requests are read (see store/drafts.py)."""
        return open_draft(
            self._engine,
            clock=self._clock,
            checkpoints=self._checkpoints,
            provider=provider,
            source=source,
            options=options,
            worker=worker,
        )

    async def sweep_drafts(self) -> list[str]:
        """Delete the rows of every draft silent for drafts.STALE_AFTER (a submission
        that died); the draft ids swept."""
        async with self._engine.begin() as conn:
            return await sweep(conn, self._clock.now())

    async def key_taken(self, key: str) -> bool:
        """Whether a Job's idempotency key row exists for `key`."""
        async with self._engine.connect() as conn:
            found = await conn.execute(
                select(idempotency_keys.c.key).where(
                    idempotency_keys.c.key == key, idempotency_keys.c.scope == "job"
                )
            )
            return found.first() is not None

    async def existing(
        self, key: str, fingerprint: str, *, conn: AsyncConnection | None = None
    ) -> JobRow | None:
        """The Job `key` names, None if none; KeyConflict if it holds other content.
        `conn`: read in that transaction (a draft's: on SQLite every other connection
        would wait behind its write lock)."""
        query = (
            select(jobs, idempotency_keys.c.fingerprint.label("key_fingerprint"))
            .select_from(idempotency_keys.join(jobs, jobs.c.id == idempotency_keys.c.target_id))
            .where(idempotency_keys.c.key == key, idempotency_keys.c.scope == "job")
        )
        async with reading(self._engine, conn) as c:
            row = (await c.execute(query)).mappings().first()
        if row is None:
            return None
        if row["key_fingerprint"] != fingerprint:
            raise KeyConflict(key)
        return from_row(JobRow, row)

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
            **batch_values(job_id, parent_id, key, tag, shard, attempt),
            id=batch_id,
            request_count=request_count,
            wire_bytes=wire_bytes,
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


OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")  # a request's final ones


async def _counts_by_outcome(conn: AsyncConnection, job_id: str) -> dict[str, int]:
    """The Job's requests by outcome ("pending": none yet), by conditional sums: a
    GROUP BY sorted every request row (SQLite's sorter grew ~1.2 MB from 25,000 to
    100,000 requests, the one thing in an ingest that grew with the batch)."""
    pending = requests.c.outcome.is_(None)
    wanted = [pending, *(requests.c.outcome == name for name in OUTCOMES)]
    row = (
        await conn.execute(
            select(
                func.count(),
                *(func.coalesce(func.sum(case((test, 1), else_=0)), 0) for test in wanted),
            ).where(requests.c.job_id == job_id)
        )
    ).one()
    total, *found = (int(n) for n in row)
    if total != sum(found):
        raise ValueError(f"job {job_id}: a request has an outcome outside {OUTCOMES}")
    return {name: n for name, n in zip(("pending", *OUTCOMES), found, strict=True) if n}


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
    counts = await _counts_by_outcome(conn, job_id)
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
