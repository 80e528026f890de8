"""Exactly-once submission (DESIGN.md invariant 2), read from the simulator's own counters."""

from __future__ import annotations

import asyncio

import pytest

from batchkiln.lifecycle import State
from batchkiln.simulator import Faults

from .conftest import MODELS, Env, write_requests

VENDORS = ["openai", "anthropic", "gemini"]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("drop", ["cut", "500"])
async def test_accept_then_drop_makes_one_vendor_batch_and_the_job_completes(
    env: Env, vendor: str, drop: str
) -> None:
    """The vendor commits the batch, the answer is lost; reconciliation adopts it."""
    env.sim.faults = Faults(drop_create=drop, drop_create_count=1)
    path = write_requests(env.tmp / "in.jsonl", 12, vendor=vendor)
    submitted = await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])
    status = await env.kiln.run_until_done(submitted.job.id)
    assert env.sim.counters.batches_created == 1
    assert status.state == "done"
    assert status.counts == {"succeeded": 12}
    kinds = [e.kind for e in await env.store.audit.for_job(submitted.job.id)]
    assert "submit.unknown" in kinds
    assert kinds.count("submit.attempt") == 1  # reconciled, never resent


@pytest.mark.parametrize("vendor", VENDORS)
async def test_twenty_concurrent_submits_of_one_key_make_one_vendor_batch(
    env: Env, vendor: str
) -> None:
    """Twenty callers, each with its own engine, one key: one Job, one vendor batch."""
    path = write_requests(env.tmp / "in.jsonl", 5, vendor=vendor)
    kilns = [env.new_kiln(f"w{i}") for i in range(20)]

    async def caller(i: int) -> str:
        submitted = await kilns[i].submit(path, provider=vendor, model=MODELS[vendor], key="k1")
        await kilns[i].run_once(job_id=submitted.job.id)
        return submitted.job.id

    job_ids = await asyncio.gather(*(caller(i) for i in range(20)))
    assert len(set(job_ids)) == 1
    status = await env.kiln.run_until_done(job_ids[0])
    assert env.sim.counters.batches_created == 1
    assert status.counts == {"succeeded": 5}


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_rate_limited_create_waits_for_retry_after_then_makes_one_batch(
    env: Env, vendor: str
) -> None:
    """A 429 with retry-after on create: we wait that long, then exactly one batch."""
    env.sim.faults = Faults(rate_limit_create=1, retry_after_seconds=90)
    path = write_requests(env.tmp / "in.jsonl", 3, vendor=vendor)
    submitted = await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])
    t0 = env.clock.now()
    await env.kiln.run_once(job_id=submitted.job.id)
    (batch,) = await env.store.batches.for_job(submitted.job.id)
    assert batch.state == State.SUBMITTING
    assert batch.next_check_at is not None and batch.next_check_at - t0 >= 90
    status = await env.kiln.run_until_done(submitted.job.id)
    assert env.sim.counters.batches_created == 1
    assert status.counts == {"succeeded": 3}


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_permanent_rejection_fails_with_the_vendor_message_and_is_not_retried(
    env: Env, vendor: str
) -> None:
    """A definite 400 on create: the batch is failed with the vendor's words, no retry."""
    env.sim.faults = Faults(reject_create="this organization cannot create batches")
    path = write_requests(env.tmp / "in.jsonl", 3, vendor=vendor)
    submitted = await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])
    status = await env.kiln.run_until_done(submitted.job.id)
    (batch,) = status.batches
    assert env.sim.counters.batches_created == 0
    assert "this organization cannot create batches" in batch.error["message"]
    assert status.counts == {"failed": 3}
    kinds = [e.kind for e in await env.store.audit.for_job(submitted.job.id)]
    assert kinds.count("submit.attempt") == 1
