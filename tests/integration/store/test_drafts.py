"""A Job's draft commits its request rows as it reads them, shows them to no reader until
it publishes the Job, deletes them when it is left unfinished, and a draft that died is
swept once it has been silent for STALE_AFTER."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from sqlalchemy import func, select

import batchkiln.store.drafts as drafts_module
from batchkiln.clock import FakeClock
from batchkiln.store import NewBatch, Store
from batchkiln.store.drafts import JobDraft
from batchkiln.store.tables import (
    audit_events,
    batches,
    idempotency_keys,
    job_drafts,
    jobs,
    request_bodies,
    requests,
)
from batchkiln.store.unpublished import STALE_AFTER, TOUCH_EVERY, DraftSwept

CHUNK = drafts_module.CHUNK


class Row(NamedTuple):
    seq: int
    line: int
    custom_id: str
    canonical: bytes
    shard: int


def rows(n: int, clock: FakeClock | None = None, step: float = 0.0) -> Iterator[Row]:
    """n request rows in one shard; the clock moves `step` seconds per chunk's worth."""
    for i in range(n):
        if clock is not None and i and not i % CHUNK:
            clock.advance(step)
        yield Row(i, i + 1, f"r{i}", b'{"n":%d}' % i, 0)


class Died(Exception):
    """The rows' reader fails, and (with `no_cleanup`) the process dies with it."""


def dying(n: int) -> Iterator[Row]:
    yield from rows(n)
    raise Died("killed mid-read")


@pytest.fixture
def no_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A draft left unfinished leaves its rows, as a killed process does."""

    async def killed(*args: Any) -> None:
        return None

    monkeypatch.setattr(drafts_module, "_discard", killed)


async def _counts(store: Store) -> dict[str, int]:
    tables = (jobs, batches, idempotency_keys, requests, request_bodies, job_drafts)
    async with store.engine.connect() as conn:
        return {
            t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
            for t in tables
        }


def _empty() -> dict[str, int]:
    names = ("jobs", "batches", "idempotency_keys", "requests", "request_bodies", "job_drafts")
    return dict.fromkeys(names, 0)


async def _finish(draft: JobDraft, n: int, key: str = "k-draft") -> None:
    batch = NewBatch(key=f"{key}:s0:a1", tag="t0000001", shard=0, start=0, stop=n, wire_bytes=9)
    await draft.finish(
        key=key,
        fingerprint="f" * 64,
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        request_count=n,
        new_batches=[batch],
        estimate=None,
    )


def _draft(store: Store) -> Any:
    return store.jobs.draft(provider="openai", source="in.jsonl", options={}, worker="w1")


async def test_rows_are_committed_as_written_and_shown_by_no_reader(store: Store) -> None:
    """Mid-draft, other connections see the committed request rows but no job, batch or
    key; the Job appears whole when the draft is published."""
    n = 2 * CHUNK + 3
    async with _draft(store) as draft:
        await draft.write_requests(rows(n))
        during = await _counts(store)
        assert await store.jobs.list() == []
        await _finish(draft, n)
    assert during == {**_empty(), "requests": n, "request_bodies": n, "job_drafts": 1}
    assert await _counts(store) == {
        **_empty(),
        "jobs": 1,
        "batches": 1,
        "idempotency_keys": 2,
        "requests": n,
        "request_bodies": n,
    }
    (job,) = await store.jobs.list()
    assert job.id == draft.job_id and job.request_count == n
    assert await store.ledger.job_counts(job.id) == {"pending": n}


async def test_a_draft_left_unfinished_deletes_its_rows(store: Store) -> None:
    """An error mid-read, or leaving without `finish`, deletes every row the draft wrote."""
    with pytest.raises(Died):
        async with _draft(store) as draft:
            await draft.write_requests(dying(CHUNK + 5))
    assert await _counts(store) == _empty()
    async with _draft(store) as draft:
        await draft.write_requests(rows(7))
    assert await _counts(store) == _empty()


@pytest.mark.usefixtures("no_cleanup")
async def test_a_dead_drafts_rows_are_swept_once_it_is_silent_for_stale_after(
    store: Store, clock: FakeClock
) -> None:
    """What a killed draft committed stays until it has been silent for STALE_AFTER,
    then the sweep deletes it and audits how many requests went."""
    with pytest.raises(Died):
        async with _draft(store) as draft:
            await draft.write_requests(dying(CHUNK + 5))
    left = await _counts(store)  # the chunk written before the read failed
    assert left == {**_empty(), "requests": CHUNK, "request_bodies": CHUNK, "job_drafts": 1}
    clock.advance(STALE_AFTER - 1)
    assert await store.jobs.sweep_drafts() == []
    clock.advance(2)
    assert await store.jobs.sweep_drafts() == [draft.job_id]
    assert await _counts(store) == _empty()
    async with store.engine.connect() as conn:
        (event,) = (await conn.execute(select(audit_events))).mappings().all()
    assert event["kind"] == "draft.swept"
    assert event["data"]["draft"] == draft.job_id and event["data"]["requests"] == CHUNK


@pytest.mark.usefixtures("no_cleanup")
async def test_every_new_draft_sweeps_the_stale_ones_first(store: Store, clock: FakeClock) -> None:
    """A submission after the silence sweeps a dead one's rows and keeps its own."""
    with pytest.raises(Died):
        async with _draft(store) as dead:
            await dead.write_requests(dying(10))
    clock.advance(STALE_AFTER + 1)
    async with _draft(store) as draft:
        await draft.write_requests(rows(4))
        await _finish(draft, 4)
    assert await _counts(store) == {
        **_empty(),
        "jobs": 1,
        "batches": 1,
        "idempotency_keys": 2,
        "requests": 4,
        "request_bodies": 4,
    }


async def test_a_draft_swept_while_alive_publishes_nothing(store: Store, clock: FakeClock) -> None:
    """A draft taken for dead (silent too long) finds its row gone at `finish`: DraftSwept,
    no Job, and nothing of it left."""
    with pytest.raises(DraftSwept, match="submit the file again"):
        async with _draft(store) as draft:
            await draft.write_requests(rows(CHUNK + 1))
            clock.advance(STALE_AFTER + 1)
            assert await store.jobs.sweep_drafts() == [draft.job_id]
            await _finish(draft, CHUNK + 1)
    assert await _counts(store) == _empty()


async def test_a_draft_that_writes_keeps_its_row_touched(store: Store, clock: FakeClock) -> None:
    """A draft whose read takes longer than STALE_AFTER in all, but never stops for
    TOUCH_EVERY, is not swept and publishes."""
    n = 5 * CHUNK
    step = TOUCH_EVERY + 1  # between chunks: each one written touches the mark
    async with _draft(store) as draft:
        await draft.write_requests(rows(n, clock, step))  # the last touch at 4 steps
        clock.advance(STALE_AFTER - step)  # past STALE_AFTER since the start, not the touch
        assert await store.jobs.sweep_drafts() == []
        await _finish(draft, n)
    assert (await _counts(store))["jobs"] == 1


async def test_a_slow_read_writes_what_it_has_to_keep_its_mark_touched(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that come slowly (far fewer than a chunk in TOUCH_EVERY) are written as they
    are, at least every TOUCH_EVERY and a few rows, so the mark stays touched while the
    read goes on and the draft is not swept."""
    real = drafts_module.insert_together
    written_at: list[float] = []

    async def noting(*args: Any, **kwargs: Any) -> None:
        written_at.append(clock.now())
        await real(*args, **kwargs)

    def trickle(n: int) -> Iterator[Row]:
        for row in rows(n):
            clock.advance(1.0)  # one request a second
            yield row

    monkeypatch.setattr(drafts_module, "insert_together", noting)
    start = clock.now()
    async with _draft(store) as draft:
        await draft.write_requests(trickle(900))  # 15 minutes, well under a chunk
        assert await store.jobs.sweep_drafts() == []
        await _finish(draft, 900)
    gaps = [b - a for a, b in zip([start, *written_at], [*written_at, clock.now()], strict=True)]
    assert len(written_at) > 20 and max(gaps) <= TOUCH_EVERY + 16
    assert (await _counts(store))["requests"] == 900


async def test_a_draft_whose_row_was_swept_stops_at_its_next_touch(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swept while still reading (another process took it for dead), a draft stops at
    the next chunk that touches its row and deletes what it wrote since."""
    swept: list[str] = []
    real_touch = JobDraft._touch

    async def swept_just_before(self: JobDraft) -> None:
        swept.extend(await store.jobs.sweep_drafts())  # another process's sweep
        await real_touch(self)

    def stalled(n: int) -> Iterator[Row]:
        for row in rows(n):
            if row.seq == CHUNK + 1:
                clock.advance(STALE_AFTER + 1)  # the reader stalls for minutes
            yield row

    monkeypatch.setattr(JobDraft, "_touch", swept_just_before)
    with pytest.raises(DraftSwept):
        async with _draft(store) as draft:
            await draft.write_requests(stalled(3 * CHUNK))
    assert swept == [draft.job_id]
    assert await _counts(store) == _empty()
