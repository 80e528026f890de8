"""Pieces both adapters use: JSONL lines from a byte stream, and a listing cut
to a time window without trusting an unconfirmed sort order."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from batchkiln.providers.base import VendorBatch


async def jsonl_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Each non-blank line of a streamed JSONL body, without its line ending, as it
    arrives (only one partial line is held in memory)."""
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            line = bytes(pending[start:end]).rstrip(b"\r")
            if line.strip():
                yield line
            start = end + 1
        del pending[:start]
    tail = bytes(pending).rstrip(b"\r")
    if tail.strip():
        yield tail


async def within_window(
    listed: AsyncIterator[VendorBatch], *, since: float
) -> AsyncIterator[VendorBatch]:
    """The batches of a vendor listing created at or after `since`, newest first.

    While the listing reads newest-first (no batch newer than the one before it)
    batches are passed through as they arrive, and the listing is cut at the first
    batch older than `since` once a strictly older batch has proven the order. If a
    newer batch ever follows an older one the order is not newest-first, so the
    rest is read to the end and what falls in the window is sorted before it is
    given out. Ties alone prove nothing, so an all-equal listing is read fully."""
    previous: float | None = None
    proven_descending = False
    unordered = False
    held: list[VendorBatch] = []
    async for batch in listed:
        if previous is not None:
            if batch.created_at > previous:
                unordered = True
            elif batch.created_at < previous:
                proven_descending = True
        previous = batch.created_at
        if batch.created_at < since:
            if proven_descending and not unordered:
                break
            continue
        if unordered:
            held.append(batch)
        else:
            yield batch
    held.sort(key=lambda b: b.created_at, reverse=True)
    for batch in held:
        yield batch
