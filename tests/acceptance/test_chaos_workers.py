"""Four `kiln worker` processes on one PostgreSQL run 50 jobs against the simulator
served on loopback, while a chaos loop SIGKILLs and restarts a random worker every few
seconds. At the end every invariant of DESIGN.md holds.

Mixed sizes, partial failures (retryable and permanent request errors, so retry
children), a window of expiring batches, and one job cancelled while it runs at the
vendor. Workers and the simulator share one virtual clock (SPEED x real time); the
lease (KILN_LEASE_SECONDS, in virtual seconds) is 6 real seconds, so a killed
worker's batches are resumed by the others within about that. The chaos loop stops by
itself after MAX_KILLS kills; then every worker is stopped with SIGTERM and must exit 0
and deregister.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from batchkiln.cli.operate import virtual_clock
from batchkiln.engine.kiln import Kiln
from batchkiln.errors import StaleTransition
from batchkiln.lifecycle import State
from batchkiln.providers import make_provider
from batchkiln.simulator import Faults, Simulator, serve_in_thread
from batchkiln.store import Store
from batchkiln.store.tables import audit_events, batches, costs, requests

from .conftest import MODELS, write_requests

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SPEED = 3000.0  # 24 vendor hours (an expiry) in under 30 real seconds
LEASE = 6 * SPEED  # virtual seconds: 6 real seconds (2 shared cores stall processes)
WORKERS = 4
JOBS = 50
MAX_KILLS = 6
DEADLINE = 360.0  # real seconds for the whole run (worker start-up is slow here)
FINAL = {"succeeded", "failed", "exhausted", "cancelled"}
ADMIN_URL = os.environ.get(
    "KILN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
).replace("postgresql+asyncpg://", "postgresql://")
FAULTS = Faults(
    retryable_rate=0.08,
    permanent_rate=0.04,
    processing_seconds=1200,
    queue_delay_seconds=60,
    cancel_seconds=600,
)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of its own (NOTIFY channels are per database), dropped afterwards."""
    import asyncpg

    name = f"kiln_chaos_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL not reachable at {ADMIN_URL}: {exc} (CI=true)")
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL}: {exc}")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class Fleet:
    """The worker processes, killed and restarted at random."""

    def __init__(self, env: dict[str, str], epoch: float, logs: Path) -> None:
        self.env = env
        self.epoch = epoch
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: list[str] = []  # worker ids (host:pid) of SIGKILLed processes
        self.started = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        code = "import sys; from batchkiln.cli import app; sys.argv[0] = 'kiln'; app()"
        args = ["worker", "--concurrency", "4", "--idle-cap", str(2 * SPEED), "--grace", "10"]
        args += ["--speed", str(SPEED), "--epoch", str(self.epoch)]
        self.started += 1
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], env=self.env, stdout=log, stderr=log
        )
        self.procs.append(proc)
        return proc

    async def ready(self, store: Store) -> list[subprocess.Popen[bytes]]:
        """The processes that have registered (started up, providers built)."""
        pids = {w.pid for w in await store.workers.list()}
        return [p for p in self.procs if p.pid in pids]

    async def kill_one(self, store: Store, rng: random.Random) -> bool:
        ready = await self.ready(store)
        if not ready:
            return False
        proc = rng.choice(ready)
        proc.kill()  # SIGKILL: no cleanup, leases left to expire
        proc.wait(timeout=10)
        self.killed.append(f"{os.uname().nodename}:{proc.pid}")
        self.procs.remove(proc)
        self.spawn()
        return True

    def stop_all(self) -> list[int | None]:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes


async def _submit(kiln: Kiln, tmp: Path, rng: random.Random, i: int) -> str:
    vendor = "anthropic" if i % 5 == 4 else "openai"
    size = rng.choice([1, 2, 4, 8, 16, 40]) + i // 5  # mixed; Anthropic's all differ
    path = write_requests(tmp / f"job{i}.jsonl", size, vendor=vendor)
    job = await kiln.submit(path, provider=vendor, model=MODELS[vendor], key=f"chaos-{i}")
    return job.job.id


async def _cancel_when_running(kiln: Kiln, store: Store, job_id: str) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batches_ = await store.batches.for_job(job_id)
        if any(b.state in (State.PENDING, State.IN_PROGRESS) for b in batches_):
            try:
                ids = await kiln.cancel(job_id)
            except StaleTransition:  # a worker moved it meanwhile: look again
                ids = []
            if ids:
                return ids
        await asyncio.sleep(0.02)
    raise AssertionError("the job to cancel never ran at the vendor")


async def _chaos(fleet: Fleet, store: Store, rng: random.Random, started: float) -> None:
    """SIGKILL and restart a random started worker every 2-4 s, MAX_KILLS times."""
    while len(fleet.killed) < MAX_KILLS:
        await asyncio.sleep(rng.uniform(2, 4))
        if time.monotonic() - started > DEADLINE:
            raise AssertionError(f"chaos not over in time: {await _stuck(store)}")
        for proc in fleet.procs:
            assert proc.poll() is None, f"a worker exited by itself ({proc.returncode})"
        await fleet.kill_one(store, rng)


async def _stuck(store: Store) -> list[tuple[Any, ...]]:
    """What is not done yet (for the failure message)."""
    now = store.clock.now()
    return [
        (
            b.id,
            b.state.value,
            b.lease_owner,
            b.submit_attempts,
            b.next_check_at and round((b.next_check_at - now) / SPEED, 2),
        )
        for b in await store.batches.live()
    ]


async def _all_done(store: Store) -> bool:
    return all(j.status == "done" for j in await store.jobs.list())


async def test_four_workers_under_sigkill_chaos_keep_every_invariant(
    database: str, tmp_path: Path
) -> None:
    """50 jobs, 4 workers, a worker SIGKILLed and restarted every few seconds: one vendor
    batch per key, one final outcome per request, costs once, transitions audited once,
    no lease held, every job done; SIGTERM stops the survivors with exit 0."""
    rng = random.Random(16)
    epoch = time.time()
    clock = virtual_clock(SPEED, epoch)
    sim = Simulator(clock=clock, seed=16, faults=FAULTS)
    started = time.monotonic()
    with serve_in_thread(sim) as url:
        env = {k: v for k, v in os.environ.items() if "WEBHOOK_SECRET" not in k}
        env.update(
            KILN_DATABASE_URL=database,
            KILN_LEASE_SECONDS=str(LEASE),
            KILN_TRACKING="poll",
            OPENAI_BASE_URL=f"{url}/v1",
            OPENAI_API_KEY="test",
            ANTHROPIC_BASE_URL=url,
            ANTHROPIC_API_KEY="test",
        )
        store = await Store.open(database, clock=clock)
        providers = {
            "openai": make_provider("openai", base_url=f"{url}/v1", api_key="test"),
            "anthropic": make_provider("anthropic", base_url=url, api_key="test"),
        }
        kiln = Kiln(store, providers, clock=clock, worker="test", tracking="poll")
        logs = Path(os.environ.get("KILN_CHAOS_LOGS", tmp_path))
        logs.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        fleet = Fleet(env, epoch, logs)
        try:
            # the job to cancel runs slowly at the vendor (12 real seconds), so the cancel
            # reaches it in progress whatever the machine's load
            sim.faults = dataclasses.replace(FAULTS, processing_seconds=36000)
            to_cancel = await _submit(kiln, tmp_path, rng, 0)
            for _ in range(WORKERS):
                fleet.spawn()
            while len(await fleet.ready(store)) < WORKERS:
                assert time.monotonic() - started < 180, "the workers did not start"
                await asyncio.sleep(0.2)
            chaos = asyncio.create_task(_chaos(fleet, store, rng, started))
            cancelled = await _cancel_when_running(kiln, store, to_cancel)
            sim.faults = FAULTS
            job_ids = [to_cancel]
            for i in range(1, JOBS):
                if i == 20:  # a window of batches too slow for their 24 h window
                    sim.faults = dataclasses.replace(FAULTS, expire=True)
                if i == 30:
                    sim.faults = FAULTS
                job_ids.append(await _submit(kiln, tmp_path, rng, i))
            await chaos
            while not await _all_done(store):
                if time.monotonic() - started > DEADLINE:
                    raise AssertionError(f"not finished in time: {await _stuck(store)}")
                for proc in fleet.procs:
                    assert proc.poll() is None, f"a worker exited by itself ({proc.returncode})"
                await asyncio.sleep(0.2)
            codes = fleet.stop_all()
        finally:
            for proc in fleet.procs:
                if proc.poll() is None:
                    proc.kill()
            for provider in providers.values():
                await provider.aclose()
        assert codes == [0] * WORKERS  # SIGTERM: a clean exit
        await _assert_invariants(store, sim, job_ids, to_cancel, cancelled, fleet)
        await store.close()


async def _assert_invariants(
    store: Store,
    sim: Simulator,
    job_ids: list[str],
    to_cancel: str,
    cancelled: list[str],
    fleet: Fleet,
) -> None:
    async with store.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(select(batches))).mappings()]
        outcomes = [
            dict(r)
            for r in (
                await conn.execute(select(requests.c.job_id, requests.c.seq, requests.c.outcome))
            ).mappings()
        ]
        cost_rows = [r.batch_id for r in await conn.execute(select(costs.c.batch_id))]
        events = [
            dict(r)
            for r in (
                await conn.execute(select(audit_events).order_by(audit_events.c.id))
            ).mappings()
        ]
    jobs = await store.jobs.list()
    # every job done
    assert sorted(j.id for j in jobs) == sorted(job_ids)
    assert {j.status for j in jobs} == {"done"}
    assert {r["state"] for r in rows} == {State.DONE.value}
    # exactly-once submission, from the simulator's own counters
    submitted = [r for r in rows if r["vendor_id"] is not None]
    assert sim.counters.batches_created == len(submitted)
    assert all(sim.counters.created_by_tag[r["tag"]] == 1 for r in submitted)
    assert sum(sim.counters.created_by_tag.values()) == len(submitted)
    assert len({r["vendor_id"] for r in submitted}) == len(submitted)
    # nothing lost: one final outcome per request
    assert all(o["outcome"] in FINAL for o in outcomes)
    assert len({(o["job_id"], o["seq"]) for o in outcomes}) == len(outcomes)
    # costs once: one cost row and one cost event per batch
    assert sorted(cost_rows) == sorted(r["id"] for r in rows)
    recorded = Counter(e["batch_id"] for e in events if e["kind"] == "cost.recorded")
    assert set(recorded.values()) == {1} and len(recorded) == len(rows)
    # every transition audited once, and the audit chain of each batch is unbroken
    for row in rows:
        moves = [
            (e["from_state"], e["to_state"])
            for e in events
            if e["batch_id"] == row["id"] and e["to_state"] is not None
        ]
        assert len(moves) == len(set(moves)), (row["id"], moves)
        chain = [None] + [to for _, to in moves]  # created (None -> not_submitted) first
        assert [f for f, _ in moves] == chain[:-1], (row["id"], moves)
        assert chain[-1] == State.DONE.value
    # no lease held; the killed workers' rows are left, shown lost; the others deregistered
    # (a worker killed between closing a batch and releasing it leaves a lease on a done
    # batch, which nobody claims; it runs out, and a stopping worker clears it)
    now = store.clock.now()
    held = [
        r["id"]
        for r in rows
        if r["lease_owner"] is not None
        and (r["state"] != State.DONE.value or r["lease_expires_at"] >= now)
    ]
    assert held == []
    assert sorted(w.id for w in await store.workers.list()) == sorted(fleet.killed)
    assert len(fleet.killed) == MAX_KILLS
    # the scenario really had its faults: retries, permanent failures, expiries, the cancel
    ended = Counter(e["from_state"] for e in events if e["to_state"] == State.DOWNLOADING.value)
    assert ended[State.PARTIAL.value] > 0 and ended[State.EXPIRED.value] > 0, ended
    assert any(r["attempt"] > 1 for r in rows)
    kinds = Counter(o["outcome"] for o in outcomes)
    assert kinds["succeeded"] > 0 and kinds["failed"] > 0
    assert len(cancelled) == 1
    assert "cancelled" in {o["outcome"] for o in outcomes if o["job_id"] == to_cancel}
