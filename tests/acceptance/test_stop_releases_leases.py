"""Stopping the engine (a stop request, or a cancelled task) never leaves a lease held."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from batchkiln.lifecycle import State

from .conftest import Env, write_requests


async def test_a_stopped_round_gives_back_the_batches_it_did_not_step(env: Env) -> None:
    """With `stop` set, run_once releases what it claimed, untouched and still due."""
    submitted = await env.kiln.submit(
        write_requests(env.tmp / "in.jsonl", 5), provider="openai", model="gpt-4o-mini"
    )
    stop = asyncio.Event()
    stop.set()
    assert await env.kiln.run_once(stop=stop) == 0
    (batch,) = await env.store.batches.for_job(submitted.job.id)
    assert batch.state == State.NOT_SUBMITTED and batch.lease_owner is None
    assert batch.next_check_at is not None and batch.next_check_at <= env.clock.now()
    status = await env.kiln.run_until_done(submitted.job.id, stop=stop)
    assert status.job.id == submitted.job.id and env.sim.counters.batches_created == 0


async def test_a_step_cancelled_midway_gives_its_lease_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the task during a step (a second Ctrl-C) still releases the lease."""
    submitted = await env.kiln.submit(
        write_requests(env.tmp / "in.jsonl", 3), provider="openai", model="gpt-4o-mini"
    )
    in_step = asyncio.Event()

    async def a_slow_vendor_call(*args: Any, **kwargs: Any) -> Any:
        in_step.set()
        await asyncio.Event().wait()  # the create call that never answers

    monkeypatch.setattr(env.kiln.submitter, "submit", a_slow_vendor_call)
    task = asyncio.ensure_future(env.kiln.run_once())
    await asyncio.wait_for(in_step.wait(), timeout=60)
    (batch,) = await env.store.batches.for_job(submitted.job.id)
    assert batch.lease_owner == env.kiln.worker  # held mid-step
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    (batch,) = await env.store.batches.for_job(submitted.job.id)
    assert batch.lease_owner is None and batch.lease_expires_at is None
