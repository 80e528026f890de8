"""Polling with backoff through the real engine, adapters and simulator, on a fake
clock: the persisted schedule, retry-after, failing reads, and ETA scheduling."""

from __future__ import annotations

from batchkiln.cli.views import status_json
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import Backoff, TrackingMode, TrackingPolicy
from batchkiln.lifecycle import State
from batchkiln.simulator import Faults
from batchkiln.store import BatchRow

from .conftest import World
from .helpers import RETRIEVE, calls, submit_job

EXACT = TrackingPolicy(poll=Backoff(jitter=False, eta=False), list_refresh=False)


async def _check_when_due(world: World, kiln: Kiln, batch: BatchRow) -> BatchRow:
    """Move the clock to the batch's next check and run that check."""
    assert batch.next_check_at is not None
    world.clock.set(batch.next_check_at)
    assert await kiln.run_once() == 1
    return await world.store.batches.get(batch.id)


async def test_the_schedule_doubles_from_ten_seconds_to_the_cap_and_survives_a_restart(
    world: World,
) -> None:
    """Checks come 10, 20, 40 ... 300 s apart, restart at 10 s on a change, and a
    new worker continues from the persisted attempt."""
    world.sim.faults = Faults(queue_delay_seconds=30, processing_seconds=7200)
    kiln = world.kiln(EXACT)
    batch = await submit_job(kiln, world.tmp, "sched")
    seen = [(batch.next_check_at - world.clock.now(), batch.check_attempt, batch.state)]  # type: ignore[operator]
    for _ in range(8):
        batch = await _check_when_due(world, kiln, batch)
        seen.append((batch.next_check_at - world.clock.now(), batch.check_attempt, batch.state))  # type: ignore[operator]
    assert [(d, a) for d, a, _ in seen] == [
        (10, 0),  # first check 10 s after the vendor accepted
        (20, 1),  # still validating
        (10, 0),  # in_progress: a change restarts the doubling
        (20, 1),
        (40, 2),
        (80, 3),
        (160, 4),
        (300, 5),
        (300, 6),  # the cap
    ]
    assert [s for _, _, s in seen[:2]] == [State.PENDING] * 2
    assert {s for _, _, s in seen[2:]} == {State.IN_PROGRESS}
    restarted = world.kiln(EXACT, worker="w2")
    batch = await _check_when_due(world, restarted, batch)
    assert (batch.next_check_at - world.clock.now(), batch.check_attempt) == (300, 7)  # type: ignore[operator]


async def test_retry_after_pushes_the_next_check_out(world: World) -> None:
    """A 429 with retry-after: 120 s is waited out, counted as a call, not a change."""
    kiln = world.kiln(EXACT)
    batch = await submit_job(kiln, world.tmp, "ra")
    calls_before = batch.vendor_calls
    world.sim.faults = Faults(rate_limit_rate=1.0, retry_after_seconds=120)
    batch = await _check_when_due(world, kiln, batch)
    assert batch.state == State.PENDING and batch.check_attempt == 1
    assert batch.next_check_at == world.clock.now() + 120  # not the 20 s backoff
    assert batch.vendor_calls == calls_before + 1
    kinds = [e.kind for e in await world.store.audit.for_job(batch.job_id)]
    assert kinds[-1] == "poll.failed"


async def test_reads_failing_then_recovering_back_off_without_changing_state(
    world: World,
) -> None:
    """Three 5xx reads double the wait and leave the state alone; the fourth read lands."""
    world.sim.faults = Faults(processing_seconds=600)
    kiln = world.kiln(EXACT)
    batch = await submit_job(kiln, world.tmp, "5xx")
    world.sim.faults = Faults(read_5xx_count=3)
    waits = []
    for _ in range(3):
        batch = await _check_when_due(world, kiln, batch)
        assert batch.state == State.PENDING
        waits.append(batch.next_check_at - world.clock.now())  # type: ignore[operator]
    assert waits == [20, 40, 80] and batch.check_attempt == 3
    batch = await _check_when_due(world, kiln, batch)
    assert batch.state == State.IN_PROGRESS and batch.check_attempt == 0
    events = await world.store.audit.for_job(batch.job_id)
    assert [e.kind for e in events].count("poll.failed") == 3
    moves = [e.to_state for e in events if e.to_state is not None]
    assert moves[moves.index("pending") :] == ["pending", "in_progress"]  # none from a failed read
    assert calls(world.sim, "openai", RETRIEVE) == 4


async def test_request_counts_schedule_the_next_check_near_the_predicted_finish(
    world: World,
) -> None:
    """Half done after 100 s: look again at about 106 s, not at the 20 s backoff."""
    world.sim.faults = Faults(queue_delay_seconds=0, processing_seconds=200, finalizing_seconds=15)
    policy = TrackingPolicy(poll=Backoff(jitter=False), list_refresh=False)
    kiln = world.kiln(policy)
    batch = await submit_job(kiln, world.tmp, "eta", n=100)
    start = world.clock.now()
    world.clock.set(start + 100)
    await world.store.batches.mark_due(batch.id)
    await kiln.run_once()
    batch = await world.store.batches.get(batch.id)
    assert (batch.vendor_succeeded, batch.vendor_total) == (50, 100)
    assert batch.next_check_at == start + 100 + 100 * 1.05 + 1
    batch = await _check_when_due(world, kiln, batch)  # finalizing now: look again soon
    assert batch.vendor_status == "finalizing" and batch.next_check_at == world.clock.now() + 10
    batch = await _check_when_due(world, kiln, batch)
    assert batch.state == State.COMPLETED
    assert batch.vendor_ended_at == start + 215
    assert batch.detected_at == start + 216


async def test_detection_latency_is_in_the_status_json(world: World) -> None:
    """detected_at - vendor_ended_at is shown per batch, with the calls spent."""
    kiln = world.kiln(TrackingMode.POLL)
    batch = await submit_job(kiln, world.tmp, "lat")
    world.clock.advance(3600)
    await kiln.run_once()
    status = status_json(await kiln.status(batch.job_id))
    (shown,) = status["batches"]
    ended = world.sim.openai_batches[batch.vendor_id].timeline.ended_at()  # type: ignore[index]
    assert shown["vendor_ended_at"] == int(ended)
    assert shown["detection_latency"] == world.clock.now() - int(ended)
    assert shown["vendor_calls"] == 2  # the create, one retrieve


async def test_anthropic_batches_poll_even_in_webhook_mode(world: World) -> None:
    """No Anthropic batch webhooks: its first check is the 10 s poll, OpenAI's the safety net."""
    kiln = world.kiln(TrackingPolicy(mode=TrackingMode.WEBHOOK, list_refresh=False))
    claude = await submit_job(kiln, world.tmp, "claude", vendor="anthropic")
    gpt = await submit_job(kiln, world.tmp, "gpt")
    now = world.clock.now()
    assert claude.next_check_at is not None and claude.next_check_at <= now + 10
    assert gpt.next_check_at == now + 3600
