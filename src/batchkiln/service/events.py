"""Server-sent events: the audit log, followed live.

Every event goes out as

    id: <audit event id>
    event: audit
    data: {"id": ..., "at": ..., "kind": ..., "job_id": ..., "batch_id": ...,
           "from_state": ..., "to_state": ..., "reason": ..., "worker": ..., "data": {...}}

in id order. A client that reconnects with `Last-Event-ID: N` (what EventSource
sends by itself) or `?after=N` gets every event after N exactly once, in order,
because the stream *is* the audit log, read from the database.

On PostgreSQL ids come from a sequence, so a transaction holding id 7 can commit
after one holding id 8. The stream therefore emits only contiguous ids: a gap is
waited for (up to GAP_WAIT_SECONDS, which covers any real transaction here) and
then skipped (a rolled-back transaction leaves a permanent gap). On SQLite writers
are serialised (BEGIN IMMEDIATE), so ids commit in order and there is no wait.
A comment line goes out every HEARTBEAT_SECONDS so proxies keep the stream open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson

from batchkiln.service.resources import event_resource
from batchkiln.store import Store

POLL_SECONDS = 0.2
GAP_WAIT_SECONDS = 5.0
HEARTBEAT_SECONDS = 15.0
PAGE = 500


def format_event(event_id: int, payload: bytes) -> bytes:
    return b"id: %d\nevent: audit\ndata: %s\n\n" % (event_id, payload)


async def follow(
    store: Store,
    *,
    after: int,
    job_id: str | None = None,
    limit: int | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of audit events after `after` (for ever, or `limit` events)."""
    yield b"retry: 1000\n\n"
    last = after
    sent = 0
    gap_since: float | None = None
    beat = time.monotonic()
    contiguous = store.engine.dialect.name == "postgresql"
    while True:
        page = await store.listing.events_after(last, limit=PAGE)
        progressed = False
        for event in page:
            if contiguous and event.id != last + 1 and last > 0:
                now = time.monotonic()
                gap_since = gap_since or now
                if now - gap_since < GAP_WAIT_SECONDS:
                    break  # an earlier id may still commit: read again shortly
            gap_since = None
            last = event.id
            progressed = True
            if job_id is not None and event.job_id != job_id:
                continue
            payload = orjson.dumps(event_resource(event).model_dump())
            yield format_event(event.id, payload)
            sent += 1
            if limit is not None and sent >= limit:
                return
        if progressed and len(page) == PAGE:
            continue
        if time.monotonic() - beat >= HEARTBEAT_SECONDS:
            beat = time.monotonic()
            yield b": keep-alive\n\n"
        await asyncio.sleep(poll_seconds)


def parse_last_event_id(header: str | None, after: int | None) -> int:
    """Where to resume: Last-Event-ID (a reconnect) wins over ?after=; default 0."""
    if header is not None and header.strip().isdigit():
        return int(header.strip())
    return max(0, after or 0)
