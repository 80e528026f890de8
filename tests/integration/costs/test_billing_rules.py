"""Each vendor's billing rules, through the official SDKs against the simulator:
Anthropic bills succeeded requests only; OpenAI bills completed requests, also in
expired and cancelled batches."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from batchkiln.costs import batch_cost
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.simulator import Faults
from batchkiln.store.tables import costs, results

from .conftest import MODELS, Env, write_requests

NO_RETRY = JobOptions(retry=RetryPolicy(auto_retry=False))


async def first_batch_cost_and_results(
    env: Env, job_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    batch = min(await env.store.batches.for_job(job_id), key=lambda b: b.attempt)
    async with env.store.engine.connect() as conn:
        cost = (await conn.execute(select(costs).where(costs.c.batch_id == batch.id))).mappings()
        rows = await conn.execute(select(results).where(results.c.batch_id == batch.id))
        return dict(cost.one()), [dict(r) for r in rows.mappings()]


async def run_past_the_window(env: Env, job_id: str) -> None:
    """Submit, jump past the 24 h window in one step, then finish (no day of polling)."""
    await env.kiln.run_once(job_id=job_id)
    env.clock.advance(25 * 3600)
    await env.kiln.run_until_done(job_id)


def succeeded_usage(rows: list[dict[str, Any]]) -> dict[str, int]:
    done = [r for r in rows if r["outcome"] == "succeeded"]
    return {
        "billed_requests": len(done),
        "input_tokens": sum(r["input_tokens"] for r in done),
        "cached_input_tokens": sum(r["cached_input_tokens"] for r in done),
        "output_tokens": sum(r["output_tokens"] for r in done),
    }


async def test_anthropic_bills_neither_errored_nor_expired_requests(env: Env) -> None:
    """An expired Anthropic batch with errors: only the succeeded requests are costed."""
    env.sim.faults = Faults(expire=True, expire_finished_share=0.6, permanent_rate=0.3)
    path = write_requests(env.tmp / "in.jsonl", 40, vendor="anthropic")
    job = (
        await env.kiln.submit(
            path, provider="anthropic", model=MODELS["anthropic"], options=NO_RETRY
        )
    ).job
    await run_past_the_window(env, job.id)
    cost, rows = await first_batch_cost_and_results(env, job.id)
    outcomes = {r["outcome"] for r in rows}
    assert {"succeeded", "errored", "expired"} <= outcomes
    assert all(r["billed"] == 0 for r in rows if r["outcome"] != "succeeded")
    expected = succeeded_usage(rows)
    assert 0 < expected["billed_requests"] < 40
    assert {k: cost[k] for k in expected} == expected
    assert cost["cost_usd"] == pytest.approx(
        batch_cost("anthropic", MODELS["anthropic"], expected)["cost_usd"]
    )


async def test_openai_bills_the_completed_requests_of_an_expired_batch(env: Env) -> None:
    """An expired OpenAI batch: what finished in the window is billed, the rest is not."""
    env.sim.faults = Faults(expire=True, expire_finished_share=0.5)
    path = write_requests(env.tmp / "in.jsonl", 30)
    job = (
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], options=NO_RETRY)
    ).job
    await run_past_the_window(env, job.id)
    cost, rows = await first_batch_cost_and_results(env, job.id)
    expected = succeeded_usage(rows)
    assert 0 < expected["billed_requests"] < 30
    assert any(r["outcome"] == "expired" and r["billed"] == 0 for r in rows)
    assert {k: cost[k] for k in expected} == expected
    assert cost["cost_usd"] > 0


async def test_openai_bills_the_completed_requests_of_a_cancelled_batch(env: Env) -> None:
    """Cancelled mid-run: the requests that completed before the cancel are billed."""
    env.sim.faults = Faults(processing_seconds=1000, cancel_seconds=60)
    path = write_requests(env.tmp / "in.jsonl", 20)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    for _ in range(20):
        await env.kiln.run_once(job_id=job.id)
        (batch,) = await env.store.batches.for_job(job.id)
        if batch.vendor_succeeded:
            break
        env.clock.advance(60)
    assert batch.vendor_succeeded, "no request finished before the cancel"
    await env.kiln.cancel(job.id)
    await env.kiln.run_until_done(job.id)
    cost, rows = await first_batch_cost_and_results(env, job.id)
    expected = succeeded_usage(rows)
    assert 0 < expected["billed_requests"] < 20
    assert {k: cost[k] for k in expected} == expected
    assert cost["cost_usd"] > 0


async def test_an_openai_request_that_errored_is_not_billed(env: Env) -> None:
    """Permanent per-request errors in a finished batch carry no cost."""
    env.sim.faults = Faults(permanent_rate=0.5)
    path = write_requests(env.tmp / "in.jsonl", 20)
    job = (
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], options=NO_RETRY)
    ).job
    await env.kiln.run_until_done(job.id)
    cost, rows = await first_batch_cost_and_results(env, job.id)
    assert any(r["outcome"] == "errored" for r in rows)
    assert cost["billed_requests"] == sum(1 for r in rows if r["outcome"] == "succeeded")
