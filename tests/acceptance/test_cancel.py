"""Cancel as recorded intent: during submission, after a vendor batch already ended,
and across the shards of one Job (one report line per batch)."""

from __future__ import annotations

import pytest

from batchkiln import Kiln
from batchkiln.intake.sharding import PROVIDER_LIMITS, Limits
from batchkiln.lifecycle import Event, State
from batchkiln.simulator import Faults

from .conftest import MODELS, Env, write_requests
from .killing import Killed, KilledBeforeCreate


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_a_cancel_during_a_create_that_never_left_ends_cancelled_without_a_create(
    env: Env, vendor: str
) -> None:
    """Killed before the create left, then cancelled: reconciliation finds nothing and,
    once settled, the batch ends cancelled; nothing is ever sent."""
    path = write_requests(env.tmp / "in.jsonl", 4, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    doomed = Kiln(env.store, KilledBeforeCreate(env.app.providers), clock=env.clock, worker="x")
    with pytest.raises(Killed):
        await doomed.run_once(job_id=job.id)
    (report,) = await env.kiln.cancel(job.id)
    assert report.state == State.SUBMITTING and report.action == "recorded"
    env.clock.advance(doomed.lease_seconds + 1)
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"cancelled": 4}
    assert env.sim.counters.batches_created == 0
    (batch,) = status.batches
    assert batch.vendor_id is None and batch.cancel_requested_at is not None


async def test_a_cancel_after_the_intent_but_before_any_create_call_sends_nothing(
    env: Env,
) -> None:
    """Intent recorded (submitting), no create attempted yet: cancelled at once."""
    path = write_requests(env.tmp / "in.jsonl", 2)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    (batch,) = await env.store.batches.for_job(job.id)
    await env.store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
    await env.kiln.cancel(job.id)
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"cancelled": 2}
    assert env.sim.counters.batches_created == 0


async def test_cancel_of_a_job_whose_first_shard_already_ended_cancels_the_others(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vendor refuses to cancel a completed shard: that is no error; the shard is
    refreshed and ingested, the other shard is still cancelled, one line per batch."""
    monkeypatch.setitem(PROVIDER_LIMITS, "openai", Limits(requests=3, bytes=200_000_000))
    path = write_requests(env.tmp / "in.jsonl", 6)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    first, second = await env.store.batches.for_job(job.id)
    env.sim.set_batch_faults(second.tag, Faults(processing_seconds=20_000))
    await env.kiln.run_once(job_id=job.id)  # both created
    env.clock.advance(600)  # the first has completed at the vendor; we have not looked
    reports = await env.kiln.cancel(job.id)
    by_batch = {r.batch_id: r for r in reports}
    assert by_batch[first.id].action == "already_ended", by_batch[first.id]
    assert by_batch[second.id].action == "cancelling", by_batch[second.id]
    assert (await env.store.batches.get(first.id)).state == State.COMPLETED
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 3, "cancelled": 3}
    assert env.sim.counters.batches_created == 2  # no retry of the cancelled shard
