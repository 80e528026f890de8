"""Leases that cannot be stolen or lost: a step whose lease was taken over writes
nothing, a heartbeat keeps a long create's lease (no second worker resubmits it),
a vendor's 429 pauses every worker, and SQLite refuses a second worker process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from batchkiln import App, Kiln, Settings
from batchkiln.clock import SystemClock
from batchkiln.engine.worker import Worker
from batchkiln.errors import ConfigError, LeaseLost
from batchkiln.lifecycle import Event, State
from batchkiln.providers.base import CreateSpec, Provider, VendorBatch
from batchkiln.simulator import Faults
from batchkiln.store import Store
from batchkiln.store.leases import guarded_by
from batchkiln.store.wakeups import SqliteWorkerLock

from .conftest import World
from .helpers import MODELS, submit_job, write_requests

CREATE = ("POST", "/v1/batches")


class Hooked:
    """A provider that runs `hook` in the middle of a call (after the vendor acted)."""

    def __init__(self, inner: Provider, hook: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self.hook = hook
        self.name = inner.name
        self.supports_webhooks = inner.supports_webhooks
        self.list_page_size = inner.list_page_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, spec: CreateSpec) -> VendorBatch:
        made = await self.inner.create(spec)
        await self.hook()
        return made

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        seen = await self.inner.retrieve(vendor_id)
        await self.hook()
        return seen


def _kiln(world: World, worker: str, providers: Any = None) -> Kiln:
    return Kiln(
        world.store,
        providers or world.providers,
        clock=world.clock,
        worker=worker,
        tracking="poll",
        lease_seconds=60,
        budget=world.app.budget,
    )


async def _snapshot(world: World, job_id: str) -> tuple[list[Any], list[Any]]:
    events = [(e.id, e.kind) for e in await world.store.audit.for_job(job_id)]
    rows = [
        {k: v for k, v in vars(b).items() if k not in ("lease_owner", "lease_expires_at")}
        for b in await world.store.batches.for_job(job_id)
    ]
    return events, rows


def _take_over(world: World, batch_id: str, taken: list[str]) -> Callable[[], Awaitable[None]]:
    async def hook() -> None:  # the first worker stalls past its lease; another claims
        world.clock.advance(61)
        claimed = await world.store.batches.claim_due(worker="w2", lease_seconds=60)
        taken.extend(b.id for b in claimed)
        assert taken == [batch_id]

    return hook


async def test_a_refresh_whose_lease_was_taken_over_writes_nothing(world: World) -> None:
    """The lease expires mid-retrieve and w2 claims the batch: w1 writes no row, no event."""
    batch = await submit_job(_kiln(world, "w0"), world.tmp, "stolen")
    world.clock.set(batch.next_check_at or 0)
    taken: list[str] = []
    hooked = {"openai": Hooked(world.providers["openai"], _take_over(world, batch.id, taken))}
    before = await _snapshot(world, batch.job_id)
    assert await _kiln(world, "w1", hooked).run_once() == 1
    assert taken == [batch.id]
    assert await _snapshot(world, batch.job_id) == before  # not one write from w1
    row = await world.store.batches.get(batch.id)
    assert row.lease_owner == "w2" and row.state == State.PENDING


async def test_a_create_whose_lease_was_taken_over_is_adopted_not_resent(world: World) -> None:
    """w1's create reaches the vendor, then w1 finds its lease gone: it records nothing;
    w2 reconciles and adopts that vendor batch. One vendor batch for the key."""
    path = write_requests(world.tmp / "race.jsonl", 3)
    job = (await _kiln(world, "w0").submit(path, provider="openai", model=MODELS["openai"])).job
    (batch,) = await world.store.batches.for_job(job.id)
    taken: list[str] = []
    hooked = {"openai": Hooked(world.providers["openai"], _take_over(world, batch.id, taken))}
    assert await _kiln(world, "w1", hooked).run_once() == 1
    row = await world.store.batches.get(batch.id)
    assert (row.state, row.lease_owner, row.vendor_id) == (State.SUBMITTING, "w2", None)
    assert world.sim.counters.batches_created == 1
    job_row = await world.store.jobs.get(row.job_id)
    await _kiln(world, "w2").step_claimed(row, job_row)  # w2 holds the lease: reconcile
    row = await world.store.batches.get(batch.id)
    assert row.state == State.PENDING and row.vendor_id is not None
    assert world.sim.counters.batches_created == 1


async def test_a_guarded_transition_refuses_a_lease_held_by_another(world: World) -> None:
    """Inside a leased step, a move of a batch leased to someone else raises LeaseLost."""
    path = write_requests(world.tmp / "guard.jsonl", 2)
    job = (await _kiln(world, "w0").submit(path, provider="openai", model=MODELS["openai"])).job
    (batch,) = await world.store.batches.claim_due(worker="other", lease_seconds=60)
    with guarded_by("me"), pytest.raises(LeaseLost):
        await world.store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
    with guarded_by("me"), pytest.raises(LeaseLost):
        await world.store.audit.record("poll", job_id=job.id, batch_id=batch.id)
    assert (await world.store.batches.get(batch.id)).state == State.NOT_SUBMITTED


async def test_a_429_retry_after_pauses_every_workers_calls_to_that_vendor(world: World) -> None:
    """w1's create gets 429 retry-after 120 s; w2's create waits, with no call, until then."""
    world.sim.faults = Faults(rate_limit_create=1, retry_after_seconds=120)
    w1, w2 = _kiln(world, "w1"), _kiln(world, "w2")
    for name, kiln in (("a", w1), ("b", w2)):
        path = write_requests(world.tmp / f"{name}.jsonl", 2)
        await kiln.submit(path, provider="openai", model=MODELS["openai"], key=name)
    assert await w1.run_once(limit=1) == 1
    assert world.sim.counters.calls[CREATE] == 1  # the 429
    assert await w2.run_once(limit=1) == 1  # the other batch: paused, not sent
    assert world.sim.counters.calls[CREATE] == 1
    until = await world.store.pauses.until("openai")
    assert until is not None and until == pytest.approx(world.clock.now() + 120, abs=1)
    world.clock.set(until + 1)
    for _ in range(4):
        await w2.run_once()
        world.clock.advance(61)  # past the settle period of the 429'd attempt
    jobs = await world.store.jobs.list()
    rows = [b for j in jobs for b in await world.store.batches.for_job(j.id)]
    assert all(b.state in (State.PENDING, State.IN_PROGRESS) or b.vendor_id for b in rows)
    assert world.sim.counters.batches_created == 2


async def test_the_heartbeat_keeps_a_long_create_leased(tmp_path: Path) -> None:
    """Real clock, 0.6 s lease: a create that takes 1.5 s keeps its lease (renewed every
    0.2 s), so a second worker claiming all along never gets the batch to resubmit it."""
    clock = SystemClock()
    store = await Store.open(f"sqlite:///{tmp_path}/kiln.db", clock=clock)
    try:
        async with App.simulated(Settings.load(), clock=clock, store=store) as app:

            async def slow() -> None:
                await asyncio.sleep(1.5)

            hooked = {"openai": Hooked(app.providers["openai"], slow)}
            first = Kiln(store, hooked, clock=clock, worker="w1", lease_seconds=0.6)
            path = write_requests(tmp_path / "slow.jsonl", 2)
            job = (await first.submit(path, provider="openai", model=MODELS["openai"])).job
            running = asyncio.create_task(first.run_once())
            while (await store.batches.for_job(job.id))[0].lease_owner != "w1":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            stolen = []
            started = time.monotonic()
            while not running.done():
                stolen += await store.batches.claim_due(worker="w2", lease_seconds=0.6)
                await asyncio.sleep(0.05)
            assert await running == 1
            assert time.monotonic() - started >= 1.4
            assert stolen == []
            (row,) = await store.batches.for_job(job.id)
            assert row.state == State.PENDING and row.submit_attempts == 1
            assert app.simulator is not None and app.simulator.counters.batches_created == 1
    finally:
        await store.close()


async def test_a_second_worker_process_on_one_sqlite_database_is_refused(
    tmp_path: Path,
) -> None:
    """SQLite: a worker finding the database's worker lock taken stops with one clear line."""
    db = tmp_path / "kiln.db"
    settings = Settings.load(database_url=f"sqlite:///{db}")
    holder = SqliteWorkerLock(str(db))
    holder.acquire()
    try:
        async with App.simulated(settings) as app:
            with pytest.raises(ConfigError, match=r"already running.*PostgreSQL"):
                await Worker.for_app(app).run()
            assert await app.store.workers.list() == []
    finally:
        holder.release()


async def test_a_worker_runs_steps_at_once_within_the_vendor_call_limit(world: World) -> None:
    """Concurrency 6 with a limit of 2 calls to OpenAI: several steps run at once, yet
    never more than 2 calls to the vendor are in flight."""

    async def slow() -> None:  # each create takes a while (real time): calls overlap
        await asyncio.sleep(0.05)

    kiln = Kiln(
        world.store,
        {"openai": Hooked(world.providers["openai"], slow)},
        clock=world.clock,
        worker="w1",
        tracking="poll",
        budget=world.app.budget,
        vendor_limits={"openai": 2},
    )
    for i in range(6):
        path = write_requests(world.tmp / f"c{i}.jsonl", 2)
        await kiln.submit(path, provider="openai", model=MODELS["openai"], key=f"c{i}")
    worker = Worker(kiln, concurrency=6)
    assert await worker.run(max_steps=6) == 6
    assert 1 <= kiln.throttle.peak["openai"] <= 2  # 2 when the machine lets calls overlap
    rows = [
        b for j in await world.store.jobs.list() for b in await world.store.batches.for_job(j.id)
    ]
    assert all(b.vendor_id is not None for b in rows)
    assert world.sim.counters.batches_created == 6


async def test_a_worker_that_cannot_renew_stops_its_steps_before_its_leases_run_out(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewals failing (store unreachable): the held steps keep running until the last
    renewal is FENCE of a lease old, then are cancelled, before another worker may claim."""
    from batchkiln.engine.leases import FENCE

    kiln = _kiln(world, "w1")
    path = write_requests(world.tmp / "fence.jsonl", 2)
    job = (await kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    claimed, _ = await kiln.claim()
    assert [b.job_id for b in claimed] == [job.id]
    step = asyncio.create_task(asyncio.sleep(3600))  # a create call still in flight
    kiln.leases.attach(claimed[0].id, step)
    await kiln.leases.tick()  # renews: the store answers

    async def unreachable(*_args: object, **_kwargs: object) -> list[str]:
        raise ConnectionError("the store is unreachable")

    monkeypatch.setattr(world.store.batches, "renew", unreachable)
    world.clock.advance(FENCE * 60 - 1)
    await kiln.leases.tick()
    assert not step.done() and kiln.leases.holds(claimed[0].id)  # not yet: keep going
    world.clock.advance(1)
    await kiln.leases.tick()
    await asyncio.sleep(0)
    assert step.cancelled() and claimed[0].id in kiln.leases.lost
    row = await world.store.batches.get(claimed[0].id)
    assert row.lease_owner == "w1" and row.lease_expires_at > world.clock.now()  # still ours
