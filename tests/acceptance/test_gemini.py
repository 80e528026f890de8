"""Gemini end to end on the simulator, the cases peculiar to it: reconciliation by the
input file recorded before create, the displayName-only ambiguous case, results out of
order, keys missing from inline responses, expiry with no results, and costs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from batchkiln.engine.kiln import Kiln
from batchkiln.lifecycle import Event, State
from batchkiln.providers import GeminiProvider
from batchkiln.providers.base import CreateSpec, WireRequest
from batchkiln.simulator import Faults
from batchkiln.simulator.gemini_batches import input_tokens
from batchkiln.store.tables import costs, results

from .conftest import MODELS, Env, write_requests

MODEL = MODELS["gemini"]


def distinct_requests(path: Path, n: int) -> Path:
    """Requests whose prompts all differ in length, so each result's promptTokenCount
    says which request it answers."""
    with path.open("wb") as out:
        for i in range(n):
            request = {"contents": [{"role": "user", "parts": [{"text": "word " * (4 * i + 1)}]}]}
            out.write(orjson.dumps({"key": f"q{i}", "request": request}) + b"\n")
    return path


async def stored(env: Env, job_id: str) -> dict[int, dict[str, Any]]:
    async with env.store.engine.connect() as conn:
        rows = (await conn.execute(select(results).where(results.c.job_id == job_id))).all()
    return {row.seq: row._asdict() for row in rows}


async def kinds(env: Env, job_id: str) -> list[str]:
    return [e.kind for e in await env.store.audit.for_job(job_id)]


async def test_a_dropped_create_is_reconciled_by_the_file_recorded_before_it(env: Env) -> None:
    """Accept-then-drop: the input file was stored before the create, and the one vendor
    batch naming it is adopted; nothing is sent twice."""
    env.sim.faults = Faults(drop_create="cut", drop_create_count=1)
    path = write_requests(env.tmp / "in.jsonl", 6, vendor="gemini")
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    status = await env.kiln.run_until_done(job.id)
    (batch,) = status.batches
    (vendor,) = env.sim.gemini_batches.values()
    assert batch.vendor_id == vendor.name and batch.input_file == vendor.input_file
    assert status.counts == {"succeeded": 6}
    seen = await kinds(env, job.id)
    assert seen.index("submit.input_file") < seen.index("submit.unknown")
    assert seen.count("submit.attempt") == 1
    events = await env.store.audit.for_job(job.id)
    assert any("reconciled" in (e.reason or "") for e in events)


async def _same_name_batch(env: Env, tag: str, key_tag: str, size: int) -> str:
    """A batch carrying displayName kiln-<tag>, its keys prefixed `key_tag`, made from a
    file that is not the one our batch row recorded."""
    provider = env.kiln.provider("gemini")
    body = {"contents": [{"role": "user", "parts": [{"text": "q"}]}]}
    spec = CreateSpec(
        batch_key=f"x-{key_tag}",
        tag=tag,
        model=MODEL,
        endpoint="generateContent",
        requests=[WireRequest(f"{key_tag}-{i}", body) for i in range(size)],
    )
    return (await provider.create(spec)).vendor_id


async def test_two_batches_with_only_our_display_name_are_never_resent_and_resolve_by_keys(
    env: Env,
) -> None:
    """No recorded file, two batches carry our displayName and size: adopt neither,
    resend nothing, and adopt the one whose result keys carry our tag once they end."""
    path = write_requests(env.tmp / "in.jsonl", 3, vendor="gemini")
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    (batch,) = await env.store.batches.for_job(job.id)
    decoy = await _same_name_batch(env, batch.tag, "zzzzzzzz", 3)
    ours = await _same_name_batch(env, batch.tag, batch.tag, 3)
    await env.store.batches.transition(  # a create whose outcome was lost, file unknown
        batch,
        State.NOT_SUBMITTED,
        Event.SUBMIT,
        values={
            "submit_started_at": env.clock.now() - 10,
            "submit_attempts": 1,
            "last_submit_at": env.clock.now() - 10,
        },
    )
    await env.kiln.run_once(job_id=job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    assert batch.state == State.SUBMITTING and batch.vendor_id is None
    assert "submit.ambiguous" in await kinds(env, job.id)
    status = await env.kiln.run_until_done(job.id)
    (batch,) = status.batches
    assert batch.vendor_id == ours != decoy
    assert env.sim.counters.created_by_vendor["gemini"] == 2  # nothing resent
    assert status.counts == {"succeeded": 3}
    assert "results.foreign" not in await kinds(env, job.id)


async def test_results_out_of_order_each_land_on_their_own_request(env: Env) -> None:
    """With results in finish order, each stored result is the answer to its request
    (its prompt token count matches that request's prompt)."""
    env.sim.faults = Faults(out_of_order=True)
    path = distinct_requests(env.tmp / "in.jsonl", 15)
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 15}
    (vendor,) = env.sim.gemini_batches.values()
    assert vendor.faults.out_of_order
    rows = await stored(env, job.id)
    for seq, row in rows.items():
        request = {"contents": [{"role": "user", "parts": [{"text": "word " * (4 * seq + 1)}]}]}
        assert row["input_tokens"] == input_tokens(request), seq
        assert orjson.loads(row["raw"])["key"].endswith(f"-{seq}")


@pytest.fixture
async def inline_kiln(env: Env) -> Any:
    """An engine whose Gemini adapter sends requests inline (the mode where keys ride in
    the echoed metadata that users have seen go missing)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=env.sim.app)) as http:
        provider = GeminiProvider(
            http_client=http, base_url=env.sim.gemini_base_url, api_key="k", mode="inline"
        )
        yield Kiln(
            env.store,
            {"gemini": provider},
            clock=env.clock,
            worker="inline",
            rng=random.Random(0),
        )
        await provider.aclose()


async def test_inline_responses_missing_their_key_are_reported_and_retried_not_guessed(
    env: Env, inline_kiln: Kiln
) -> None:
    """Keyless inline responses are reported as foreign and their requests go to a retry
    child; every request that succeeds got its own answer."""
    env.sim.faults = Faults(drop_inline_keys=0.3)
    path = distinct_requests(env.tmp / "in.jsonl", 20)
    job = (await inline_kiln.submit(path, provider="gemini", model=MODEL)).job
    status = await inline_kiln.run_until_done(job.id)
    made = list(env.sim.gemini_batches.values())
    foreign = (await kinds(env, job.id)).count("results.foreign")
    assert foreign > 0 and len(made) >= 2 and all(b.inline for b in made)  # a retry child
    assert len(status.batches) == len(made)
    assert sum(status.counts.values()) == 20
    assert set(status.counts) <= {"succeeded", "exhausted"}
    for seq, row in (await stored(env, job.id)).items():
        if row["outcome"] == "succeeded":
            request = {"contents": [{"role": "user", "parts": [{"text": "word " * (4 * seq + 1)}]}]}
            assert row["input_tokens"] == input_tokens(request), seq


async def test_an_expired_batch_is_resubmitted_whole_as_a_child(env: Env) -> None:
    """EXPIRED after 48 h brings no results: every request goes to a child batch, which
    completes; nothing is lost and only the child is billed."""
    path = write_requests(env.tmp / "in.jsonl", 5, vendor="gemini")
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    (batch,) = await env.store.batches.for_job(job.id)
    env.sim.set_batch_faults(batch.tag, Faults(expire=True))
    await env.kiln.run_once(job_id=job.id)  # created
    env.clock.advance(47 * 3600)
    await env.kiln.run_once(job_id=job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    assert batch.state in (State.PENDING, State.IN_PROGRESS)  # not expired at 47 h
    env.clock.advance(2 * 3600)
    status = await env.kiln.run_until_done(job.id)
    parent, child = status.batches
    assert parent.vendor_status == "BATCH_STATE_EXPIRED" and child.parent_id == parent.id
    assert child.request_count == 5
    assert status.counts == {"succeeded": 5}
    first = next(iter(env.sim.gemini_batches.values()))
    assert first.timeline.expires_at - first.timeline.created_at == 48 * 3600


async def test_partial_failures_lose_nothing_and_costs_are_counted_once_at_batch_price(
    env: Env,
) -> None:
    """Retryable lines retry in a child, permanent ones fail; one cost row per batch, at
    half the standard Gemini price from usageMetadata."""
    env.sim.faults = Faults(fail_ids={"0": "overloaded", "1": "invalid_request"})
    path = write_requests(env.tmp / "in.jsonl", 6, vendor="gemini")
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 5, "failed": 1}
    assert len(status.batches) == 2
    async with env.store.engine.connect() as conn:
        rows = (await conn.execute(select(costs).where(costs.c.job_id == job.id))).all()
    assert len(rows) == 2 and sum(r.billed_requests for r in rows) == 5
    for row in rows:
        standard = (row.input_tokens * 0.30 + row.output_tokens * 2.50) / 1e6
        assert row.list_cost_usd == pytest.approx(standard)
        assert row.cost_usd == pytest.approx(standard / 2)
        assert row.provider == "gemini" and "ai.google.dev" in (row.price_source or "")


async def test_a_batch_pending_past_a_day_raises_one_stalled_event(env: Env) -> None:
    """PENDING 25 h after creation: one `batch.stalled` audit event, however often it is
    polled; the batch still runs to the end when the vendor starts it."""
    env.sim.faults = Faults(queue_delay_seconds=30 * 3600)
    path = write_requests(env.tmp / "in.jsonl", 2, vendor="gemini")
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    await env.kiln.run_once(job_id=job.id)
    env.clock.advance(23 * 3600)
    await env.kiln.run_once(job_id=job.id)
    assert "batch.stalled" not in await kinds(env, job.id)
    for _ in range(3):
        env.clock.advance(3600)
        (batch,) = await env.store.batches.for_job(job.id)
        await env.store.batches.mark_due(batch.id)
        await env.kiln.run_once(job_id=job.id)
    assert (await kinds(env, job.id)).count("batch.stalled") == 1
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 2}


async def test_exports_read_gemini_lines_with_the_users_keys(env: Env) -> None:
    """Flat export: the GenerateContentResponse or the error, by the user's id; vendor
    export: Gemini's own `{key, response | error}` lines with the user's keys."""
    from batchkiln.export import ExportFormat, iter_results, write_results

    env.sim.faults = Faults(fail_ids={"1": "invalid_request"})
    path = write_requests(env.tmp / "in.jsonl", 3, vendor="gemini", prefix="doc-")
    job = (await env.kiln.submit(path, provider="gemini", model=MODEL)).job
    await env.kiln.run_until_done(job.id)
    rows = [r async for r in iter_results(env.store, job.id)]
    assert [r["custom_id"] for r in rows] == ["doc-0", "doc-1", "doc-2"]
    assert rows[0]["response"]["candidates"] and rows[0]["error"] is None
    assert rows[1]["response"] is None and rows[1]["error"]["code"] == "INVALID_ARGUMENT"
    out = env.tmp / "out.jsonl"
    assert await write_results(env.store, job.id, out, ExportFormat.VENDOR) == 3
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["key"] for line in lines] == ["doc-0", "doc-1", "doc-2"]
    assert "usageMetadata" in lines[0]["response"] and lines[1]["error"]["code"] == 400
