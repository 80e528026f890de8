"""Guarded transitions: compare-and-set on (id, from-state), audited in the same transaction."""

from __future__ import annotations

import asyncio

import pytest

from batchkiln.lifecycle import Event, IllegalTransition, State
from batchkiln.store import StaleTransition, Store

from .helpers import make_job


async def test_transition_moves_the_state_and_appends_one_audit_event(store: Store) -> None:
    """A legal transition changes the row and writes exactly one event naming from and to."""
    job = await make_job(store)
    (batch,) = await store.batches.for_job(job.id)
    before = len(await store.audit.for_job(job.id))
    await store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT, reason="test")
    assert (await store.batches.get(batch.id)).state == State.SUBMITTING
    events = await store.audit.for_job(job.id)
    assert len(events) == before + 1
    assert (events[-1].from_state, events[-1].to_state) == ("not_submitted", "submitting")
    assert events[-1].kind == "batch.submit"


async def test_a_transition_outside_the_table_is_refused_and_changes_nothing(store: Store) -> None:
    """An illegal event raises before touching the row or the audit log."""
    job = await make_job(store)
    (batch,) = await store.batches.for_job(job.id)
    before = len(await store.audit.for_job(job.id))
    with pytest.raises(IllegalTransition):
        await store.batches.transition(batch, State.NOT_SUBMITTED, Event.VENDOR_COMPLETED)
    assert (await store.batches.get(batch.id)).state == State.NOT_SUBMITTED
    assert len(await store.audit.for_job(job.id)) == before


async def test_a_stale_from_state_is_refused(store: Store) -> None:
    """A writer whose view is out of date gets StaleTransition and no event is written."""
    job = await make_job(store)
    (batch,) = await store.batches.for_job(job.id)
    await store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
    before = len(await store.audit.for_job(job.id))
    with pytest.raises(StaleTransition) as info:
        await store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
    assert info.value.actual == State.SUBMITTING
    assert len(await store.audit.for_job(job.id)) == before


async def test_two_concurrent_writers_cannot_both_win(store: Store) -> None:
    """Of many concurrent compare-and-set writers from one state, exactly one succeeds."""
    job = await make_job(store)
    (batch,) = await store.batches.for_job(job.id)

    async def attempt() -> bool:
        try:
            await store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
        except StaleTransition:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert outcomes.count(True) == 1
    submits = [e for e in await store.audit.for_job(job.id) if e.kind == "batch.submit"]
    assert len(submits) == 1


async def test_state_cannot_be_changed_through_plain_updates(store: Store) -> None:
    """Bookkeeping updates refuse to touch the state column."""
    job = await make_job(store)
    (batch,) = await store.batches.for_job(job.id)
    with pytest.raises(ValueError):
        await store.batches.update(batch.id, state="done")
