"""Gemini's static project webhooks: the simulator signs batch.succeeded / failed /
expired (Standard Webhooks, whsec_ HMAC) and POSTs them to /webhooks/gemini; a verified,
fresh delivery only marks the batch due, and the state is fetched from the vendor."""

from __future__ import annotations

from pathlib import Path

import orjson

from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import SAFETY_NET, TrackingMode
from batchkiln.engine.tracking import detection_latency
from batchkiln.lifecycle import State
from batchkiln.service.webhooks import GEMINI_PATH
from batchkiln.simulator import Faults, sign

from .conftest import World

GEMINI_GET = ("GET", "/v1beta/batches/{batch_id}")


def gemini_requests(path: Path, n: int) -> Path:
    with path.open("wb") as out:
        for i in range(n):
            request = {"contents": [{"role": "user", "parts": [{"text": f"item {i}"}]}]}
            out.write(orjson.dumps({"key": f"r{i}", "request": request}) + b"\n")
    return path


async def submit(world: World, name: str, tracking: TrackingMode) -> tuple[Kiln, str]:
    kiln = world.kiln(tracking)
    path = gemini_requests(world.tmp / f"{name}.jsonl", 3)
    job = (await kiln.submit(path, provider="gemini", model="gemini-2.5-flash", key=name)).job
    assert await kiln.run_once(job_id=job.id) == 1
    (batch,) = await world.store.batches.for_job(job.id)
    assert batch.vendor_id is not None
    return kiln, batch.id


async def test_a_gemini_webhook_marks_the_batch_due_and_the_state_is_fetched(
    world: World,
) -> None:
    """Webhook mode: the first check is an hour away; batch.succeeded brings it to now,
    and the state comes from a GET of the batch."""
    world.sim.gemini_webhook_urls = [f"http://kiln.test{GEMINI_PATH}"]
    kiln, batch_id = await submit(world, "ghook", TrackingMode.WEBHOOK)
    batch = await world.store.batches.get(batch_id)
    assert batch.next_check_at == world.clock.now() + SAFETY_NET
    held = world.sim.gemini_batches[str(batch.vendor_id).removeprefix("batches/")]
    world.clock.set(held.timeline.ended_at())
    assert await world.sim.deliver_due_webhooks() == 1
    (attempt,) = world.sim.counters.webhook_attempts
    assert (attempt.event_type, attempt.status_code) == ("batch.succeeded", 200)
    assert attempt.url.endswith(GEMINI_PATH) and attempt.batch_id == batch.vendor_id
    assert (await world.store.batches.get(batch_id)).next_check_at == world.clock.now()
    before = world.sim.counters.calls[GEMINI_GET]
    assert await kiln.run_once() == 1
    row = await world.store.batches.get(batch_id)
    assert row.state == State.COMPLETED and detection_latency(row) == 0
    assert world.sim.counters.calls[GEMINI_GET] - before == 1


async def test_duplicates_and_forgeries_change_nothing(world: World) -> None:
    """A second delivery of one webhook-id is acknowledged as a duplicate; a forged
    signature is a 400; neither makes anything due again."""
    world.sim.gemini_webhook_urls = [f"http://kiln.test{GEMINI_PATH}"]
    world.sim.faults = Faults(webhook_duplicate=1.0)
    _, batch_id = await submit(world, "gdup", TrackingMode.WEBHOOK)
    batch = await world.store.batches.get(batch_id)
    held = world.sim.gemini_batches[str(batch.vendor_id).removeprefix("batches/")]
    world.clock.set(held.timeline.ended_at())
    assert await world.sim.deliver_due_webhooks() == 2
    assert len(world.woken) == 1  # the copy was a duplicate
    now = int(world.clock.now())
    body = orjson.dumps({"type": "batch.succeeded", "data": {"id": batch.vendor_id}})
    forged = await world.receiver.post(
        GEMINI_PATH,
        content=body,
        headers={
            "webhook-id": "wh_forged",
            "webhook-timestamp": str(now),
            "webhook-signature": sign("whsec_" + "A" * 44, "wh_forged", now, body),
        },
    )
    assert forged.status_code == 400 and len(world.woken) == 1


async def test_hybrid_tracking_applies_to_gemini_when_a_secret_is_set(world: World) -> None:
    """The adapter says it takes webhooks, so hybrid mode uses its longer poll cap."""
    policy = world.kiln(TrackingMode.HYBRID).tracking
    provider = world.providers["gemini"]
    assert provider.supports_webhooks
    assert policy.mode_for(provider) == TrackingMode.HYBRID
