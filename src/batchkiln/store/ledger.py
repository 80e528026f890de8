"""The request ledger and stored results.

Closing a batch is one transaction: the DOWNLOADING -> DONE move (the one
compare-and-set, `transitions.move`), every request's outcome, the retry child (if
any) with the requests moved to it, the cost record (primary key per batch: counted
once), the key archived, and, when it was the Job's last live batch, the Job's own
move. The engine decides all of it (the `Closing` it hands over); the store only
applies it, in one transaction, because a crash between any two of these writes
would count a cost twice, lose a retry, or strand the Job. A crash before commit
leaves the batch in DOWNLOADING to be ingested again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.lifecycle import Event, JobEvent, JobState, State
from batchkiln.store.audit import append_event
from batchkiln.store.database import insert_ignoring_duplicates
from batchkiln.store.jobs import KEY_RETENTION_SECONDS, insert_batch, settle_job
from batchkiln.store.rows import BatchRow, RequestRow, from_row
from batchkiln.store.tables import batches, costs, idempotency_keys, jobs, requests, results
from batchkiln.store.transitions import BATCHES, JOBS, move

_CHUNK = 1000


@dataclass(frozen=True)
class StoredResult:
    seq: int
    outcome: str
    failure: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class ChildBatch:
    key: str
    tag: str
    attempt: int
    seqs: Sequence[int]
    wire_bytes: int


@dataclass
class Closing:
    """Everything that becomes true when a batch's results are in."""

    outcomes: dict[int, str]  # seq -> succeeded|failed|exhausted|cancelled (final only)
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> last error
    child: ChildBatch | None = None
    cost: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _closing_reason(closing: Closing) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(closing.summary.items()) if k in _OUTCOMES)
    retry = f"; {len(closing.child.seqs)} to a retry batch" if closing.child else ""
    return f"results stored: {counts or 'no requests'}{retry}"


_OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")


class Ledger:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def requests_of(self, batch_id: str) -> list[tuple[int, bytes]]:
        """(seq, body) of every request the batch carries, in input order."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(requests.c.seq, requests.c.body)
                .where(requests.c.batch_id == batch_id)
                .order_by(requests.c.seq)
            )
            return [(r.seq, r.body) for r in rows]

    async def store_results(self, rows: list[dict[str, Any]]) -> None:
        """Insert result rows; a row already stored for (batch, seq) is kept as it was."""
        if not rows:
            return
        async with self._engine.begin() as conn:
            for start in range(0, len(rows), _CHUNK):
                await conn.execute(
                    insert_ignoring_duplicates(conn, results), rows[start : start + _CHUNK]
                )

    async def results_of(self, batch_id: str) -> list[StoredResult]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    results.c.seq,
                    results.c.outcome,
                    results.c.failure,
                    results.c.error_code,
                    results.c.error_message,
                ).where(results.c.batch_id == batch_id)
            )
            return [StoredResult(**r._mapping) for r in rows]

    async def usage_of(self, batch_id: str) -> dict[str, int]:
        """Token totals over the billed results of a batch."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        func.count().label("billed_requests"),
                        func.coalesce(func.sum(results.c.input_tokens), 0).label("input_tokens"),
                        func.coalesce(func.sum(results.c.cached_input_tokens), 0).label(
                            "cached_input_tokens"
                        ),
                        func.coalesce(func.sum(results.c.output_tokens), 0).label("output_tokens"),
                        func.coalesce(func.sum(results.c.cache_write_5m_tokens), 0).label(
                            "cache_write_5m_tokens"
                        ),
                        func.coalesce(func.sum(results.c.cache_write_1h_tokens), 0).label(
                            "cache_write_1h_tokens"
                        ),
                    ).where(results.c.batch_id == batch_id, results.c.billed == 1)
                )
            ).one()
            return {k: int(v) for k, v in row._mapping.items()}

    async def close_batch(
        self, batch: BatchRow, closing: Closing, *, worker: str | None
    ) -> str | None:
        """Apply `closing` and move the batch DOWNLOADING -> DONE atomically.

        Returns the child batch id, if a retry was planned. Raises StaleTransition
        when another worker closed it first (nothing is applied twice)."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await move(
                conn,
                BATCHES,
                batch.id,
                State.DOWNLOADING,
                Event.INGESTED,
                now=now,
                worker=worker,
                reason=_closing_reason(closing),
                values={"next_check_at": None},
                data=closing.summary,
            )
            await self._apply_outcomes(conn, batch, closing)
            child_id = None
            if closing.child is not None:
                child_id = await self._insert_child(conn, batch, closing.child, now, worker)
            if closing.cost is not None:
                await conn.execute(insert(costs).values(recorded_at=now, **closing.cost))
                await append_event(
                    conn,
                    at=now,
                    kind="cost.recorded",
                    job_id=batch.job_id,
                    batch_id=batch.id,
                    worker=worker,
                    data=closing.cost,
                )
            expires = now + KEY_RETENTION_SECONDS
            await conn.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.key == batch.key)
                .values(archived_at=now, expires_at=expires)
            )
            await append_event(
                conn,
                at=now,
                kind="key.archived",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=worker,
                data={"key": batch.key, "expires_at": expires},
            )
            if child_id is None:
                await settle_job(conn, batch.job_id, now=now, worker=worker)
        return child_id

    async def _apply_outcomes(
        self, conn: AsyncConnection, batch: BatchRow, closing: Closing
    ) -> None:
        by_outcome: dict[str, list[int]] = {}
        for seq, outcome in closing.outcomes.items():
            by_outcome.setdefault(outcome, []).append(seq)
        for outcome, seqs in by_outcome.items():
            for start in range(0, len(seqs), _CHUNK):
                await conn.execute(
                    update(requests)
                    .where(
                        requests.c.job_id == batch.job_id,
                        requests.c.seq.in_(seqs[start : start + _CHUNK]),
                        requests.c.batch_id == batch.id,
                        requests.c.outcome.is_(None),
                    )
                    .values(outcome=outcome, result_batch_id=batch.id, attempts=batch.attempt)
                )
        for seq, error in closing.errors.items():
            await conn.execute(
                update(requests)
                .where(requests.c.job_id == batch.job_id, requests.c.seq == seq)
                .values(last_error=error, attempts=batch.attempt)
            )

    async def add_child(
        self, parent: BatchRow, child: ChildBatch, *, worker: str | None
    ) -> str | None:
        """Start a retry child of a done batch by hand; None if its key already exists."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            taken = await conn.execute(select(batches.c.id).where(batches.c.key == child.key))
            if taken.first() is not None:
                return None
            child_id = await self._insert_child(conn, parent, child, now, worker)
            status = await conn.execute(select(jobs.c.status).where(jobs.c.id == parent.job_id))
            if status.scalar_one() == JobState.AWAITING_RETRY.value:
                await move(
                    conn,
                    JOBS,
                    parent.job_id,
                    JobState.AWAITING_RETRY,
                    JobEvent.RETRIED,
                    now=now,
                    worker=worker,
                    reason=f"retry batch {child_id} started by hand",
                )
            return child_id

    async def awaiting_retry(
        self, job_id: str, classes: Collection[str] = ("retryable",)
    ) -> dict[str, list[int]]:
        """Requests with no final outcome whose batch is done (auto retry was off, or
        an `account` failure held), by the batch that last carried them, for the
        failure classes asked for (a request with no result line counts as retryable)."""
        failure = func.coalesce(results.c.failure, "retryable")
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(requests.c.batch_id, requests.c.seq)
                .select_from(
                    requests.join(batches, batches.c.id == requests.c.batch_id).outerjoin(
                        results,
                        and_(
                            results.c.batch_id == requests.c.batch_id,
                            results.c.seq == requests.c.seq,
                        ),
                    )
                )
                .where(
                    requests.c.job_id == job_id,
                    requests.c.outcome.is_(None),
                    batches.c.state == State.DONE.value,
                    failure.in_(list(classes)),
                )
                .order_by(requests.c.seq)
            )
            waiting: dict[str, list[int]] = {}
            for batch_id, seq in rows:
                waiting.setdefault(batch_id, []).append(seq)
            return waiting

    async def _insert_child(
        self,
        conn: AsyncConnection,
        parent: BatchRow,
        child: ChildBatch,
        now: float,
        worker: str | None,
    ) -> str:
        child_id = await insert_batch(
            conn,
            job_id=parent.job_id,
            parent_id=parent.id,
            key=child.key,
            tag=child.tag,
            shard=parent.shard,
            attempt=child.attempt,
            request_count=len(child.seqs),
            wire_bytes=child.wire_bytes,
            now=now,
        )
        seqs = list(child.seqs)
        for start in range(0, len(seqs), _CHUNK):
            moved = await conn.execute(
                update(requests)
                .where(
                    and_(
                        requests.c.job_id == parent.job_id,
                        requests.c.seq.in_(seqs[start : start + _CHUNK]),
                        requests.c.batch_id == parent.id,
                        requests.c.outcome.is_(None),
                    )
                )
                .values(batch_id=child_id)
            )
            if moved.rowcount != len(seqs[start : start + _CHUNK]):
                raise RuntimeError("a retried request was not live in its parent batch")
        await append_event(
            conn,
            at=now,
            kind="batch.created",
            job_id=parent.job_id,
            batch_id=child_id,
            to_state=State.NOT_SUBMITTED.value,
            worker=worker,
            reason=f"retry attempt {child.attempt} of {len(seqs)} request(s) from {parent.id}",
            data={"key": child.key, "tag": child.tag, "parent_id": parent.id},
        )
        return child_id

    async def job_counts(self, job_id: str) -> dict[str, int]:
        """How many of a job's requests have each final outcome ('pending': none yet)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(requests.c.outcome, func.count())
                .where(requests.c.job_id == job_id)
                .group_by(requests.c.outcome)
            )
            return {(o or "pending"): int(n) for o, n in rows.all()}

    async def export_rows(self, job_id: str) -> AsyncIterator[tuple[RequestRow, bytes | None]]:
        """Every request of a job in input order, with the raw result line that is
        final for it, streamed."""
        query = (
            select(requests, results.c.raw)
            .select_from(
                requests.outerjoin(
                    results,
                    and_(
                        results.c.batch_id == requests.c.result_batch_id,
                        results.c.seq == requests.c.seq,
                    ),
                )
            )
            .where(requests.c.job_id == job_id)
            .order_by(requests.c.seq)
        )
        async with self._engine.connect() as conn:
            stream = await conn.stream(query.execution_options(yield_per=_CHUNK))
            async for row in stream.mappings():
                yield from_row(RequestRow, row), row["raw"]
