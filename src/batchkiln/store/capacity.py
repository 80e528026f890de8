"""Enqueued tokens: what our in-flight batches hold at a vendor, per provider and model,
and the limits learned from the vendor's rejections.

A vendor caps the input tokens of a model's unfinished batches per organisation
(OpenAI: "Enqueued token limit reached ... Limit: 2,000,000 enqueued tokens"). We
count ours from the upper-bound estimates made before each batch was sent
(`estimates.input_tokens`, by batch key) over the batches that may hold tokens at
the vendor (submitting, pending, in_progress, cancelling).
"""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock
from batchkiln.lifecycle import State
from batchkiln.store.tables import batches, enqueued_limits, estimates, jobs

IN_FLIGHT = (State.SUBMITTING, State.PENDING, State.IN_PROGRESS, State.CANCELLING)


class CapacityBook:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def enqueued(self, provider: str, model: str, *, excluding: str | None = None) -> int:
        """Estimated input tokens of our in-flight batches of `provider` + `model`."""
        query = (
            select(func.coalesce(func.sum(estimates.c.input_tokens), 0))
            .select_from(
                batches.join(jobs, jobs.c.id == batches.c.job_id).join(
                    estimates, estimates.c.batch_key == batches.c.key
                )
            )
            .where(
                jobs.c.provider == provider,
                jobs.c.model == model,
                batches.c.state.in_([s.value for s in IN_FLIGHT]),
            )
        )
        if excluding is not None:
            query = query.where(batches.c.id != excluding)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def batch_tokens(self, batch_key: str) -> int:
        """The estimated input tokens of one batch (0 when it has no estimate)."""
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    select(estimates.c.input_tokens).where(estimates.c.batch_key == batch_key)
                )
            ).scalar()
        return int(found or 0)

    async def learned(self, provider: str, model: str) -> int | None:
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    select(enqueued_limits.c.limit_tokens).where(
                        enqueued_limits.c.provider == provider, enqueued_limits.c.model == model
                    )
                )
            ).scalar()
        return None if found is None else int(found)

    async def lower(self, provider: str, model: str, limit: int, *, reason: str) -> int:
        """Record `limit` unless a lower one is known; returns the limit now in force."""
        try:
            return await self._lower(provider, model, limit, reason=reason)
        except IntegrityError:  # another worker inserted the first row meanwhile
            return await self._lower(provider, model, limit, reason=reason)

    async def _lower(self, provider: str, model: str, limit: int, *, reason: str) -> int:
        now = self._clock.now()
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(
                    select(enqueued_limits.c.limit_tokens)
                    .where(enqueued_limits.c.provider == provider, enqueued_limits.c.model == model)
                    .with_for_update()
                )
            ).scalar()
            if current is None:
                await conn.execute(
                    insert(enqueued_limits).values(
                        provider=provider,
                        model=model,
                        limit_tokens=limit,
                        reason=reason,
                        updated_at=now,
                    )
                )
                return limit
            if limit >= current:
                return int(current)
            await conn.execute(
                update(enqueued_limits)
                .where(enqueued_limits.c.provider == provider, enqueued_limits.c.model == model)
                .values(limit_tokens=limit, reason=reason, updated_at=now)
            )
            return limit
