"""List refresh: several due batches of one provider are refreshed with the vendor's
list endpoint instead of one retrieve each, and the calls are still counted once."""

from __future__ import annotations

import pytest

from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import TrackingMode
from batchkiln.lifecycle import State
from batchkiln.simulator import Faults
from batchkiln.store import BatchRow

from .conftest import World
from .helpers import LIST, RETRIEVE, calls, submit_job


async def _submitted(world: World, kiln: Kiln, n: int, *, vendor: str = "openai") -> list[BatchRow]:
    return [await submit_job(kiln, world.tmp, f"{vendor}-{i}", vendor=vendor) for i in range(n)]


async def _only_due(world: World, due: list[BatchRow], others: list[BatchRow]) -> None:
    for batch in others:
        await world.store.batches.mark_due(batch.id, at=world.clock.now() + 86_400)
    for batch in due:
        await world.store.batches.mark_due(batch.id)


async def _total_calls(world: World, batches: list[BatchRow]) -> int:
    return sum([(await world.store.batches.get(b.id)).vendor_calls for b in batches])


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_many_due_batches_are_refreshed_with_one_list_call(world: World, vendor: str) -> None:
    """Twelve due batches: one list call, no retrieve, every batch moved, one call counted."""
    world.sim.faults = Faults(processing_seconds=7200)
    kiln = world.kiln(TrackingMode.POLL)
    batches = await _submitted(world, kiln, 12, vendor=vendor)
    spent = await _total_calls(world, batches)
    world.clock.advance(60)
    assert await kiln.run_once(limit=50) == 12
    assert calls(world.sim, vendor, LIST) == 1
    assert calls(world.sim, vendor, RETRIEVE) == 0
    for batch in batches:
        assert (await world.store.batches.get(batch.id)).state == State.IN_PROGRESS
    assert await _total_calls(world, batches) == spent + 1


async def test_paging_stops_once_retrieving_each_would_be_as_cheap(world: World) -> None:
    """Three due batches, one of them five pages deep: two pages, then one retrieve."""
    world.sim.faults = Faults(processing_seconds=7200)
    world.providers["openai"].list_page_size = 5
    kiln = world.kiln(TrackingMode.POLL)
    batches = await _submitted(world, kiln, 12)
    oldest, *middle, newer, newest = batches
    world.clock.advance(60)
    await _only_due(world, [oldest, newer, newest], middle)
    spent = {b.id: (await world.store.batches.get(b.id)).vendor_calls for b in batches}
    assert await kiln.run_once() == 3
    assert calls(world.sim, "openai", LIST) == 2  # budget: one page less than three retrieves
    assert calls(world.sim, "openai", RETRIEVE) == 1
    after = {b.id: (await world.store.batches.get(b.id)) for b in (oldest, newer, newest)}
    assert {b.state for b in after.values()} == {State.IN_PROGRESS}
    charged = {bid: b.vendor_calls - spent[bid] for bid, b in after.items()}
    assert charged == {
        newest.id: 1,
        newer.id: 0,
        oldest.id: 2,
    }  # a page, a fruitless page + retrieve


async def test_ended_batches_seen_on_a_page_are_detected_without_another_call(
    world: World,
) -> None:
    """Paging down to two due batches passes three newer ones that have ended: all
    five are up to date after two rounds and one call."""
    kiln = world.kiln(TrackingMode.POLL)
    world.sim.faults = Faults(processing_seconds=7200)
    long = [await submit_job(kiln, world.tmp, f"long-{i}") for i in range(2)]
    world.sim.faults = Faults(processing_seconds=60)
    short = await _submitted(world, kiln, 3)
    world.clock.advance(600)
    await _only_due(world, long, short)
    assert await kiln.run_once() == 2
    assert await kiln.run_once() == 3  # the ended ones, marked due by the listing
    assert calls(world.sim, "openai", LIST) == 1
    assert calls(world.sim, "openai", RETRIEVE) == 0
    for batch in short:
        row = await world.store.batches.get(batch.id)
        assert row.state == State.COMPLETED and row.detected_at == world.clock.now()


async def test_a_failed_listing_backs_off_every_batch_it_was_for(world: World) -> None:
    """A 429 on the list call: each due batch waits out retry-after; nothing is retried
    one by one, and the failed call is counted once."""
    kiln = world.kiln(TrackingMode.POLL)
    batches = await _submitted(world, kiln, 3)
    spent = await _total_calls(world, batches)
    world.clock.advance(60)
    world.sim.faults = Faults(rate_limit_rate=1.0, retry_after_seconds=90)
    assert await kiln.run_once() == 3
    assert calls(world.sim, "openai", LIST) == 1
    assert calls(world.sim, "openai", RETRIEVE) == 0
    for batch in batches:
        row = await world.store.batches.get(batch.id)
        assert row.state == State.PENDING and row.check_attempt == 1
        assert row.next_check_at is not None and row.next_check_at >= world.clock.now() + 90
    assert await _total_calls(world, batches) == spent + 1
