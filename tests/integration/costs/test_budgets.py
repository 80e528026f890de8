"""Budgets that block: a submission or retry over a limit never reaches the vendor."""

from __future__ import annotations

import pytest

from batchkiln.costs import estimate_file
from batchkiln.engine.policy import JobOptions
from batchkiln.errors import BudgetExceeded
from batchkiln.simulator import Faults
from batchkiln.store import NotFound

from .conftest import MODELS, Env, write_requests

VENDORS = ["openai", "anthropic", "gemini"]


def estimate_of(env: Env, n: int, vendor: str, name: str = "in.jsonl") -> float:
    path = write_requests(env.tmp / name, n, vendor=vendor)
    endpoint = {"anthropic": "/v1/messages", "gemini": "generateContent"}.get(
        vendor, "/v1/chat/completions"
    )
    total, _ = estimate_file(
        path, provider=vendor, model=MODELS[vendor], endpoint=endpoint, mode="approx"
    )
    assert total.cost_usd is not None
    return total.cost_usd


async def refusals(env: Env) -> list[dict[str, object]]:
    return [e.data or {} async for e in env.store.audit.stream() if e.kind == "budget.refused"]


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_job_over_its_budget_is_refused_before_any_vendor_call(
    env: Env, vendor: str
) -> None:
    """Estimate over --budget: BudgetExceeded with the numbers, no Job, no vendor call."""
    estimate = estimate_of(env, 20, vendor)
    with pytest.raises(BudgetExceeded) as refused:
        await env.kiln.submit(
            env.tmp / "in.jsonl",
            provider=vendor,
            model=MODELS[vendor],
            key="too-dear",
            options=JobOptions(budget_usd=estimate * 0.9),
        )
    assert f"${estimate:,.4f}" in str(refused.value)
    assert env.sim.counters.batches_created == 0
    assert env.sim.counters.to_json()["calls"] == {}
    with pytest.raises(NotFound):
        await env.store.jobs.get("too-dear")
    (event,) = await refusals(env)
    assert event["key"] == "too-dear" and event["scope"] == "job"
    assert event["estimate_usd"] == pytest.approx(estimate)
    assert event["limit_usd"] == pytest.approx(estimate * 0.9)


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_job_within_its_budget_runs_and_costs_no_more_than_it(
    env: Env, vendor: str
) -> None:
    """Budget at the estimate: admitted, done, and the actual cost is inside it."""
    estimate = estimate_of(env, 12, vendor)
    job = (
        await env.kiln.submit(
            env.tmp / "in.jsonl",
            provider=vendor,
            model=MODELS[vendor],
            options=JobOptions(budget_usd=estimate),
        )
    ).job
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 12}
    assert 0 < await env.store.costs.spent(job_id=job.id) <= estimate


async def test_the_global_budget_counts_running_jobs_and_spend_in_the_period(
    env: Env,
) -> None:
    """A second job fits only once the first has finished below its estimate."""
    estimate = estimate_of(env, 10, "openai")
    env.set_global_budget(estimate * 1.5)
    first = (
        await env.kiln.submit(env.tmp / "in.jsonl", provider="openai", model="gpt-4o-mini")
    ).job
    write_requests(env.tmp / "b.jsonl", 10, vendor="openai")
    other = {"provider": "openai", "model": "gpt-4o-mini", "key": "second"}
    with pytest.raises(BudgetExceeded, match="global budget for this month"):
        await env.kiln.submit(env.tmp / "b.jsonl", **other)  # estimate + estimate > 1.5x
    await env.kiln.run_until_done(first.id)
    spent = await env.store.costs.spent(job_id=first.id)
    assert spent < estimate * 0.5  # actual output is well under max_tokens
    second = await env.kiln.submit(env.tmp / "b.jsonl", **other)
    assert second.created
    (event,) = await refusals(env)
    assert event["committed_usd"] == pytest.approx(estimate)


async def test_spend_from_an_earlier_period_does_not_count(
    env: Env,
) -> None:
    """A daily budget spent yesterday admits the same job again today."""
    estimate = estimate_of(env, 10, "openai")
    env.set_global_budget(estimate * 1.2, "day")
    first = (
        await env.kiln.submit(env.tmp / "in.jsonl", provider="openai", model="gpt-4o-mini")
    ).job
    await env.kiln.run_until_done(first.id)
    write_requests(env.tmp / "b.jsonl", 10, vendor="openai")
    # Today: spent (about a third of the estimate) + a new estimate is over 1.2x.
    with pytest.raises(BudgetExceeded):
        await env.kiln.submit(env.tmp / "b.jsonl", provider="openai", model="gpt-4o-mini", key="b")
    env.clock.advance(86400)
    assert (
        await env.kiln.submit(env.tmp / "b.jsonl", provider="openai", model="gpt-4o-mini", key="b")
    ).created


async def test_a_retry_over_the_budget_never_reaches_the_vendor(
    env: Env,
) -> None:
    """The limit is lowered mid-job: the retry child is refused, audited, and not sent."""
    env.sim.faults = Faults(fail_ids={"2": "timeout", "5": "overloaded"})
    estimate = estimate_of(env, 10, "openai")
    job = (await env.kiln.submit(env.tmp / "in.jsonl", provider="openai", model="gpt-4o-mini")).job
    env.set_global_budget(estimate * 0.2)  # the team cut the budget (and restarted)
    status = await env.kiln.run_until_done(job.id)
    assert env.sim.counters.batches_created == 1
    assert status.state == "awaiting_retry"
    assert status.counts == {"succeeded": 8, "pending": 2}
    (event,) = await refusals(env)
    assert event["what"] == "retry of 2 request(s)" and event["scope"] == "global"
    assert len(await env.store.batches.for_job(job.id)) == 1


async def test_a_retry_within_the_job_budget_goes_ahead_and_counts_against_it(
    env: Env,
) -> None:
    """Retries are admitted against what the job has already spent, and estimated."""
    env.sim.faults = Faults(fail_ids={"2": "timeout"})
    estimate = estimate_of(env, 10, "openai")
    job = (
        await env.kiln.submit(
            env.tmp / "in.jsonl",
            provider="openai",
            model="gpt-4o-mini",
            options=JobOptions(budget_usd=estimate),
        )
    ).job
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 10}
    assert env.sim.counters.batches_created == 2
    assert await env.store.costs.spent(job_id=job.id) <= estimate
    kinds = [e.kind for e in await env.store.audit.for_job(job.id)]
    assert kinds.count("cost.estimated") == 2  # the job, then its retry


async def test_a_model_without_a_price_is_refused_under_a_budget(env: Env) -> None:
    """An unknown price cannot be checked against a limit, so it is not waved through."""
    write_requests(env.tmp / "in.jsonl", 3)
    with pytest.raises(BudgetExceeded, match="no price for openai/gpt-9-turbo"):
        await env.kiln.submit(
            env.tmp / "in.jsonl",
            provider="openai",
            model="gpt-9-turbo",
            options=JobOptions(budget_usd=100),
        )
    assert env.sim.counters.batches_created == 0


async def test_a_model_without_a_price_runs_without_a_budget_and_costs_unknown(env: Env) -> None:
    """No budget: the job runs; its cost row says unknown (None), not zero."""
    write_requests(env.tmp / "in.jsonl", 3)
    job = (await env.kiln.submit(env.tmp / "in.jsonl", provider="openai", model="gpt-9-turbo")).job
    await env.kiln.run_until_done(job.id)
    from batchkiln.costs.report import job_cost

    report = await job_cost(env.store, job.id)
    assert report.actual.requests == 3
    assert report.actual.cost_usd is None and report.estimate.cost_usd is None
