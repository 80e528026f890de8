"""Reconciliation after an unknown create outcome, including Anthropic's ambiguous case."""

from __future__ import annotations

import pytest

from batchkiln.lifecycle import Event, State
from batchkiln.providers.base import CreateSpec, WireRequest
from batchkiln.simulator import Faults

from .conftest import MODELS, Env, write_requests


async def _decoy(env: Env, size: int) -> str:
    """Someone else's Anthropic batch of the same size, created in our window."""
    provider = env.kiln.provider("anthropic")
    body = {
        "model": MODELS["anthropic"],
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "not ours"}],
    }
    spec = CreateSpec(
        batch_key="other",
        tag="zzzzzzzz",
        model=MODELS["anthropic"],
        endpoint="/v1/messages",
        requests=[WireRequest(f"zzzzzzzz-{i}", body) for i in range(size)],
    )
    return (await provider.create(spec)).vendor_id


async def test_two_same_size_anthropic_candidates_are_never_resent_and_resolve_by_tag(
    env: Env,
) -> None:
    """Two unclaimed batches match window and size: adopt neither, resend nothing, and
    once they end adopt the one whose result custom_ids carry our tag."""
    decoy = await _decoy(env, 4)
    env.sim.faults = Faults(drop_create="cut", drop_create_count=1)
    path = write_requests(env.tmp / "in.jsonl", 4, vendor="anthropic")
    submitted = await env.kiln.submit(path, provider="anthropic", model=MODELS["anthropic"])
    await env.kiln.run_once()  # create: accepted by the vendor, answer lost
    env.clock.advance(61)
    await env.kiln.run_once()  # reconcile: two candidates
    (batch,) = await env.store.batches.for_job(submitted.job.id)
    assert batch.state == State.SUBMITTING and batch.vendor_id is None
    kinds = [e.kind for e in await env.store.audit.for_job(submitted.job.id)]
    assert "submit.ambiguous" in kinds

    status = await env.kiln.run_until_done(submitted.job.id)
    (batch,) = status.batches
    assert env.sim.counters.batches_created == 2  # the decoy and ours; nothing resent
    assert batch.vendor_id is not None and batch.vendor_id != decoy
    assert status.counts == {"succeeded": 4}
    events = await env.store.audit.for_job(submitted.job.id)
    assert [e.kind for e in events].count("submit.attempt") == 1
    assert not [e for e in events if e.kind == "results.foreign"]


async def test_a_single_anthropic_candidate_is_adopted_and_confirmed_by_its_results(
    env: Env,
) -> None:
    """One candidate in the window is adopted at once; its results carry our tag."""
    env.sim.faults = Faults(drop_create="500", drop_create_count=1)
    path = write_requests(env.tmp / "in.jsonl", 3, vendor="anthropic")
    submitted = await env.kiln.submit(path, provider="anthropic", model=MODELS["anthropic"])
    status = await env.kiln.run_until_done(submitted.job.id)
    assert env.sim.counters.batches_created == 1
    assert status.counts == {"succeeded": 3}
    events = await env.store.audit.for_job(submitted.job.id)
    assert not [e for e in events if e.kind == "results.foreign"]


async def test_an_adopted_batch_that_is_not_ours_is_disowned_and_its_requests_resent(
    env: Env,
) -> None:
    """If the only same-size candidate was someone else's, it was adopted provisionally;
    its results show another tag, so it is disowned (nothing of it ingested) and our
    requests go out again on the same batch, using no attempt."""
    path = write_requests(env.tmp / "in.jsonl", 3, vendor="anthropic")
    submitted = await env.kiln.submit(path, provider="anthropic", model=MODELS["anthropic"])
    (batch,) = await env.store.batches.for_job(submitted.job.id)
    # Simulate a lost create: the intent is recorded and one attempt was made, but the
    # vendor only holds a stranger's batch of the same size.
    env.sim.faults = Faults()
    await _decoy(env, 3)
    await env.store.batches.transition(
        batch,
        State.NOT_SUBMITTED,
        Event.SUBMIT,
        values={
            "submit_started_at": env.clock.now(),
            "submit_attempts": 1,
            "last_submit_at": env.clock.now(),
        },
    )
    status = await env.kiln.run_until_done(submitted.job.id)
    events = await env.store.audit.for_job(submitted.job.id)
    assert not [e for e in events if e.kind == "results.foreign"]
    assert [e.kind for e in events].count("batch.disowned") == 1
    assert status.counts == {"succeeded": 3}
    (final,) = status.batches
    assert final.attempt == 1 and final.foreign_vendor_ids and final.provisional == 0


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
@pytest.mark.parametrize("drop", ["cut", "500"])
async def test_a_dropped_create_the_vendor_lists_is_recovered_within_five_seconds(
    env: Env, vendor: str, drop: str
) -> None:
    """Reconciliation runs at once after an unknown outcome (the settle period only
    gates a resend): the vendor lists the batch, so it is adopted within 5 s."""
    env.sim.faults = Faults(drop_create=drop, drop_create_count=1)  # type: ignore[arg-type]
    path = write_requests(env.tmp / "in.jsonl", 3, vendor=vendor)
    submitted = await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.counts == {"succeeded": 3}
    assert env.sim.counters.batches_created == 1
    events = await env.store.audit.for_job(submitted.job.id)
    unknown = next(e for e in events if e.kind == "submit.unknown")
    accepted = next(e for e in events if e.kind == "batch.accepted")
    assert accepted.at - unknown.at <= 5.0, (unknown.at, accepted.at)
