"""Refreshing many due batches of one provider with the vendor's list endpoint.

A list page returns up to 100 batches (OpenAI) or 1000 (Anthropic), newest
first, for the price of one retrieve. When several live batches of a provider
are due together (the schedule rounds checks up to a tick grid so they do),
we page until every one of them is found, then apply each snapshot exactly as
a retrieve would be applied. Paging stops once it has cost one call less than
retrieving each would; whatever it has not found is retrieved one by one.

Every page lists other batches too. Those snapshots are kept for a few
seconds, and a batch of ours that a page shows ended, or whose own check is
due within a minute anyway, is marked due: the next round applies the kept
snapshot without another call. So one deep listing detects every ended batch
it passed, and batches whose checks are close together end up checked
together. Snapshots always come from the vendor; nothing is taken from a
webhook.

Calls are counted once: each page is charged to the first due batch it found
(a page that found none, to the batch it was paging towards), so the
per-batch `vendor_calls` still add up to what the vendor served.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from batchkiln.clock import Clock
from batchkiln.engine.step import StepResult
from batchkiln.engine.tracking import Tracker
from batchkiln.lifecycle import ENDED_AT_VENDOR, LIVE_AT_VENDOR
from batchkiln.providers.base import Provider, VendorBatch, VendorError
from batchkiln.store import BatchRow, JobRow, StaleTransition, Store

LIST_SLACK = 120.0  # clock skew between us and the vendor's created_at
SNAPSHOT_MAX_AGE = 5.0  # a listed snapshot stands in for a retrieve this long


@dataclass
class Listing:
    """What one paging pass saw."""

    pages: int = 0
    seen: dict[str, VendorBatch] = field(default_factory=dict)
    page_of: dict[str, int] = field(default_factory=dict)  # wanted vendor id -> page index
    error: VendorError | None = None


class ListRefresher:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        tracker: Tracker,
        provider: Callable[[str], Provider],
        *,
        max_age: float = SNAPSHOT_MAX_AGE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tracker = tracker
        self.provider = provider
        self.max_age = max_age
        self._kept: dict[tuple[str, str], tuple[float, VendorBatch]] = {}

    async def refresh(
        self, claimed: Sequence[BatchRow], jobs: Mapping[str, JobRow]
    ) -> dict[str, StepResult]:
        """Step results for the claimed live batches a list call (or a kept
        snapshot) covered, by batch id; the others are left to their own step.
        `jobs` holds the claimed batches' Jobs by id."""
        if not self.tracker.policy.list_refresh:
            return {}
        now = self.clock.now()
        self._kept = {k: v for k, v in self._kept.items() if now - v[0] <= self.max_age}
        groups: dict[str, list[BatchRow]] = {}
        for batch in claimed:
            if batch.state in LIVE_AT_VENDOR and batch.vendor_id is not None:
                groups.setdefault(jobs[batch.job_id].provider, []).append(batch)
        done: dict[str, StepResult] = {}
        for name, batches in groups.items():
            try:
                provider = self.provider(name)
            except LookupError:  # not configured here: each batch's own step says so
                continue
            wanted = []
            for batch in batches:
                kept = self._kept.pop((name, str(batch.vendor_id)), None)
                if kept is None:
                    wanted.append(batch)
                else:
                    done[batch.id] = await self._apply(batch, kept[1], provider, "list (kept)")
            if len(wanted) >= 2:
                done.update(await self._list(name, provider, wanted))
        return done

    async def _list(
        self, name: str, provider: Provider, wanted: list[BatchRow]
    ) -> dict[str, StepResult]:
        by_vendor = {str(b.vendor_id): b for b in wanted}
        listing = await self._page(provider, wanted)
        await self._charge(listing, wanted)
        done: dict[str, StepResult] = {}
        via = f"list ({listing.pages} call(s) for {len(wanted)} due batches)"
        for vendor_id, batch in by_vendor.items():
            snapshot = listing.seen.get(vendor_id)
            if snapshot is not None:
                done[batch.id] = await self._apply(batch, snapshot, provider, via)
            elif listing.error is not None:  # a failed read: back off, do not retry one by one
                done[batch.id] = await self.tracker.read_failed(
                    batch, provider, listing.error, what="list"
                )
        others = {k: v for k, v in listing.seen.items() if k not in by_vendor}
        now = self.clock.now()
        for vendor_id, snapshot in others.items():
            self._kept[(name, vendor_id)] = (now, snapshot)
        if others:
            await self._ride_along(others, now)
        return done

    async def _ride_along(self, others: dict[str, VendorBatch], now: float) -> None:
        """Mark due our live batches a page showed ended or whose check is near."""
        horizon = now + self.tracker.policy.list_lookahead / self.tracker.scale
        for row in await self.store.batches.live():
            snapshot = others.get(str(row.vendor_id))
            if snapshot is None or row.state not in LIVE_AT_VENDOR:
                continue
            soon = row.next_check_at is not None and row.next_check_at <= horizon
            if soon or snapshot.state in ENDED_AT_VENDOR:
                await self.store.batches.mark_due(row.id)

    async def _page(self, provider: Provider, wanted: list[BatchRow]) -> Listing:
        """Page through the vendor's listing until every wanted batch is found, the
        window ends, or the pages would cost as much as retrieving each."""
        size = max(1, provider.list_page_size)
        budget = len(wanted) - 1
        want = {str(b.vendor_id) for b in wanted}
        now = self.clock.now()
        since = min(b.vendor_created_at or now for b in wanted) - LIST_SLACK
        listing = Listing()
        count = 0
        stream = provider.list_recent(since=since)
        try:
            async for snapshot in stream:
                listing.seen[snapshot.vendor_id] = snapshot
                if snapshot.vendor_id in want:
                    listing.page_of[snapshot.vendor_id] = count // size
                count += 1
                if len(listing.page_of) == len(want):
                    break
                if count % size == 0 and count // size >= budget:
                    break
        except VendorError as exc:
            listing.error = exc
        finally:
            await _close(stream)
        listing.pages = max(1, math.ceil(count / size) + (1 if listing.error else 0))
        return listing

    async def _charge(self, listing: Listing, wanted: list[BatchRow]) -> None:
        ids = {str(b.vendor_id): b.id for b in wanted}
        charges: dict[str, int] = {}
        owed = 0
        for page in range(listing.pages):
            owed += 1
            on_page = [vid for vid, p in listing.page_of.items() if p == page]
            if on_page:
                batch_id = ids[on_page[0]]
                charges[batch_id] = charges.get(batch_id, 0) + owed
                owed = 0
        if owed:
            unfound = [b for b in wanted if str(b.vendor_id) not in listing.page_of]
            oldest = min(unfound or wanted, key=lambda b: b.vendor_created_at or 0.0)
            charges[oldest.id] = charges.get(oldest.id, 0) + owed
        for batch_id, calls in charges.items():
            await self.store.batches.add_vendor_calls(batch_id, calls)

    async def _apply(
        self, batch: BatchRow, snapshot: VendorBatch, provider: Provider, via: str
    ) -> StepResult:
        try:
            return await self.tracker.apply(batch, snapshot, provider, via=via)
        except StaleTransition as exc:
            return StepResult(0, str(exc))


async def _close(stream: AsyncIterator[VendorBatch]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
