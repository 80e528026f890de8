"""The store's money queries: estimates by batch key, spend by job and period, and
the exposure of batches not done yet."""

from __future__ import annotations

from sqlalchemy import insert, update

from batchkiln.clock import FakeClock
from batchkiln.lifecycle import State
from batchkiln.store import NewEstimate, Store
from batchkiln.store.tables import batches, costs

from ..store.helpers import make_job


def estimate(key: str, dollars: float | None) -> NewEstimate:
    return NewEstimate(key, 4, 100, 200, 0, dollars, None if dollars is None else 2 * dollars, "t")


async def record_cost(store: Store, batch_id: str, job_id: str, dollars: float) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(costs).values(
                batch_id=batch_id,
                job_id=job_id,
                provider="openai",
                model="gpt-4o-mini",
                billed_requests=4,
                input_tokens=3_000_000_000,  # past 2**31: the columns are wide
                cached_input_tokens=0,
                output_tokens=10,
                cost_usd=dollars,
                list_cost_usd=2 * dollars,
                recorded_at=store.clock.now(),
            )
        )
        await conn.execute(
            update(batches).where(batches.c.id == batch_id).values(state=State.DONE.value)
        )


async def test_estimates_are_kept_once_per_batch_key_and_audited(store: Store) -> None:
    """Estimating the same key twice keeps the first figure; each call is an event."""
    job = await make_job(store, shards=2)
    keys = [b.key for b in await store.batches.for_job(job.id)]
    await store.costs.add_estimates(job.id, [estimate(keys[0], 1.0)], worker="w", reason="first")
    await store.costs.add_estimates(job.id, [estimate(keys[0], 9.0)], worker="w", reason="again")
    (row,) = await store.costs.estimates_for_job(job.id)
    assert (row.cost_usd, row.attempt, row.state) == (1.0, 1, "not_submitted")
    kinds = [e.kind for e in await store.audit.for_job(job.id)]
    assert kinds.count("cost.estimated") == 2


async def test_exposure_counts_live_batches_and_spend_counts_recorded_costs(
    store: Store, clock: FakeClock
) -> None:
    """A done batch moves from exposure (its estimate) to spend (its actual cost)."""
    job = await make_job(store, shards=2)
    first, second = await store.batches.for_job(job.id)
    await store.costs.add_estimates(
        job.id, [estimate(first.key, 1.0), estimate(second.key, 2.0)], worker="w", reason="r"
    )
    assert await store.costs.live_exposure() == 3.0
    assert await store.costs.live_exposure(excluding_key=second.key) == 1.0
    since = clock.now()
    clock.advance(10)
    await record_cost(store, first.id, job.id, 0.25)
    assert await store.costs.live_exposure(job_id=job.id) == 2.0
    assert await store.costs.spent(job_id=job.id) == 0.25
    assert await store.costs.spent(since=since) == 0.25
    assert await store.costs.spent(since=clock.now() + 1) == 0.0
    (cost,) = await store.costs.costs_for_job(job.id)
    assert cost.input_tokens == 3_000_000_000


async def test_an_estimate_for_a_batch_never_created_is_no_exposure(store: Store) -> None:
    """A retry child estimated but never inserted (its close lost a race) costs nothing."""
    job = await make_job(store)
    await store.costs.add_estimates(job.id, [estimate("ghost:s0:a2", 5.0)], worker="w", reason="r")
    assert await store.costs.live_exposure() == 0.0
    (row,) = await store.costs.estimates_for_job(job.id)
    assert row.batch_id is None
