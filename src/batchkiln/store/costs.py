"""Money in the store: estimates made before sending, the cost records written
when a batch closes (see store.ledger), and the sums budgets are checked against.

A cost record is keyed by batch (primary key), so summing cost rows never counts
a batch twice. An estimate is keyed by batch key, so a retry child is estimated
before its batch row exists and re-estimating is a no-op.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.lifecycle import State
from batchkiln.store.audit import append_event
from batchkiln.store.database import insert_ignoring_duplicates, reading
from batchkiln.store.tables import batches, costs, estimates, request_bodies

_CHUNK = 1000


@dataclass(frozen=True)
class NewEstimate:
    batch_key: str
    requests: int
    input_tokens: int
    output_tokens: int
    uncapped: int
    cost_usd: float | None
    list_cost_usd: float | None
    tokenizer: str


@dataclass(frozen=True, kw_only=True)
class EstimateRow(NewEstimate):
    """A stored estimate, with the batch it became (if it was created)."""

    batch_id: str | None  # None: the batch was never created
    attempt: int | None
    state: str | None


@dataclass(frozen=True)
class CostRow:
    batch_id: str
    parent_id: str | None
    shard: int
    attempt: int
    provider: str
    model: str
    billed_requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float | None
    list_cost_usd: float | None
    price_source: str | None
    recorded_at: float
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0


async def write_estimates(
    conn: AsyncConnection,
    job_id: str,
    rows: Sequence[NewEstimate],
    *,
    now: float,
    worker: str | None,
    reason: str,
    data: dict[str, Any] | None = None,
) -> None:
    """Inside the caller's transaction: the estimates (an existing one for the same key is
    kept) and their `cost.estimated` event."""
    for row in rows:
        await conn.execute(
            insert_ignoring_duplicates(conn, estimates).values(
                job_id=job_id, created_at=now, **row.__dict__
            )
        )
    await append_event(
        conn, at=now, kind="cost.estimated", job_id=job_id, worker=worker, reason=reason, data=data
    )


class CostBook:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def add_estimates(
        self,
        job_id: str,
        rows: Sequence[NewEstimate],
        *,
        worker: str | None,
        reason: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Store estimates (an existing one for the same key is kept) and audit them."""
        async with self._engine.begin() as conn:
            await write_estimates(
                conn,
                job_id,
                rows,
                now=self._clock.now(),
                worker=worker,
                reason=reason,
                data=data,
            )

    async def estimates_for_job(self, job_id: str) -> list[EstimateRow]:
        query = (
            select(
                estimates,
                batches.c.id.label("batch_id"),
                batches.c.attempt,
                batches.c.state,
            )
            .select_from(estimates.outerjoin(batches, batches.c.key == estimates.c.batch_key))
            .where(estimates.c.job_id == job_id)
            .order_by(estimates.c.created_at, estimates.c.batch_key)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            EstimateRow(**{k: row[k] for k in EstimateRow.__dataclass_fields__}) for row in rows
        ]

    async def costs_for_job(self, job_id: str) -> list[CostRow]:
        query = (
            select(costs, batches.c.parent_id, batches.c.shard, batches.c.attempt)
            .select_from(costs.join(batches, batches.c.id == costs.c.batch_id))
            .where(costs.c.job_id == job_id)
            .order_by(batches.c.shard, batches.c.attempt, costs.c.recorded_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [CostRow(**{k: row[k] for k in CostRow.__dataclass_fields__}) for row in rows]

    async def spent(
        self,
        *,
        job_id: str | None = None,
        since: float | None = None,
        conn: AsyncConnection | None = None,
    ) -> float:
        """Recorded actual cost (batch prices) of a job, or of everything since a time
        (`conn`: read in that transaction, see store.database.reading)."""
        query = select(func.coalesce(func.sum(costs.c.cost_usd), 0.0))
        if job_id is not None:
            query = query.where(costs.c.job_id == job_id)
        if since is not None:
            query = query.where(costs.c.recorded_at >= since)
        return await self._scalar(query, conn)

    async def live_exposure(
        self,
        *,
        job_id: str | None = None,
        excluding_key: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> float:
        """Estimated cost of the batches not done yet (their cost is not recorded)."""
        query = (
            select(func.coalesce(func.sum(estimates.c.cost_usd), 0.0))
            .select_from(estimates.join(batches, batches.c.key == estimates.c.batch_key))
            .where(batches.c.state != State.DONE.value)
        )
        if job_id is not None:
            query = query.where(estimates.c.job_id == job_id)
        if excluding_key is not None:
            query = query.where(estimates.c.batch_key != excluding_key)
        return await self._scalar(query, conn)

    async def _scalar(self, query: Select[Any], conn: AsyncConnection | None) -> float:
        async with reading(self._engine, conn) as c:
            return float((await c.execute(query)).scalar_one())

    async def bodies(self, job_id: str, seqs: Sequence[int]) -> AsyncIterator[bytes]:
        """The stored bodies of some of a job's requests, a chunk at a time."""
        ordered = sorted(seqs)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(request_bodies.c.body).where(
                        and_(request_bodies.c.job_id == job_id, request_bodies.c.seq.in_(chunk))
                    )
                )
                for (body,) in rows:
                    yield body
