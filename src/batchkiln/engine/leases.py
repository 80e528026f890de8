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

A worker that cannot renew at all (the store unreachable, this host cut off from it)
fences itself: once its last successful renewal is `FENCE` of a lease old, it cancels
every step it holds before the leases run out, so no call of its own (a create above
all) is still in flight when another worker may take the batch over. The guarded
writes cover what such a step would store; fencing covers what it would send.

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
FENCE = 0.8  # of a lease since the last renewal: a worker that cannot renew stops its steps


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
        self._renewed_at: float | None = None  # the last renewal that reached the store

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
        started = self.clock.now()
        kept = await self.store.batches.renew(
            ids, worker=self.worker, lease_seconds=self.lease_seconds
        )
        self._renewed_at = started
        # a lease released while the renewal ran was dropped first: not lost
        lost = {batch_id for batch_id in ids if batch_id not in kept and batch_id in self._held}
        for batch_id in lost:
            self._lose(batch_id, "taken over after expiry")
        if self.on_beat is not None:
            await self.on_beat(self.held())
        return lost

    async def tick(self) -> None:
        """One heartbeat: renew, or, if renewing has failed for `FENCE` of a lease, fence
        (cancel every held step: its lease may be another worker's soon)."""
        try:
            await self.beat()
        except Exception as exc:  # a database blip: try again at the next beat
            log.warning("heartbeat failed: %r", exc)
            since = self._renewed_at
            if since is None or self.clock.now() - since < FENCE * self.lease_seconds:
                return
            for batch_id in list(self._held):
                self._lose(batch_id, "not renewed for most of a lease (store unreachable)")

    def _lose(self, batch_id: str, why: str) -> None:
        task = self._held.pop(batch_id, None)
        self.lost.add(batch_id)
        log.warning("lease on %s lost (%s); its step stops", batch_id, why)
        if task is not None and not task.done():
            task.cancel()

    def hold(self, batch_ids: Iterable[str]) -> None:
        ids = list(batch_ids)
        if ids and not self._held:  # the first lease since none was held: just claimed
            self._renewed_at = self.clock.now()
        for batch_id in ids:
            self._held.setdefault(batch_id, None)
            self.lost.discard(batch_id)

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.tick()

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


__all__ = ["FENCE", "RENEWALS_PER_LEASE", "LeaseKeeper", "real_interval"]
