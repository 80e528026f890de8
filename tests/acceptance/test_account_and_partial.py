"""Failures as the vendors really send them: account failures held for a manual retry
after a top-up, and a batch that ran with nothing succeeded is partial, not failed."""

from __future__ import annotations

import pytest

from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.simulator import Faults

from .conftest import MODELS, Env, write_requests


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_account_failures_wait_for_retry_class_account(env: Env, vendor: str) -> None:
    """A credit/quota failure is neither retried automatically nor failed for good: the
    job waits; `retry` of retryable ones starts nothing; `retry --class account` does."""
    env.sim.faults = Faults(
        fail_ids={"1": "credit_balance", "3": "credit_balance"}, fail_ids_times=1
    )
    path = write_requests(env.tmp / "in.jsonl", 5, vendor=vendor)
    submitted = await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.state == "awaiting_retry"
    assert status.counts == {"succeeded": 3, "pending": 2}
    assert len(status.batches) == 1  # no automatic retry child
    assert await env.kiln.retry(submitted.job.id) == []  # not a retryable failure
    started = await env.kiln.retry(submitted.job.id, ["account"])
    assert len(started) == 1 and await env.kiln.retry(submitted.job.id, ["account"]) == []
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.state == "done" and status.counts == {"succeeded": 5}
    assert [b.request_count for b in status.batches] == [5, 2]


async def test_account_retry_is_not_bounded_by_max_attempts(env: Env) -> None:
    """A request held by an account failure on its last attempt can still go again."""
    env.sim.faults = Faults(fail_ids={"0": "credit_balance"}, fail_ids_times=1)
    path = write_requests(env.tmp / "in.jsonl", 2)
    options = JobOptions(retry=RetryPolicy(max_attempts=1))
    submitted = await env.kiln.submit(
        path, provider="openai", model=MODELS["openai"], options=options
    )
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.counts == {"succeeded": 1, "pending": 1}
    assert len(await env.kiln.retry(submitted.job.id, ["account"])) == 1
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.state == "done" and status.counts == {"succeeded": 2}


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_a_batch_with_nothing_succeeded_is_partial_and_retried(env: Env, vendor: str) -> None:
    """Every request failed retryably: the batch ran, so it ends `partial` (0 succeeded),
    never `failed`, and its requests go to a retry child like any partial batch's."""
    env.sim.faults = Faults(
        fail_ids={"0": "server_error", "1": "timeout", "2": "overloaded"}, fail_ids_times=1
    )
    path = write_requests(env.tmp / "in.jsonl", 3, vendor=vendor)
    submitted = await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.state == "done" and status.counts == {"succeeded": 3}
    first = status.batches[0]
    events = await env.store.audit.for_job(submitted.job.id)
    reached = [e.to_state for e in events if e.batch_id == first.id and e.to_state]
    assert "partial" in reached and "failed" not in reached
    ingested = next(e for e in events if e.batch_id == first.id and e.kind == "batch.ingested")
    assert ingested.data["ended_as"] == "partial" and ingested.data["retrying"] == 3
