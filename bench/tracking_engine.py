"""The real engine on the tracking benchmark's workload (`tracking.py --engine N`).

Each strategy gets a fresh SQLite store, simulator and fake clock. Every batch is
submitted at its arrival through `Kiln.submit` and the OpenAI adapter, with the
simulator told its timeline (validation, processing, finalizing, webhook delay or
loss) by per-batch faults; the simulator signs webhooks on the fake clock and
POSTs them into `webhook_app` over an ASGI transport. The driver does what a
worker does, in virtual time: wake at the next due check, arrival or webhook, and
run `Kiln.run_once` until nothing is due. Downloading results is stubbed out (it
costs the same in every strategy). Tracking calls are what the simulator served on
GET /v1/batches/{id} and GET /v1/batches; latency is each row's
`detected_at - vendor_ended_at`.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
from tracking import Result, Spec, Vendor

from batchkiln import App, FakeClock, Settings
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import TrackingPolicy
from batchkiln.engine.step import StepResult
from batchkiln.lifecycle import ENDED_AT_VENDOR
from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app
from batchkiln.simulator import Simulator
from batchkiln.simulator.webhooks import new_secret
from batchkiln.store import BatchRow, JobRow, Store

SHM = "/dev/shm"  # SQLite in memory-backed files: the bench measures calls, not fsync
SIM = "http://sim.bench"
HOOKS = "http://kiln.bench"
TRACKING_ROUTES = (("GET", "/v1/batches/{batch_id}"), ("GET", "/v1/batches"))


def write_file(path: Path, n: int) -> Path:
    with path.open("wb") as out:
        for i in range(n):
            body = {"messages": [{"role": "user", "content": f"{path.stem} {i}"}], "max_tokens": 8}
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(orjson.dumps({**line, "body": body}) + b"\n")
    return path


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(dir=SHM if os.path.isdir(SHM) else None))


async def _parked(job: JobRow, batch: BatchRow, provider: object) -> StepResult:
    return StepResult(1e9, "download skipped by the benchmark")


async def run_engine(
    specs: Sequence[Spec], name: str, policy: TrackingPolicy, webhooks: bool
) -> Result:
    tmp = scratch_dir()
    clock = FakeClock(start=specs[0].arrival - 1)
    store = await Store.open(f"sqlite:///{tmp}/kiln.db", clock=clock)
    secret = new_secret()
    hooks = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=webhook_app(store, [secret])), base_url=HOOKS
    )
    simulated = App.simulated(
        Settings.load(),
        clock=clock,
        seed=1,
        store=store,
        webhook_urls=[HOOKS + DEFAULT_PATH] if webhooks else [],
        webhook_secret=secret,
        webhook_client=hooks,
        tracking=policy,
        worker="bench",
        rng=random.Random(7),
    )
    async with simulated as app:
        sim, kiln = app.simulator, app.kiln
        assert sim is not None
        kiln.ingestor.ingest = _parked  # type: ignore[method-assign]
        rows = await _track(kiln, sim, clock, specs, webhooks, tmp)
        served = sum(sim.counters.calls[route] for route in TRACKING_ROUTES)
    await hooks.aclose()
    await store.close()
    per_batch = [float(r.vendor_calls - 1) for r in rows]  # all but the create call
    assert sum(per_batch) == served, (sum(per_batch), served)  # each call counted once
    latency = [float(r.detected_at - r.vendor_ended_at) for r in rows]  # type: ignore[operator]
    return Result(name, per_batch, latency)


async def _track(
    kiln: Kiln, sim: Simulator, clock: FakeClock, specs: Sequence[Spec], webhooks: bool, tmp: Path
) -> list[BatchRow]:
    """Arrive, deliver webhooks and step due batches in virtual time until all are seen."""
    store = kiln.store
    pending = sorted(specs, key=lambda s: s.arrival)
    hook_times = sorted(
        Vendor(s).ended_at + s.webhook_delay for s in specs if webhooks and not s.webhook_lost
    )
    ids: list[str] = []
    while pending or not await _all_detected(store):
        due = await store.batches.next_due_at()
        candidates = [t for t in (due, pending[0].arrival if pending else None) if t is not None]
        candidates += [t for t in hook_times[:1]]
        clock.set(max(clock.now(), min(candidates)))
        while hook_times and hook_times[0] <= clock.now():
            hook_times.pop(0)
        while pending and pending[0].arrival <= clock.now():
            ids.append(await _submit(kiln, sim, pending.pop(0), tmp))
        if webhooks:
            await sim.deliver_due_webhooks()
        while await kiln.run_once(limit=100):
            pass
    return [await store.batches.get(i) for i in ids]


async def _submit(kiln: Kiln, sim: Simulator, spec: Spec, tmp: Path) -> str:
    path = write_file(tmp / f"b{spec.index}.jsonl", spec.requests)
    job = (await kiln.submit(path, provider="openai", model="gpt-4o-mini", key=path.stem)).job
    (batch,) = await kiln.store.batches.for_job(job.id)
    sim.set_batch_faults(batch.tag, spec.faults())
    return batch.id


async def _all_detected(store: Store) -> bool:
    return all(row.state in ENDED_AT_VENDOR for row in await store.batches.live())
