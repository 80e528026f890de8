"""The lease heartbeat: a batch being stepped stays leased to its worker.

A claim leases a batch for `lease_seconds` (KILN_LEASE_SECONDS, about a minute).
While the step runs (a create call, a 200 MB download), the keeper renews every
held lease each third of that, so a long step never loses its lease half-way,
and a worker that dies (SIGKILL, a lost machine) stops renewing: its leases run
out within a minute and another worker resumes each batch from its persisted
state. This replaces the old rule "a create call must time out well below the
lease": the lease now outlives any call for as long as the caller is alive.

A lease found taken over at a renewal (this process stalled past its lease and
another worker claimed the batch) is lost: the step's task is cancelled, and its
writes would be refused anyway (store.leases guards every write of a step).

The keeper sleeps in real time: `lease_seconds` are clock seconds, so on a scaled
clock (`--speed`) it renews `speed` times as often; a test's fake clock has no real
pace, so no background heartbeat runs there and tests call `beat()` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from batchkiln.clock import Clock, ScaledClock, SystemClock
from batchkiln.store import Store

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3


def real_interval(clock: Clock, lease_seconds: float) -> float | None:
    """Real seconds between heartbeats on `clock` (None: a clock with no real pace)."""
    if isinstance(clock, SystemClock):
        return lease_seconds / RENEWALS_PER_LEASE
    if isinstance(clock, ScaledClock):
        return lease_seconds / RENEWALS_PER_LEASE / clock.speed
    return None


class LeaseKeeper:
    """The leases one worker holds, and the heartbeat that renews them."""

    def __init__(self, store: Store, clock: Clock, worker: str, lease_seconds: float) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.lease_seconds = lease_seconds
        self._held: dict[str, asyncio.Task[None] | None] = {}
        self.lost: set[str] = set()
        self.on_beat: Callable[[list[str]], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    def hold(self, batch_ids: Iterable[str]) -> None:
        for batch_id in batch_ids:
            self._held.setdefault(batch_id, None)
            self.lost.discard(batch_id)

    def holds(self, batch_id: str) -> bool:
        return batch_id in self._held

    def attach(self, batch_id: str, task: asyncio.Task[None]) -> None:
        """The task stepping `batch_id`: cancelled if its lease is lost."""
        self._held[batch_id] = task

    def drop(self, batch_id: str) -> None:
        self._held.pop(batch_id, None)

    def held(self) -> list[str]:
        return sorted(self._held)

    async def beat(self) -> set[str]:
        """Renew every held lease now; returns the ids found lost (their steps cancelled)."""
        ids = list(self._held)
        kept = await self.store.batches.renew(
            ids, worker=self.worker, lease_seconds=self.lease_seconds
        )
        # a lease released while the renewal ran was dropped first: not lost
        lost = {batch_id for batch_id in ids if batch_id not in kept and batch_id in self._held}
        for batch_id in lost:
            task = self._held.pop(batch_id, None)
            self.lost.add(batch_id)
            log.warning("lease on %s lost (taken over after expiry); its step stops", batch_id)
            if task is not None and not task.done():
                task.cancel()
        if self.on_beat is not None:
            await self.on_beat(self.held())
        return lost

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
            except Exception as exc:  # a database blip: try again at the next beat
                log.warning("heartbeat failed: %r", exc)

    @contextlib.asynccontextmanager
    async def beating(self) -> AsyncIterator[None]:
        """Run the background heartbeat for the block (unless one already runs, or the
        clock has no real pace)."""
        interval = real_interval(self.clock, self.lease_seconds)
        if self._task is not None or interval is None:
            yield
            return
        self._task = asyncio.create_task(self._run(interval))
        try:
            yield
        finally:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["RENEWALS_PER_LEASE", "LeaseKeeper", "real_interval"]
