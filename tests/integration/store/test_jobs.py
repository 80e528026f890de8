"""Jobs are created once per idempotency key, atomically, with their ledger."""

from __future__ import annotations

import asyncio

import pytest

from batchkiln.clock import FakeClock
from batchkiln.intake import KeyConflict
from batchkiln.store import NotFound, Store

from .helpers import make_job


async def test_a_job_stores_its_ledger_and_batches(store: Store) -> None:
    """Every request gets a ledger row in a batch, and each shard a not_submitted batch."""
    job = await make_job(store, n=10, shards=3)
    batches = await store.batches.for_job(job.id)
    assert [b.state.value for b in batches] == ["not_submitted"] * 3
    assert sum(b.request_count for b in batches) == 10
    counts = await store.ledger.job_counts(job.id)
    assert counts == {"pending": 10}
    carried = [len(await store.ledger.requests_of(b.id)) for b in batches]
    assert carried == [b.request_count for b in batches]


async def test_the_same_key_returns_the_same_job(store: Store) -> None:
    """Submitting the same key and content again finds the first Job."""
    first = await make_job(store, key="k-same")
    again = await make_job(store, key="k-same")
    assert again.id == first.id
    assert len(await store.batches.for_job(first.id)) == 1


async def test_the_same_key_with_other_content_is_a_conflict(store: Store) -> None:
    """A key reused for different content is a clear error, never a new job."""
    await make_job(store, key="k-conflict", fingerprint="a" * 64)
    with pytest.raises(KeyConflict, match="k-conflict"):
        await make_job(store, key="k-conflict", fingerprint="b" * 64)


async def test_concurrent_creates_of_one_key_make_one_job(store: Store) -> None:
    """Twenty concurrent callers with one key all get the same single Job."""
    jobs = await asyncio.gather(*(make_job(store, key="k-race") for _ in range(20)))
    assert len({j.id for j in jobs}) == 1
    listed = [j for j in await store.jobs.list() if j.key == "k-race"]
    assert len(listed) == 1


async def test_a_job_is_found_by_id_or_by_key(store: Store) -> None:
    """Wherever a command takes JOB, the id and the key both work."""
    job = await make_job(store, key="k-lookup")
    assert (await store.jobs.get(job.id)).id == job.id
    assert (await store.jobs.get("k-lookup")).id == job.id
    with pytest.raises(NotFound):
        await store.jobs.get("nope")


async def test_a_key_equal_to_another_jobs_id_never_shadows_that_job(
    store: Store, clock: FakeClock
) -> None:
    """Ids are looked up before keys: a (legacy) key that copies another job's id finds
    the job with that id, even when the key's job is newer, and that job is still found
    by its own id."""
    first = await make_job(store, key="k-first")
    clock.advance(60)
    clash = await make_job(store, key=first.id, fingerprint="c" * 64)
    assert (await store.jobs.get(first.id)).id == first.id
    assert (await store.jobs.get(clash.id)).id == clash.id
