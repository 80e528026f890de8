"""Concurrent submitters never overshoot the global budget: admission (the check, the
Job and its estimate) is serialised across engines, on both databases."""

from __future__ import annotations

import asyncio

from batchkiln import Kiln
from batchkiln.costs.budget import GlobalBudget
from batchkiln.engine.budget import BudgetGuard
from batchkiln.errors import BudgetExceeded

from .conftest import MODELS, Env, write_requests


async def test_twenty_concurrent_submitters_under_a_budget_for_five_admit_exactly_five(
    env: Env,
) -> None:
    """20 engines (each its own budget guard, as 20 processes would have) submit at once;
    the budget fits 5 jobs: exactly 5 are admitted, 15 refused, the budget holds."""
    path = write_requests(env.tmp / "in.jsonl", 20)
    probe = await env.kiln.submit(path, provider="openai", model=MODELS["openai"], key="probe")
    (estimate,) = await env.store.costs.estimates_for_job(probe.job.id)
    assert estimate.cost_usd
    one = estimate.cost_usd
    budget = GlobalBudget(one * 6.5, "month")  # the probe's exposure + room for 5 more

    def engine(i: int) -> Kiln:
        guard = BudgetGuard(env.store, env.clock, budget)  # nothing shared in-process
        return Kiln(env.store, env.app.providers, clock=env.clock, worker=f"w{i}", budget=guard)

    async def submit(i: int) -> bool:
        try:
            await engine(i).submit(path, provider="openai", model=MODELS["openai"], key=f"k{i}")
        except BudgetExceeded:
            return False
        return True

    admitted = await asyncio.gather(*(submit(i) for i in range(20)))
    assert sum(admitted) == 5, admitted
    exposure = await env.store.costs.live_exposure()
    assert exposure <= budget.limit_usd + 1e-9
    assert len(await env.store.jobs.list(limit=100)) == 6  # the probe and the five
