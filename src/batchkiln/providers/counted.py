"""The adapter seam that counts: a Provider wrapped for one step counts every vendor
call the step makes, so the step writes its count once (with its release) instead of
each call site writing its own increment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from batchkiln.providers.base import CreateSpec, Provider, ResultLine, VendorBatch


class CountedProvider:
    """`inner`, counting calls: one per request-response call, one per streamed
    listing or download (however many lines it yields)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.calls = 0
        self.name = inner.name
        self.supports_webhooks = inner.supports_webhooks
        self.list_page_size = inner.list_page_size

    async def create(self, spec: CreateSpec) -> VendorBatch:
        self.calls += 1
        return await self.inner.create(spec)

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        self.calls += 1
        return await self.inner.retrieve(vendor_id)

    def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        self.calls += 1
        return self.inner.list_recent(since=since)

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        self.calls += 1
        return await self.inner.find_candidates(spec, since=since)

    async def cancel(self, vendor_id: str) -> VendorBatch:
        self.calls += 1
        return await self.inner.cancel(vendor_id)

    def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        self.calls += 1
        return self.inner.results(batch)

    async def cleanup(self, batch: VendorBatch) -> None:
        self.calls += 1
        await self.inner.cleanup(batch)

    async def aclose(self) -> None:
        """The inner provider belongs to the App, which closes it."""
