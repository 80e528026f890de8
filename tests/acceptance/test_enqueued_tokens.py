"""OpenAI's enqueued-token limit: a `token_limit_exceeded` rejection is transient (the
requests go again as a child once capacity frees, using no attempt), and batches that
would pass a known limit wait, not_submitted, saying why."""

from __future__ import annotations

import random

from batchkiln import Kiln
from batchkiln.cli import views
from batchkiln.engine.capacity import WAITING
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.lifecycle import State
from batchkiln.settings import Settings
from batchkiln.simulator import Faults

from .conftest import MODELS, Env, write_requests

MODEL = MODELS["openai"]


def _kiln(env: Env, limits: dict[str, int] | None = None) -> Kiln:
    return Kiln(
        env.store,
        env.app.providers,
        clock=env.clock,
        worker="w-tokens",
        rng=random.Random(0),
        enqueued_limits=limits,
    )


async def _tokens(env: Env, job_id: str) -> int:
    (estimate,) = await env.store.costs.estimates_for_job(job_id)
    return int(estimate.input_tokens)


async def test_a_batch_over_the_configured_limit_waits_for_capacity_then_goes(env: Env) -> None:
    """Limit fits one job's tokens, not two: the second stays not_submitted with a
    reason (one audit event), `kiln status` says so, and it goes once the first ends."""
    probe = _kiln(env)
    first = (
        await probe.submit(write_requests(env.tmp / "a.jsonl", 8), provider="openai", model=MODEL)
    ).job
    second = (
        await probe.submit(
            write_requests(env.tmp / "b.jsonl", 8, prefix="b"), provider="openai", model=MODEL
        )
    ).job
    limit = int(await _tokens(env, first.id) * 1.5)
    kiln = _kiln(env, {MODEL: limit})
    await kiln.run_once(job_id=first.id)
    await kiln.run_once(job_id=second.id)
    (held,) = await env.store.batches.for_job(second.id)
    assert held.state == State.NOT_SUBMITTED and held.hold_reason
    assert held.hold_reason.startswith(WAITING) and f"{limit:,}" in held.hold_reason
    status = await kiln.status(second.id)
    assert status.waiting == WAITING
    assert views.status_json(status)["waiting"] == WAITING
    assert env.sim.counters.batches_created == 1

    done_first = await kiln.run_until_done(first.id)
    done_second = await kiln.run_until_done(second.id)
    assert done_first.counts == {"succeeded": 8} and done_second.counts == {"succeeded": 8}
    (a,) = done_first.batches
    (b,) = done_second.batches
    assert b.vendor_created_at is not None and a.vendor_ended_at is not None
    assert b.vendor_created_at >= a.vendor_ended_at  # it waited for the first to finish
    kinds = [e.kind for e in await env.store.audit.for_job(second.id)]
    assert kinds.count("submit.held") == 1


async def test_a_token_limit_rejection_goes_again_as_a_child_and_uses_no_attempt(
    env: Env,
) -> None:
    """The vendor fails the second batch with `token_limit_exceeded`: the limit is
    learned, the requests go again as a child once capacity frees, and with one attempt
    allowed they still all succeed (none exhausted, the job exits 0)."""
    kiln = _kiln(env)
    first = (
        await kiln.submit(write_requests(env.tmp / "a.jsonl", 8), provider="openai", model=MODEL)
    ).job
    await kiln.run_once(job_id=first.id)
    vendor_tokens = env.sim.enqueued_openai_tokens(MODEL, env.clock.now())
    limit = int(vendor_tokens * 1.5)
    env.sim.faults = Faults(enqueued_token_limit=limit)
    one_attempt = JobOptions(retry=RetryPolicy(max_attempts=1))
    second = (
        await kiln.submit(
            write_requests(env.tmp / "b.jsonl", 8, prefix="b"),
            provider="openai",
            model=MODEL,
            options=one_attempt,
        )
    ).job
    for _ in range(200):  # a worker: every due batch of every job
        await kiln.run_once()
        status = await kiln.status(second.id)
        if status.state == "done":
            break
        due = await env.store.batches.next_due_at()
        assert due is not None
        env.clock.set(max(due, env.clock.now()))
    assert status.counts == {"succeeded": 8}
    rejected, child = status.batches
    assert rejected.error and "token_limit_exceeded" in str(rejected.error)
    assert child.parent_id == rejected.id and child.request_count == 8
    assert await env.store.capacity.learned("openai", MODEL) == limit
    kinds = [e.kind for e in await env.store.audit.for_job(second.id)]
    assert "capacity.learned" in kinds
    assert (await kiln.run_until_done(first.id)).counts == {"succeeded": 8}


def test_limits_are_read_from_kiln_enqueued_token_limits() -> None:
    """KILN_ENQUEUED_TOKEN_LIMITS is MODEL=TOKENS pairs, thousands separators allowed."""
    settings = Settings.load(enqueued_token_limits="gpt-4o-mini=2,000,000 gpt-4o=900000")
    assert settings.enqueued_token_limits == {"gpt-4o-mini": 2_000_000, "gpt-4o": 900_000}
