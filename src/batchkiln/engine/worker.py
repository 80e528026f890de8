"""The worker loop: claim due batches, step up to N at once, idle until woken.

No SQL here and no vendor calls of its own: it asks the Kiln to claim and step.

- Concurrency: up to `concurrency` steps run at once as asyncio tasks, so one slow
  upload does not hold up a thousand polls. Batches are claimed `batch_size` at a
  time (several due together share one list call) and queued under their leases.
- Leases: the Kiln's LeaseKeeper renews every held lease a third of the lease
  length apart while the loop runs (and heartbeats the worker registry row).
- Waking: `wake()` cuts an idle wait short; on PostgreSQL a LISTEN connection calls
  it when anyone makes a batch due (webhook, submission, cancel, retry), with the
  due queue polled as the fallback. Idle waits end when the next batch becomes
  claimable (due, and free of any dead worker's lease), capped by `idle_cap`.
- Stopping: `stop()` (SIGTERM, SIGINT) stops claiming, gives back the queued
  batches, lets steps in flight finish for `grace_seconds`, then cancels the rest;
  a cancelled step releases its lease due now (every write is transactional, and a
  create in flight was recorded as an intent first, so any point is safe). SIGKILL
  is covered by lease expiry.
- `Worker.for_app(app, ...)` is the process-level worker (`kiln worker`, and any
  server that runs one): it registers in the `workers` table, listens for wake-ups
  and, on SQLite, refuses to start beside another worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.leases import real_interval
from batchkiln.engine.step import StepResult
from batchkiln.errors import KilnError
from batchkiln.store import BatchRow, JobRow
from batchkiln.store.wakeups import DueListener, SqliteWorkerLock, sqlite_database

if TYPE_CHECKING:
    from batchkiln.app import App

log = logging.getLogger(__name__)
MIN_IDLE_REAL = 0.05  # real seconds: never spin faster than this on a busy queue


class Worker:
    def __init__(
        self,
        kiln: Kiln,
        *,
        batch_size: int = 10,
        idle_cap: float = 30.0,
        housekeeping_every: float = 3600.0,
        on_step: Callable[[int], None] | None = None,
        concurrency: int = 1,
        grace_seconds: float = 30.0,
        register: bool = False,
        listen: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.kiln = kiln
        self.batch_size = batch_size
        self.idle_cap = idle_cap
        self.housekeeping_every = housekeeping_every
        self.on_step = on_step
        self.concurrency = max(1, concurrency)
        self.grace_seconds = grace_seconds
        self.register = register
        self.listen = listen
        self.exclusive = exclusive
        self.steps = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_housekeeping: float | None = None
        self._queue: deque[tuple[BatchRow, JobRow, StepResult | None]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: DueListener | None = None

    @classmethod
    def for_app(
        cls,
        app: App,
        *,
        concurrency: int | None = None,
        batch_size: int = 10,
        idle_cap: float = 30.0,
        grace_seconds: float | None = None,
    ) -> Worker:
        """The process-level worker on an App: registered, woken by NOTIFY, exclusive on
        SQLite. `kiln worker` runs it; a server embedding a worker should too."""
        settings = app.settings
        return cls(
            app.kiln,
            batch_size=batch_size,
            idle_cap=idle_cap,
            concurrency=concurrency or settings.worker_concurrency,
            grace_seconds=(
                settings.worker_grace_seconds if grace_seconds is None else grace_seconds
            ),
            register=True,
            listen=True,
            exclusive=True,
        )

    def stop(self) -> None:
        """Stop claiming; finish (or, past the grace period, release) what is in flight."""
        self._stop.set()

    def wake(self) -> None:
        """Something became due now (a webhook, a submission): stop idling."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self, *, max_steps: int | None = None) -> int:
        """Step due batches until stopped (or `max_steps` steps). Returns the count."""
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            async with self.kiln.leases.beating():
                try:
                    await self._loop(max_steps)
                finally:
                    await self._drain()
        return self.steps

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        store = self.kiln.store
        if self.exclusive and store.dialect == "sqlite":
            database = sqlite_database(store.url)
            if database is not None:
                lock = SqliteWorkerLock(database)
                lock.acquire()  # ConfigError: another worker process has this database
                stack.callback(lock.release)
        if self.register:
            from batchkiln import __version__

            self._warm_up()
            await store.workers.register(
                self.kiln.worker,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                lease_seconds=self.kiln.lease_seconds,
                concurrency=self.concurrency,
            )
            stack.push_async_callback(store.workers.deregister, self.kiln.worker)

            async def beat(steps: list[str]) -> None:
                await store.workers.beat(
                    self.kiln.worker, steps=steps, state="stopping" if self.stopping else None
                )

            self.kiln.leases.on_beat = beat
        if self.listen and store.dialect == "postgresql":
            self._listener = DueListener(
                store.url, self.wake, server_settings=store.server_settings
            )
            await self._listener.connect()
            stack.push_async_callback(self._listener.close)

    def _warm_up(self) -> None:
        """Build the providers now: importing a vendor SDK takes seconds on a busy
        machine and blocks the event loop (and so the heartbeat) inside a first step."""
        for name in list(self.kiln.providers):
            with contextlib.suppress(KilnError, LookupError):
                provider = self.kiln.providers[name]  # one with no credentials stays unbuilt
                warm_up = getattr(provider, "warm_up", None)  # and the SDK's lazy imports
                if warm_up is not None:
                    warm_up()

    async def _loop(self, max_steps: int | None) -> None:
        while not self._stop.is_set():
            await self._housekeeping()
            if max_steps is not None and self.steps >= max_steps:
                return
            got = 0 if self._queue else await self._claim(max_steps)
            self._spawn()
            if self._queue or not self._claimable(max_steps):
                await self._wait(self._tasks)  # every slot busy: wait for one to free
            elif not got:
                await self._idle()  # nothing claimable: until due, woken, or a step ends

    def _claimable(self, max_steps: int | None) -> bool:
        room = self.concurrency - len(self._tasks) - len(self._queue)
        if max_steps is not None:
            room = min(room, max_steps - self.steps - len(self._tasks) - len(self._queue))
        return room > 0

    async def _claim(self, max_steps: int | None) -> int:
        if not self._claimable(max_steps):
            return 0
        limit = max(self.batch_size, self.concurrency) - len(self._tasks)
        if max_steps is not None:
            limit = min(limit, max_steps - self.steps - len(self._tasks))
        if limit <= 0:
            return 0
        claimed, jobs = await self.kiln.claim(limit=limit)
        if not claimed:
            return 0
        listed = await self.kiln.list_refresh(claimed, jobs)  # several due: one list call
        self._queue.extend((b, jobs[b.job_id], listed.get(b.id)) for b in claimed)
        return len(claimed)

    def _spawn(self) -> None:
        while self._queue and len(self._tasks) < self.concurrency:
            batch, job, done = self._queue.popleft()
            task = asyncio.create_task(self.kiln.step_claimed(batch, job, done))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("a step failed", exc_info=task.exception())
        self.steps += 1
        if self.on_step is not None:
            self.on_step(1)

    async def _wait(self, tasks: set[asyncio.Task[None]], wait: float | None = None) -> None:
        """Until a step finishes, a wake-up, a stop, or `wait` clock seconds."""
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        if wait is not None:
            waiters.append(asyncio.ensure_future(self.kiln.clock.sleep(wait)))
        try:
            pending: set[asyncio.Future[Any]] = {*waiters, *tasks}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    async def _idle(self) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        if self._listener is not None and not self._listener.connected:
            await self._listener.connect()  # lost: polling meanwhile, reconnect now
        if self._tasks and real_interval(self.kiln.clock, 1.0) is None:
            # a test's clock moves only when slept on: waiting on it while steps run
            # would move time under them (and expire their leases); wait for a step
            await self._wait(self._tasks)
            return
        due = await self.kiln.store.batches.next_claimable_at()
        now = self.kiln.clock.now()
        wait = self.idle_cap if due is None else min(self.idle_cap, max(0.0, due - now))
        # a batch due but not yet claimable (its lease ends exactly now): step past it
        await self._wait(self._tasks, max(wait, self._floor(), 0.001))

    def _floor(self) -> float:
        """The shortest idle wait, in clock seconds (none on a test's fake clock)."""
        if isinstance(self.kiln.clock, FakeClock):
            return 0.0
        per_lease = real_interval(self.kiln.clock, self.kiln.lease_seconds)
        if per_lease is None:
            return 0.0
        return MIN_IDLE_REAL * self.kiln.lease_seconds / 3 / per_lease

    async def _drain(self) -> None:
        """Give back queued batches, let steps in flight finish within the grace period,
        then cancel the rest (each releases its lease due now)."""
        while self._queue:
            batch, _, _ = self._queue.popleft()
            self.kiln.leases.drop(batch.id)
            await self.kiln.store.batches.release(
                batch.id, worker=self.kiln.worker, next_check_at=batch.next_check_at
            )
        await self.kiln.store.batches.clear_expired_done_leases()
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=self.grace_seconds)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d step(s) still running after the grace period: released", len(late))
            await asyncio.wait(late, timeout=10)

    async def _housekeeping(self) -> None:
        now = self.kiln.clock.now()
        if self._last_housekeeping is not None and (
            now - self._last_housekeeping < self.housekeeping_every
        ):
            return
        self._last_housekeeping = now
        await self.kiln.store.webhooks.reap()
        await self.kiln.store.batches.clear_expired_done_leases()
        await self.kiln.store.jobs.sweep_drafts()


__all__ = ["Worker"]
