"""One bad job never stops the worker, and store times are real UTC even when the
in-process simulator runs its vendor timeline at 2000x."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from batchkiln import App, Kiln, Settings
from batchkiln.lifecycle import State
from batchkiln.providers.base import CreateSpec, Provider, VendorBatch
from batchkiln.store.tables import audit_events, batches, jobs

from .conftest import MODELS, Env, write_requests


class _Boom:
    """A provider whose create raises an unexpected error for one batch tag."""

    def __init__(self, inner: Provider, tag: str) -> None:
        self._inner = inner
        self._tag = tag

    async def create(self, spec: CreateSpec) -> VendorBatch:
        if spec.tag == self._tag:
            raise RuntimeError("boom")
        return await self._inner.create(spec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Only(Mapping[str, Provider]):
    def __init__(self, providers: dict[str, Provider]) -> None:
        self._providers = providers

    def __getitem__(self, name: str) -> Provider:
        return self._providers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)


async def _drive(env: Env, kiln: Kiln, rounds: int) -> None:
    for _ in range(rounds):
        await kiln.run_once()
        due = await env.store.batches.next_due_at()
        if due is not None and due > env.clock.now():
            env.clock.set(due)


async def test_an_unexpected_error_in_one_batch_is_recorded_and_the_others_go_on(
    env: Env,
) -> None:
    """A RuntimeError in one batch's step is a `step.failed` event with its class and
    message; that batch backs off and the other job runs to done."""
    bad = (
        await env.kiln.submit(
            write_requests(env.tmp / "a.jsonl", 2), provider="openai", model=MODELS["openai"]
        )
    ).job
    good = (
        await env.kiln.submit(
            write_requests(env.tmp / "b.jsonl", 3, prefix="b"),
            provider="openai",
            model=MODELS["openai"],
        )
    ).job
    (bad_batch,) = await env.store.batches.for_job(bad.id)
    real = env.kiln.provider("openai")
    kiln = Kiln(
        env.store,
        _Only({"openai": _Boom(real, bad_batch.tag)}),  # type: ignore[dict-item]
        clock=env.clock,
        worker="w-boom",
    )
    await _drive(env, kiln, 40)
    assert (await kiln.status(good.id)).state == "done"
    assert (await kiln.status(good.id)).counts == {"succeeded": 3}
    failed = [e for e in await env.store.audit.for_job(bad.id) if e.kind == "step.failed"]
    assert failed and failed[0].data is not None
    assert failed[0].data["exception"] == "RuntimeError" and failed[0].data["message"] == "boom"
    assert "RuntimeError: boom" in (failed[0].reason or "")
    attempts = [e.data["attempt"] for e in failed if e.data]
    assert attempts == sorted(attempts) and attempts[0] == 1  # it backs off, one event a try


async def test_a_job_whose_provider_is_not_configured_here_is_skipped_not_a_crash(
    env: Env,
) -> None:
    """A `simulator` job seen by a worker without the in-process simulator: one
    `step.skipped` event per backoff, and the real job in the same store finishes."""
    alien = (
        await env.kiln.submit(
            write_requests(env.tmp / "a.jsonl", 2), provider="simulator", model=MODELS["openai"]
        )
    ).job
    real = (
        await env.kiln.submit(
            write_requests(env.tmp / "b.jsonl", 2, prefix="b"),
            provider="openai",
            model=MODELS["openai"],
        )
    ).job
    worker = Kiln(
        env.store,
        _Only({"openai": env.kiln.provider("openai")}),
        clock=env.clock,
        worker="no-simulator-here",
    )
    await _drive(env, worker, 30)
    assert (await worker.status(real.id)).state == "done"
    events = await env.store.audit.for_job(alien.id)
    skipped = [e for e in events if e.kind == "step.skipped"]
    assert skipped, [e.kind for e in events]
    assert "'simulator'" in (skipped[0].reason or "")
    assert [e.data["attempt"] for e in skipped if e.data] == list(range(1, len(skipped) + 1))
    delays = [e.data["next_check_in"] for e in skipped if e.data]
    assert len(skipped) < 30  # it backs off instead of spinning
    (batch,) = await env.store.batches.for_job(alien.id)
    assert batch.state == State.NOT_SUBMITTED and delays


async def test_virtual_simulator_time_never_reaches_the_store(tmp_path: Path) -> None:
    """At 2000x, every time in the store is real UTC (leases, timestamps, audit) while
    the vendor's timeline runs on the simulator's virtual clock."""
    db = tmp_path / "kiln.db"
    before = time.time()
    async with App.simulated(Settings.load(), speed=2000.0, database_url=f"sqlite:///{db}") as app:
        vendor_start = app.vendor_clock.now()
        path = write_requests(tmp_path / "in.jsonl", 5)
        job = (await app.kiln.submit(path, provider="simulator", model=MODELS["openai"])).job
        status = await app.kiln.run_until_done(job.id)
        vendor_elapsed = app.vendor_clock.now() - vendor_start
        async with app.store.engine.connect() as conn:
            stamps = list((await conn.execute(select(audit_events.c.at))).scalars())
            row = (await conn.execute(select(batches))).mappings().one()
            stamps += [row[c] for c in ("created_at", "updated_at", "submit_started_at")]
            stamps += [row["last_submit_at"], row["detected_at"]]
            stamps += list((await conn.execute(select(jobs.c.finished_at))).scalars())
    after = time.time()
    assert status.counts == {"succeeded": 5}
    assert all(before - 1 <= t <= after + 1 for t in stamps), (before, after, stamps)
    assert row["lease_expires_at"] is None
    assert vendor_elapsed > 150  # the vendor's queue + processing ran in virtual time
