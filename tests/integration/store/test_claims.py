"""Due batches are claimed with leases: one worker each, and a dead worker's lease expires."""

from __future__ import annotations

import asyncio

from batchkiln.clock import FakeClock
from batchkiln.store import Store

from .helpers import make_job


async def test_a_due_batch_is_claimed_by_one_worker_only(store: Store) -> None:
    """Two workers claiming at once never lease the same batch."""
    job = await make_job(store, n=40, shards=8)
    claims = await asyncio.gather(
        *(store.batches.claim_due(worker=f"w{i}", lease_seconds=60, limit=3) for i in range(4))
    )
    ids = [b.id for claim in claims for b in claim]
    assert len(ids) == len(set(ids)) == 8
    assert {b.job_id for claim in claims for b in claim} == {job.id}


async def test_an_expired_lease_lets_another_worker_resume(store: Store, clock: FakeClock) -> None:
    """A crashed worker's lease runs out and the batch is claimable again."""
    await make_job(store)
    (claimed,) = await store.batches.claim_due(worker="dead", lease_seconds=60)
    assert await store.batches.claim_due(worker="alive", lease_seconds=60) == []
    clock.advance(61)
    (again,) = await store.batches.claim_due(worker="alive", lease_seconds=60)
    assert again.id == claimed.id and again.lease_owner == "alive"


async def test_release_sets_the_next_check(store: Store, clock: FakeClock) -> None:
    """Releasing a lease persists when the batch is next due."""
    await make_job(store)
    (batch,) = await store.batches.claim_due(worker="w", lease_seconds=60)
    await store.batches.release(batch.id, worker="w", next_check_at=clock.now() + 10)
    assert await store.batches.claim_due(worker="w", lease_seconds=60) == []
    clock.advance(10)
    assert [b.id for b in await store.batches.claim_due(worker="w", lease_seconds=60)] == [batch.id]
