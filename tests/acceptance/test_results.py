"""Results: manual retry, export shapes, failed batches' reasons, exhausted attempts."""

from __future__ import annotations

import orjson

from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.export import ExportFormat, iter_results, write_results
from batchkiln.simulator import Faults

from .conftest import MODELS, Env, write_requests


async def test_with_auto_retry_off_failures_wait_for_a_manual_idempotent_retry(env: Env) -> None:
    """Failures wait (job awaiting_retry); retry starts one child once, then the job ends."""
    env.sim.faults = Faults(fail_ids={"1": "timeout", "4": "overloaded"}, fail_ids_times=1)
    path = write_requests(env.tmp / "in.jsonl", 6)
    options = JobOptions(retry=RetryPolicy(auto_retry=False))
    submitted = await env.kiln.submit(
        path, provider="openai", model=MODELS["openai"], options=options
    )
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.state == "awaiting_retry"
    assert status.counts == {"succeeded": 4, "pending": 2}
    first = await env.kiln.retry(submitted.job.id)
    second = await env.kiln.retry(submitted.job.id)
    assert len(first) == 1 and second == []
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.state == "done" and status.counts == {"succeeded": 6}
    child = status.batches[-1]
    assert child.request_count == 2 and child.attempt == 2
    assert child.parent_id == status.batches[0].id


async def test_retries_stop_when_attempts_run_out(env: Env) -> None:
    """A request failing every time ends 'exhausted' after max_attempts batches."""
    env.sim.faults = Faults(fail_ids={"0": "server_error"}, fail_ids_times=0)
    path = write_requests(env.tmp / "in.jsonl", 3, vendor="anthropic")
    options = JobOptions(retry=RetryPolicy(max_attempts=3))
    submitted = await env.kiln.submit(
        path, provider="anthropic", model=MODELS["anthropic"], options=options
    )
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.counts == {"succeeded": 2, "exhausted": 1}
    assert [b.attempt for b in status.batches] == [1, 2, 3]
    assert [b.request_count for b in status.batches] == [3, 1, 1]


async def test_permanent_failures_are_not_retried(env: Env) -> None:
    """An invalid request fails for good on the first attempt."""
    env.sim.faults = Faults(fail_ids={"2": "invalid_request"}, fail_ids_times=0)
    path = write_requests(env.tmp / "in.jsonl", 4)
    submitted = await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    status = await env.kiln.run_until_done(submitted.job.id)
    assert status.counts == {"succeeded": 3, "failed": 1}
    assert len(status.batches) == 1


async def test_flat_export_is_in_input_order_with_the_attempt_that_produced_it(
    env: Env,
) -> None:
    """One record per request, user ids, outcome, response or error, and the attempt."""
    env.sim.faults = Faults(fail_ids={"1": "timeout", "2": "invalid_request"}, fail_ids_times=1)
    path = write_requests(env.tmp / "in.jsonl", 4, prefix="item-")
    submitted = await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    await env.kiln.run_until_done(submitted.job.id)
    rows = [r async for r in iter_results(env.store, submitted.job.id)]
    assert [r["custom_id"] for r in rows] == ["item-0", "item-1", "item-2", "item-3"]
    assert [r["outcome"] for r in rows] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert [r["attempt"] for r in rows] == [1, 2, 1, 1]
    assert rows[0]["response"]["choices"] and rows[0]["error"] is None
    assert rows[2]["response"] is None and rows[2]["error"]


async def test_vendor_export_keeps_the_vendors_line_shape_with_the_users_ids(
    env: Env,
) -> None:
    """Anthropic lines stay {custom_id, result}; only the custom_id is the user's."""
    path = write_requests(env.tmp / "in.jsonl", 3, vendor="anthropic", prefix="doc-")
    submitted = await env.kiln.submit(path, provider="anthropic", model=MODELS["anthropic"])
    await env.kiln.run_until_done(submitted.job.id)
    out = env.tmp / "out.jsonl"
    assert await write_results(env.store, submitted.job.id, out, ExportFormat.VENDOR) == 3
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["custom_id"] for line in lines] == ["doc-0", "doc-1", "doc-2"]
    assert all(line["result"]["type"] == "succeeded" for line in lines)


async def test_a_failed_batch_keeps_the_vendors_reasons(env: Env) -> None:
    """A validation-failed OpenAI batch stores errors.data; its requests fail with it."""
    env.sim.faults = Faults(reject_batch="invalid_json_line")
    path = write_requests(env.tmp / "in.jsonl", 3)
    submitted = await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    status = await env.kiln.run_until_done(submitted.job.id)
    (batch,) = status.batches
    assert batch.error["code"] == "invalid_json_line" and batch.error["errors"][0]["line"]
    assert status.counts == {"failed": 3}
    rows = [r async for r in iter_results(env.store, submitted.job.id)]
    assert [r["error"]["code"] for r in rows] == ["invalid_json_line"] * 3
