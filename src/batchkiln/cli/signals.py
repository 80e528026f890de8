"""SIGINT and SIGTERM in a command: stop at a safe point, never with a lease held.

`run` runs a command's coroutine with both signals handled in the event loop:

- while a job is being driven (`graceful()`), the first signal asks the engine to stop
  after the step under way (it then releases every lease it holds and the command exits
  130); a second signal stops now, the engine releasing the lease of the interrupted
  step on its way out;
- otherwise a signal cancels the command at once (the engine still releases a lease it
  holds when cancelled).

Either way the command ends with `Interrupted` (exit 130).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from batchkiln.cli.contract import Interrupted

T = TypeVar("T")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop:
    """What the signals asked for in this command."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal: str | None = None
        self.graceful = False
        self.task: asyncio.Task[object] | None = None

    def received(self, sig: signal.Signals) -> None:
        self.signal = self.signal or sig.name
        # a connection closed while being cancelled is expected now, not news
        logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
        if self.graceful and not self.event.is_set():
            self.event.set()
            sys.stderr.write(
                f"{sig.name}: stopping after the step under way and releasing its lease"
                " (again to stop at once)\n"
            )
            sys.stderr.flush()
        elif self.task is not None:
            self.task.cancel()

    def interrupted(self, detail: str = "") -> Interrupted:
        what = self.signal or "a signal"
        return Interrupted(f"interrupted by {what} at a safe point: no lease is held{detail}")


_current: Stop | None = None


def current() -> Stop | None:
    return _current


@contextmanager
def graceful() -> Iterator[asyncio.Event]:
    """While the block runs, a first signal sets the returned event instead of
    cancelling (the engine checks it between steps)."""
    stop = _current or Stop()
    stop.graceful = True
    try:
        yield stop.event
    finally:
        stop.graceful = False


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run(factory()) with SIGINT/SIGTERM turned into `Interrupted`."""

    async def main() -> T:
        global _current
        stop = _current = Stop()
        stop.task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, stop.received, sig)
        try:
            return await factory()
        except asyncio.CancelledError:
            if stop.signal is None:
                raise
            raise stop.interrupted() from None
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
            _current = None

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # a SIGINT outside the loop's handlers
        raise Interrupted("interrupted by SIGINT") from None
