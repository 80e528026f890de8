"""Injected time: every component that waits or timestamps takes a clock.

`SystemClock` is real time, `ScaledClock` runs N times faster than real time
(the demo runs 24 vendor hours in seconds), and `FakeClock` only moves when a
test advances it, so no test ever sleeps.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Unix seconds, and a way to wait for them to pass."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Time that runs `speed` times faster than real time, from `start`."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._origin_real = time.monotonic()
        self._origin = time.time() if start is None else start

    def now(self) -> float:
        return self._origin + (time.monotonic() - self._origin_real) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class FakeClock:
    """A clock that moves only when told; `sleep` advances it instead of waiting."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds

    def set(self, when: float) -> None:
        self.advance(when - self._now)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)  # let other tasks observe the new time


def store_time(clock: Clock) -> tuple[Clock, float]:
    """The clock a store is stamped with for `clock`, and how many of `clock`'s
    seconds pass per store second.

    Store times are real UTC: a shared store must never hold virtual time (leases
    hours in the future, `kiln status` sorting wrongly). A `ScaledClock` is the
    simulator's vendor timeline running fast; the engine then stamps the store with
    the system clock and divides its own waits (in vendor seconds) by the speed, so
    the demo stays fast. Any other clock (a FakeClock in tests, the system clock) is
    used as it is."""
    if isinstance(clock, ScaledClock):
        return SystemClock(), clock.speed
    return clock, 1.0
