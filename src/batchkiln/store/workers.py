"""The worker registry and the shared vendor pauses.

Workers register at start (id, host, pid, version, started, heartbeat, the batches
they are stepping), renew the row with every heartbeat and delete it on a clean
stop. A row whose heartbeat is older than its lease belongs to a lost worker (it
was SIGKILLed, or its machine went away): it is shown as lost; its batch leases
run out by themselves and are never released by another worker.

A vendor's 429 `retry-after` is written to `vendor_pauses`, so every worker's
calls to that vendor wait until it passes, not only the worker that was told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock
from batchkiln.store.database import insert_ignoring_duplicates
from batchkiln.store.tables import vendor_pauses, workers


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    version: str
    started_at: float
    heartbeat_at: float
    lease_seconds: float
    concurrency: int
    state: str
    steps: list[str]

    def lost(self, now: float) -> bool:
        """Its heartbeat is older than its lease: the process is gone (or stuck)."""
        return now - self.heartbeat_at > self.lease_seconds

    def status(self, now: float) -> str:
        return "lost" if self.lost(now) else self.state

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "heartbeat_age_seconds": round(max(0.0, now - self.heartbeat_at), 3),
            "lease_seconds": self.lease_seconds,
            "concurrency": self.concurrency,
            "state": self.status(now),
            "steps": list(self.steps),
        }


class WorkerRegistry:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def register(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        version: str,
        lease_seconds: float,
        concurrency: int,
    ) -> None:
        now = self._clock.now()
        values = {
            "host": host,
            "pid": pid,
            "version": version,
            "started_at": now,
            "heartbeat_at": now,
            "lease_seconds": lease_seconds,
            "concurrency": concurrency,
            "state": "running",
            "steps": [],
        }
        async with self._engine.begin() as conn:
            # a restarted process may reuse an id (same host and pid): take the row over
            await conn.execute(delete(workers).where(workers.c.id == worker_id))
            await conn.execute(workers.insert().values(id=worker_id, **values))

    async def beat(self, worker_id: str, *, steps: Sequence[str], state: str | None = None) -> None:
        values: dict[str, Any] = {"heartbeat_at": self._clock.now(), "steps": list(steps)}
        if state is not None:
            values["state"] = state
        async with self._engine.begin() as conn:
            await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))

    async def deregister(self, worker_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker_id))

    async def list(self) -> list[WorkerRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(workers).order_by(workers.c.started_at))
            return [WorkerRow(**dict(r)) for r in rows.mappings()]


class VendorPauses:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def pause(
        self, provider: str, until: float, *, reason: str | None, worker: str | None
    ) -> None:
        """Every worker waits for `provider` until `until` (a later pause wins)."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await conn.execute(
                insert_ignoring_duplicates(conn, vendor_pauses).values(
                    provider=provider, until=until, reason=reason, set_by=worker, set_at=now
                )
            )
            await conn.execute(
                update(vendor_pauses)
                .where(vendor_pauses.c.provider == provider, vendor_pauses.c.until < until)
                .values(until=until, reason=reason, set_by=worker, set_at=now)
            )

    async def until(self, provider: str) -> float | None:
        """When `provider` may be called again (None or a past time: now)."""
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    select(vendor_pauses.c.until).where(vendor_pauses.c.provider == provider)
                )
            ).scalar()


__all__ = ["VendorPauses", "WorkerRegistry", "WorkerRow"]
