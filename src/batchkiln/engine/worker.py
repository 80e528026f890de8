"""The worker loop: claim due batches, step them, sleep until the next is due.

No SQL here and no vendor calls of its own: it only asks the Kiln to step what
is due. A stop request (SIGTERM) lets the current round of steps finish, then
returns; `wake()` (a webhook marked a batch due) cuts an idle wait short.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from batchkiln.engine.kiln import Kiln


class Worker:
    def __init__(
        self,
        kiln: Kiln,
        *,
        batch_size: int = 10,
        idle_cap: float = 30.0,
        housekeeping_every: float = 3600.0,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self.kiln = kiln
        self.batch_size = batch_size
        self.idle_cap = idle_cap
        self.housekeeping_every = housekeeping_every
        self.on_step = on_step
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_housekeeping: float | None = None

    def stop(self) -> None:
        """Finish the step under way, then return from run()."""
        self._stop.set()

    def wake(self) -> None:
        """Something became due now (a webhook arrived): stop idling."""
        self._wake.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self, *, max_steps: int | None = None) -> int:
        """Step due batches until stopped (or `max_steps` steps). Returns the count."""
        steps = 0
        while not self._stop.is_set():
            await self._housekeeping()
            stepped = await self.kiln.run_once(limit=self.batch_size, stop=self._stop)
            steps += stepped
            if self.on_step is not None and stepped:
                self.on_step(stepped)
            if max_steps is not None and steps >= max_steps:
                break
            if stepped:
                continue
            await self._idle()
        return steps

    async def _idle(self) -> None:
        due = await self.kiln.store.batches.next_due_at()
        now = self.kiln.clock.now()
        wait = self.idle_cap if due is None else min(self.idle_cap, max(0.0, due - now))
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self.kiln.clock.sleep(wait))
        stopper = asyncio.ensure_future(self._stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({sleeper, stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
        self._wake.clear()
        for task in (sleeper, stopper, waker):
            task.cancel()

    async def _housekeeping(self) -> None:
        now = self.kiln.clock.now()
        if self._last_housekeeping is not None and (
            now - self._last_housekeeping < self.housekeeping_every
        ):
            return
        self._last_housekeeping = now
        await self.kiln.store.webhooks.reap()
