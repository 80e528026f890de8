"""Webhook intake end to end: the simulator signs batch events and POSTs them through
an ASGI transport into `webhook_app`; a verified event only marks its batch due, and
the state is then fetched from the vendor."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import SAFETY_NET, TrackingMode
from batchkiln.engine.tracking import detection_latency
from batchkiln.engine.worker import Worker
from batchkiln.lifecycle import State
from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app
from batchkiln.simulator import Faults, sign
from batchkiln.simulator.webhooks import new_secret
from batchkiln.store import BatchRow

from .conftest import World
from .helpers import RETRIEVE, calls, submit_job


def event(vendor_id: str, at: float, kind: str = "batch.completed") -> dict[str, Any]:
    return {
        "id": "evt_x",
        "object": "event",
        "created_at": int(at),
        "type": kind,
        "data": {"id": vendor_id},
    }


async def post(
    client: httpx.AsyncClient, payload: dict[str, Any], *, webhook_id: str, at: float, secret: str
) -> httpx.Response:
    """POST `payload` signed as a Standard Webhooks delivery made at `at`."""
    body = orjson.dumps(payload)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": sign(secret, webhook_id, int(at), body),
    }
    return await client.post(DEFAULT_PATH, content=body, headers=headers)


def ended_at(world: World, batch: BatchRow) -> float:
    return world.sim.openai_batches[str(batch.vendor_id)].timeline.ended_at()


async def test_a_webhook_marks_the_batch_due_and_the_state_is_fetched(world: World) -> None:
    """In webhook mode the first check is an hour away; the webhook brings it to now."""
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "hook")
    assert batch.next_check_at == world.clock.now() + SAFETY_NET
    world.clock.set(ended_at(world, batch))
    assert await world.sim.deliver_due_webhooks() == 1
    assert [a.status_code for a in world.sim.counters.webhook_attempts] == [200]
    assert world.woken == [world.clock.now()]
    assert (await world.store.batches.get(batch.id)).next_check_at == world.clock.now()
    assert await kiln.run_once() == 1
    row = await world.store.batches.get(batch.id)
    assert row.state == State.COMPLETED and detection_latency(row) == 0
    assert calls(world.sim, "openai", RETRIEVE) == 1


async def test_a_forged_signature_is_rejected_and_changes_nothing(world: World) -> None:
    """Signed with a key we do not hold: 400, not recorded or audited, the batch not made due."""
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "forged")
    now = world.clock.now()
    response = await post(
        world.receiver,
        event(str(batch.vendor_id), now),
        webhook_id="wh_f",
        at=now,
        secret=new_secret(),
    )
    assert response.status_code == 400
    assert not await world.store.webhooks.seen("wh_f")
    assert (await world.store.batches.get(batch.id)).next_check_at == batch.next_check_at
    assert world.woken == []
    kinds = [e.kind async for e in world.store.audit.stream()]
    assert not any(kind.startswith("webhook.") for kind in kinds)  # counted, never stored


@pytest.mark.parametrize("skew", [-301, 301])
async def test_a_timestamp_outside_five_minutes_is_rejected(world: World, skew: int) -> None:
    """A correctly signed delivery stamped more than 5 minutes off our clock: 400."""
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "stale")
    at = world.clock.now() + skew
    payload = event(str(batch.vendor_id), at)
    response = await post(world.receiver, payload, webhook_id="wh_s", at=at, secret=world.secret)
    assert response.status_code == 400 and "tolerance" in response.json()["error"]
    assert (await world.store.batches.get(batch.id)).next_check_at == batch.next_check_at


async def test_a_replayed_webhook_id_is_acknowledged_but_acted_on_once(world: World) -> None:
    """The simulator delivers one event twice; a sender retry 72 h later is still known."""
    world.sim.faults = Faults(webhook_duplicate=1.0)
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "dup")
    world.clock.set(ended_at(world, batch))
    assert await world.sim.deliver_due_webhooks() == 2
    attempts = world.sim.counters.webhook_attempts
    assert len({a.webhook_id for a in attempts}) == 1
    assert [a.status_code for a in attempts] == [200, 200]
    assert len(world.woken) == 1
    assert await kiln.run_once() == 1
    assert calls(world.sim, "openai", RETRIEVE) == 1
    world.clock.advance(72 * 3600)
    await world.store.webhooks.reap()
    retry = await post(
        world.receiver,
        event(str(batch.vendor_id), ended_at(world, batch)),
        webhook_id=attempts[0].webhook_id,
        at=world.clock.now(),  # a retry carries a fresh timestamp and the same id
        secret=world.secret,
    )
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    assert len(world.woken) == 1


async def test_events_out_of_order_only_say_look_again(world: World) -> None:
    """Two events delivered newest first, then a stale contradicting one: every batch
    ends as the vendor says, never as a payload says."""
    world.sim.faults = Faults(processing_seconds=60, webhook_out_of_order=True)
    kiln = world.kiln(TrackingMode.WEBHOOK)
    first = await submit_job(kiln, world.tmp, "first")
    world.clock.advance(30)
    second = await submit_job(kiln, world.tmp, "second")
    world.clock.set(ended_at(world, second))
    assert await world.sim.deliver_due_webhooks() == 2
    order = [a.batch_id for a in world.sim.counters.webhook_attempts]
    assert order == [second.vendor_id, first.vendor_id]  # newest first
    stale = event(str(first.vendor_id), world.clock.now() - 120, kind="batch.failed")
    response = await post(
        world.receiver, stale, webhook_id="wh_old", at=world.clock.now(), secret=world.secret
    )
    assert response.status_code == 200
    assert await kiln.run_once() == 2
    for batch in (first, second):
        assert (await world.store.batches.get(batch.id)).state == State.COMPLETED


async def test_an_unknown_batch_id_is_acknowledged_and_recorded(world: World) -> None:
    """An event for a batch we never made: 2xx (so it is not retried for days), recorded."""
    now = world.clock.now()
    response = await post(
        world.receiver, event("batch_not_ours", now), webhook_id="wh_u", at=now, secret=world.secret
    )
    assert response.status_code == 200 and response.json()["known"] is False
    assert await world.store.webhooks.seen("wh_u")
    reasons = [e.reason async for e in world.store.audit.stream() if e.kind == "webhook.received"]
    assert reasons == ["batch.completed for unknown batch"]


async def test_old_and_new_secrets_are_both_accepted_during_a_rotation(world: World) -> None:
    """Either configured secret verifies; a third does not."""
    old, new = new_secret(), new_secret()
    app = webhook_app(world.store, [old, new])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://k") as c:
        now = world.clock.now()
        statuses = [
            (await post(c, event("b", now), webhook_id=f"wh_{i}", at=now, secret=s)).status_code
            for i, s in enumerate([old, new, new_secret()])
        ]
    assert statuses == [200, 200, 400]


async def test_a_lost_webhook_still_ends_in_detection_by_the_safety_net(world: World) -> None:
    """The event is dropped; the hourly safety-net check finds the batch ended."""
    world.sim.faults = Faults(webhook_drop=1.0)
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "lost")
    world.clock.set(ended_at(world, batch))
    assert await world.sim.deliver_due_webhooks() == 0
    assert world.sim.counters.webhook_dropped == 1
    await Worker(kiln).run(max_steps=2)  # the safety-net check, then the download
    row = await world.store.batches.get(batch.id)
    assert row.state == State.DONE
    assert row.detected_at == batch.next_check_at
    latency = detection_latency(row)
    assert latency is not None and 0 < latency <= SAFETY_NET


async def test_hybrid_polls_back_off_to_half_an_hour_and_the_webhook_catches_the_end(
    world: World,
) -> None:
    """Hybrid: checks spread out to the 30 minute cap; the webhook gives detection at once."""
    world.sim.faults = Faults(processing_seconds=4 * 3600)
    kiln = world.kiln(TrackingMode.HYBRID)
    batch = await submit_job(kiln, world.tmp, "hybrid")
    end = ended_at(world, batch)
    gaps = []
    while (row := await world.store.batches.get(batch.id)).state in (
        State.PENDING,
        State.IN_PROGRESS,
    ):
        assert row.next_check_at is not None
        at = min(row.next_check_at, end)
        gaps.append(at - world.clock.now())
        world.clock.set(at)
        await world.sim.deliver_due_webhooks()
        await kiln.run_once()
    assert row.state == State.COMPLETED and detection_latency(row) == 0
    assert 300 < max(gaps) <= 1800
    assert calls(world.sim, "openai", RETRIEVE) < 40  # 5-minute polling takes ~100 in 4 h


class Stuck(FakeClock):
    """The world's time, but an idle sleep never ends on its own."""

    def __init__(self, inner: FakeClock) -> None:
        self.inner = inner

    def now(self) -> float:
        return self.inner.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def test_a_webhook_wakes_an_idle_worker(world: World) -> None:
    """The worker idles (its next check is an hour off) until the receiver wakes it."""
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "wake")
    world.clock.set(ended_at(world, batch))
    idle = Kiln(
        world.store, world.providers, clock=Stuck(world.clock), tracking=TrackingMode.WEBHOOK
    )
    worker = Worker(idle)
    app = webhook_app(world.store, [world.secret], on_due=worker.wake)
    running = asyncio.create_task(worker.run(max_steps=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://k") as c:
        now = world.clock.now()
        payload = event(str(batch.vendor_id), now)
        assert (await post(c, payload, webhook_id="wh_w", at=now, secret=world.secret)).is_success
    assert await asyncio.wait_for(running, timeout=10) == 1
    assert (await world.store.batches.get(batch.id)).state == State.COMPLETED
