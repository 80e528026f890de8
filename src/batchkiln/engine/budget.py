"""Budgets that block: a per-Job limit (`JobOptions.budget_usd`) and an optional
global limit over a calendar period (`KILN_BUDGET_USD`, `KILN_BUDGET_PERIOD` =
day | week | month, UTC; default month).

A new Job is admitted when its estimate fits; a retry child when what is
already committed plus the child's estimate fits. Committed means recorded
actual cost plus the estimates of batches not done yet (their upper bound),
so a Job's retries count against its own budget. A refusal is audited with the
numbers and nothing reaches the vendor. A model with no price cannot be
checked, so under a budget it is refused rather than waved through.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from batchkiln.clock import Clock
from batchkiln.costs import Estimate, Estimator, unknown_price
from batchkiln.costs.budget import GlobalBudget, Refusal, describe
from batchkiln.engine.admission import AdmissionLock
from batchkiln.engine.policy import JobOptions
from batchkiln.store import BatchRow, JobRow, NewEstimate, Store
from batchkiln.store.drafts import JobEstimate

_SLACK = 1e-9  # float sums of the same dollars must not refuse an exact fit


def new_estimates(keys: list[str], parts: list[Estimate]) -> list[NewEstimate]:
    return [
        NewEstimate(
            batch_key=key,
            requests=part.requests,
            input_tokens=part.input_tokens,
            output_tokens=part.output_tokens,
            uncapped=part.uncapped,
            cost_usd=part.cost_usd,
            list_cost_usd=part.list_cost_usd,
            tokenizer=part.tokenizer,
        )
        for key, part in zip(keys, parts, strict=True)
    ]


def job_estimate(total: Estimate, parts: list[Estimate], batch_keys: list[str]) -> JobEstimate:
    """A new Job's admitted estimate, in the shape the store writes with the Job."""
    return JobEstimate(
        rows=new_estimates(batch_keys, parts),
        reason=f"{total.requests} requests: {describe(total)}, tokens by {total.tokenizer}",
        data=total.to_json(),
    )


class BudgetGuard:
    def __init__(
        self, store: Store, clock: Clock, global_budget: GlobalBudget | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.global_budget = global_budget  # from the settings; None: no global limit
        self._lock = AdmissionLock(store)

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Hold the admission lock (see engine/admission.py) while a check and what it
        admits are recorded; a no-op without a global budget (Jobs share nothing)."""
        if self.global_budget is None:
            yield
            return
        async with self._lock.hold():
            yield

    async def refusal_for_new(
        self, estimate: Estimate, options: JobOptions, *, conn: AsyncConnection | None = None
    ) -> Refusal | None:
        """Why a new Job with this estimate does not fit, or None; call it under
        `admission()`, with the Job committed before the lock is let go (`conn`: the
        Job's draft transaction, read through)."""
        return await self._check(
            estimate,
            job_limit=options.budget_usd,
            job_id=None,
            excluding=None,
            closing=0.0,
            conn=conn,
        )

    async def refuse(self, refusal: Refusal, *, key: str, worker: str) -> None:
        """Audit a new Job's refusal (after its draft rolled back: nothing was stored)."""
        await self._refuse(refusal, job_id=None, batch_id=None, key=key, worker=worker)

    async def admit_retry(
        self,
        job: JobRow,
        batch: BatchRow,
        child_key: str,
        retrying: int,
        bodies: AsyncIterable[bytes],
        closing_cost: float | None,
        *,
        vendor: str,
        worker: str,
    ) -> bool:
        """Estimate a retry child of `batch` (`retrying` requests, their stored
        `bodies` streamed) and admit it; False (audited) if it does not fit.
        `closing_cost` is the closing batch's cost, not yet recorded."""
        async with self.admission():
            estimator = Estimator.for_job(vendor, job.model, job.endpoint)
            part = estimator.new_part()
            async for body in bodies:
                estimator.add(part, orjson.loads(body))
            estimate = estimator.finish()
            estimate.note = f"retry of {retrying} request(s)"
            refusal = await self._check(
                estimate,
                job_limit=JobOptions.load(job.options).budget_usd,
                job_id=job.id,
                excluding=batch.key,
                closing=closing_cost or 0.0,
            )
            if refusal is not None:
                await self._refuse(
                    refusal, job_id=job.id, batch_id=batch.id, key=child_key, worker=worker
                )
                return False
            await self.store.costs.add_estimates(
                job.id,
                new_estimates([child_key], [estimate]),
                worker=worker,
                reason=f"retry of {retrying} request(s) from {batch.id}: {describe(estimate)}",
                data={"batch_key": child_key, **estimate.to_json()},
            )
            return True

    async def _check(
        self,
        estimate: Estimate,
        *,
        job_limit: float | None,
        job_id: str | None,
        excluding: str | None,
        closing: float,
        conn: AsyncConnection | None = None,
    ) -> Refusal | None:
        what = "job" if job_id is None else f"retry of {estimate.requests} request(s)"
        cost = estimate.cost_usd
        unpriced = unknown_price(estimate.provider, estimate.model) if cost is None else ""
        if job_limit is not None:
            committed = closing
            if job_id is not None:
                committed += await self.store.costs.spent(job_id=job_id)
                committed += await self.store.costs.live_exposure(
                    job_id=job_id, excluding_key=excluding
                )
            if cost is None or committed + cost > job_limit + _SLACK:
                return Refusal("job", job_limit, committed, cost, what, reason=unpriced)
        budget = self.global_budget
        if budget is not None:
            since = budget.period_start(self.clock.now())
            committed = closing + await self.store.costs.spent(since=since, conn=conn)
            committed += await self.store.costs.live_exposure(excluding_key=excluding, conn=conn)
            if cost is None or committed + cost > budget.limit_usd + _SLACK:
                return Refusal(
                    "global", budget.limit_usd, committed, cost, what, budget.period, unpriced
                )
        return None

    async def _refuse(
        self,
        refusal: Refusal,
        *,
        job_id: str | None,
        batch_id: str | None,
        key: str,
        worker: str,
    ) -> None:
        await self.store.audit.record(
            "budget.refused",
            job_id=job_id,
            batch_id=batch_id,
            worker=worker,
            reason=refusal.message(),
            data={"key": key, **refusal.to_json()},
        )
