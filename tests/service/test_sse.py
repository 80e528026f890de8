"""The event stream: every audit event, in order; a reconnect with Last-Event-ID
misses nothing and repeats nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from batchkiln import Store
from batchkiln.service.events import follow
from batchkiln.service.serve import serving
from batchkiln.store.audit import append_event

from .conftest import Served, inline_job


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE stream into {"id", "event", "data"} dicts."""
    current: dict[str, Any] = {}
    async for line in lines:
        if line == "":
            if "data" in current:
                yield current
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")


async def test_reconnect_with_last_event_id_gets_every_missed_event_once_in_order(
    served: Served,
) -> None:
    """Disconnect after 3 events, let the job run to the end, reconnect with
    Last-Event-ID: exactly the events after it arrive, in id order, once each."""
    r = await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "sse"})
    job_id = r.json()["id"]
    async with serving(served.api, port=0) as url, httpx.AsyncClient(base_url=url) as client:
        seen: list[dict[str, Any]] = []
        async with client.stream("GET", "/v1/events/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for event in events(stream.aiter_lines()):
                seen.append(event)
                if len(seen) == 3:
                    break  # the client goes away
        await served.drive(job_id)  # many events happen while it is gone
        last = int(seen[-1]["id"])
        missed = [e.id async for e in served.store.audit.stream(after_id=last)]
        assert len(missed) > 10
        resumed: list[dict[str, Any]] = []
        async with client.stream(
            "GET", f"/v1/events/stream?limit={len(missed)}", headers={"Last-Event-ID": str(last)}
        ) as stream:
            async for event in events(stream.aiter_lines()):
                resumed.append(event)
    assert [int(e["id"]) for e in seen] == [1, 2, 3]
    assert [int(e["id"]) for e in resumed] == missed
    for event in resumed:
        data = orjson.loads(event["data"])
        assert event["event"] == "audit"
        assert data["id"] == int(event["id"])
        assert set(data) >= {"at", "kind", "job_id", "batch_id", "from_state", "to_state", "reason"}
    kinds = [orjson.loads(e["data"])["kind"] for e in resumed]
    assert "job.done" in kinds[-2:]


async def test_filter_by_job_and_resume_by_query(served: Served) -> None:
    """?job_id= keeps one job's events; ?after= resumes like Last-Event-ID."""
    a = (
        await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "a"})
    ).json()
    await served.client.post(
        "/v1/jobs", json=inline_job(prefix="b"), headers={"Idempotency-Key": "b"}
    )
    r = await served.client.get(f"/v1/events/stream?job_id={a['id']}&limit=2")
    got = [e async for e in events(_lines(r.text))]
    assert [orjson.loads(e["data"])["job_id"] for e in got] == [a["id"], a["id"]]
    after = int(got[0]["id"])
    r = await served.client.get(f"/v1/events/stream?after={after}&limit=1")
    assert [int(e["id"]) async for e in events(_lines(r.text))] == [after + 1]


async def _lines(text: str) -> AsyncIterator[str]:
    for line in text.split("\n"):
        yield line


async def test_out_of_order_commits_are_emitted_in_id_order_once(store: Store) -> None:
    """PostgreSQL: an event whose transaction commits after a later id's is not
    skipped: the stream waits for the gap, then sends both, in order, once."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): ids commit in order")
    async with store.engine.begin() as conn:
        await append_event(conn, at=0.0, kind="first")
    stream = follow(store, after=1, limit=2, poll_seconds=0.05)
    assert await anext(stream) == b"retry: 1000\n\n"
    slow = await store.engine.connect()
    await slow.begin()
    await append_event(slow, at=0.0, kind="slow")  # id 2, not committed yet
    async with store.engine.begin() as conn:
        await append_event(conn, at=0.0, kind="fast")  # id 3, committed first
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.5)
    assert not pending.done()  # id 3 is held back while id 2 may still commit
    await slow.commit()
    await slow.close()
    first = await asyncio.wait_for(pending, 5)
    second = await asyncio.wait_for(anext(stream), 5)
    assert first.startswith(b"id: 2\n") and b'"slow"' in first
    assert second.startswith(b"id: 3\n") and b'"fast"' in second
