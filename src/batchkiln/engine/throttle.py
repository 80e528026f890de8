"""Vendor calls, bounded and slowed together.

Each provider the engine uses is wrapped in a `ThrottledProvider`:

- at most `limit` calls to one vendor run at once in this worker (an asyncio
  semaphore per vendor), so a worker stepping 8 batches at once never opens more
  connections to a vendor than its rate limits are sized for;
- a 429 with `retry-after` from a vendor is written to the store
  (`vendor_pauses`), and every worker's next call to that vendor waits until it
  has passed: one worker told to slow down slows all of them. A short pause
  (up to `max_wait`) is waited out in place; a longer one fails the call with a
  retryable VendorError carrying the remaining time, so the step is rescheduled
  and its slot goes to other work.

The pause is read from the store at most once a second per vendor (a cache), so
a busy worker does not double its queries; a pause this process sets is seen at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from batchkiln.clock import Clock
from batchkiln.errors import VendorError
from batchkiln.providers.base import CreateSpec, Provider, ResultLine, VendorBatch
from batchkiln.store import Store

DEFAULT_LIMIT = 8
DEFAULT_RETRY_AFTER = 30.0  # a 429 without retry-after
MAX_WAIT = 5.0
CACHE_SECONDS = 1.0  # real seconds a pause read from the store is trusted


class Throttle:
    """Per-vendor concurrency limits and the shared 429 pause, for one worker."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker: str,
        *,
        limits: Mapping[str, int] | None = None,
        default_limit: int = DEFAULT_LIMIT,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.limits = dict(limits or {})
        self.default_limit = default_limit
        self.max_wait = max_wait
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._pauses: dict[str, tuple[float, float | None]] = {}  # vendor -> (read at, until)
        self._wrapped: dict[int, ThrottledProvider] = {}
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def wrap(self, provider: Provider) -> Provider:
        if isinstance(provider, ThrottledProvider):
            return provider
        wrapped = self._wrapped.get(id(provider))
        if wrapped is None or wrapped.inner is not provider:
            wrapped = self._wrapped[id(provider)] = ThrottledProvider(provider, self)
        return wrapped

    async def _paused_until(self, vendor: str) -> float | None:
        cached = self._pauses.get(vendor)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        until = await self.store.pauses.until(vendor)
        self._pauses[vendor] = (time.monotonic(), until)
        return until

    @contextlib.asynccontextmanager
    async def gate(self, vendor: str) -> AsyncIterator[None]:
        """Wait out a shared pause, take a call slot, and note a 429 if one comes back."""
        until = await self._paused_until(vendor)
        remaining = 0.0 if until is None else until - self.clock.now()
        if remaining > self.max_wait:
            raise VendorError(
                f"{vendor} asked every worker to back off for {remaining:.0f} s more (429)",
                retryable=True,
                status=429,
                code="paused",
                retry_after=remaining,
            )
        if remaining > 0:
            await self.clock.sleep(remaining)
        semaphore = self._semaphores.get(vendor)
        if semaphore is None:
            limit = self.limits.get(vendor, self.default_limit)
            semaphore = self._semaphores[vendor] = asyncio.Semaphore(max(1, limit))
        async with semaphore:
            self.in_flight[vendor] = self.in_flight.get(vendor, 0) + 1
            self.peak[vendor] = max(self.peak.get(vendor, 0), self.in_flight[vendor])
            try:
                yield
            except VendorError as exc:
                if exc.status == 429:
                    await self._pause(vendor, exc)
                raise
            finally:
                self.in_flight[vendor] -= 1

    async def _pause(self, vendor: str, exc: VendorError) -> None:
        wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
        until = self.clock.now() + wait
        await self.store.pauses.pause(
            vendor, until, reason=f"429: {exc.message}"[:500], worker=self.worker
        )
        self._pauses[vendor] = (time.monotonic(), until)


class ThrottledProvider:
    """A Provider whose every call goes through the worker's Throttle."""

    def __init__(self, inner: Provider, throttle: Throttle) -> None:
        self.inner = inner
        self.throttle = throttle
        self.name = inner.name
        self.supports_webhooks = inner.supports_webhooks
        self.list_page_size = inner.list_page_size

    def __getattr__(self, name: str) -> Any:  # anything else an adapter offers
        return getattr(self.inner, name)

    async def create(self, spec: CreateSpec) -> VendorBatch:
        async with self.throttle.gate(self.name):
            return await self.inner.create(spec)

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        async with self.throttle.gate(self.name):
            return await self.inner.retrieve(vendor_id)

    async def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        async with self.throttle.gate(self.name):
            stream = self.inner.list_recent(since=since)
            try:
                async for batch in stream:
                    yield batch
            finally:
                await _close(stream)

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        async with self.throttle.gate(self.name):
            return await self.inner.find_candidates(spec, since=since)

    async def cancel(self, vendor_id: str) -> VendorBatch:
        async with self.throttle.gate(self.name):
            return await self.inner.cancel(vendor_id)

    async def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        async with self.throttle.gate(self.name):
            stream = self.inner.results(batch)
            try:
                async for line in stream:
                    yield line
            finally:
                await _close(stream)

    async def cleanup(self, batch: VendorBatch) -> None:
        async with self.throttle.gate(self.name):
            await self.inner.cleanup(batch)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


__all__ = ["DEFAULT_LIMIT", "Throttle", "ThrottledProvider"]
