"""Idempotency-Key records of the HTTP API, one per (caller scope, key).

A key is claimed by inserting its row (the primary key is the guard, so two
concurrent requests cannot both claim it); the row is "in flight" (response_status NULL,
`locked_at` set) until the response is stored. A lock older than the lock timeout
belongs to a request that died, and the next request with the key takes it over
(compare-and-set on the old `locked_at`). Rows live until `expires_at`; the reaper
deletes them afterwards, and an expired row counts as absent.

The clock is passed in: the service keeps these on wall time even when the engine
runs on a simulator's virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock
from batchkiln.store.rows import from_row
from batchkiln.store.tables import api_idempotency


@dataclass(frozen=True)
class ApiKeyRow:
    scope: str
    key: str
    method: str
    path: str
    fingerprint: str | None
    response_status: int | None
    body: bytes | None
    job_id: str | None
    created_at: float
    locked_at: float | None
    expires_at: float


class ClaimState(StrEnum):
    NEW = "new"  # inserted now: run the request
    RESUMED = "resumed"  # a dead request's stale lock was taken over: run it again
    IN_FLIGHT = "in_flight"  # another request holds the key right now: 409
    FINISHED = "finished"  # a response is stored: replay it (or 422 on another payload)


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    row: ApiKeyRow | None = None


class ApiKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(
        self,
        scope: str,
        key: str,
        *,
        method: str,
        path: str,
        clock: Clock,
        retention: float,
        lock_timeout: float,
    ) -> Claim:
        """Claim (scope, key) for a request, or say why it cannot run now."""
        for _ in range(3):  # an expired row is deleted and the insert tried again
            now = clock.now()
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        insert(api_idempotency).values(
                            scope=scope,
                            key=key,
                            method=method,
                            path=path,
                            created_at=now,
                            locked_at=now,
                            expires_at=now + retention,
                        )
                    )
                return Claim(ClaimState.NEW)
            except IntegrityError:
                pass
            row = await self.get(scope, key)
            if row is None:
                continue  # reaped in between
            if row.expires_at < now:
                await self._delete(scope, key, expires_at=row.expires_at)
                continue
            if row.response_status is not None:
                return Claim(ClaimState.FINISHED, row)
            if row.locked_at is not None and now - row.locked_at < lock_timeout:
                return Claim(ClaimState.IN_FLIGHT, row)
            async with self._engine.begin() as conn:
                taken = await conn.execute(
                    update(api_idempotency)
                    .where(
                        api_idempotency.c.scope == scope,
                        api_idempotency.c.key == key,
                        api_idempotency.c.response_status.is_(None),
                        api_idempotency.c.locked_at == row.locked_at,
                    )
                    .values(locked_at=now)
                )
            if taken.rowcount == 1:
                return Claim(ClaimState.RESUMED, row)
        row = await self.get(scope, key)
        return Claim(ClaimState.IN_FLIGHT, row)

    async def get(self, scope: str, key: str) -> ApiKeyRow | None:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(api_idempotency).where(
                            api_idempotency.c.scope == scope, api_idempotency.c.key == key
                        )
                    )
                )
                .mappings()
                .first()
            )
        return from_row(ApiKeyRow, row) if row else None

    async def heartbeat(self, scope: str, key: str, *, now: float) -> None:
        """Keep a long request's lock fresh (a 200 MB upload outlasts the lock timeout)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_idempotency)
                .where(
                    api_idempotency.c.scope == scope,
                    api_idempotency.c.key == key,
                    api_idempotency.c.response_status.is_(None),
                )
                .values(locked_at=now)
            )

    async def set_fingerprint(self, scope: str, key: str, fingerprint: str) -> str:
        """Record the payload's fingerprint once it is known; returns the stored one
        (the first request's, when a resumed request finds one already set)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_idempotency)
                .where(
                    api_idempotency.c.scope == scope,
                    api_idempotency.c.key == key,
                    api_idempotency.c.fingerprint.is_(None),
                )
                .values(fingerprint=fingerprint)
            )
            stored = await conn.execute(
                select(api_idempotency.c.fingerprint).where(
                    api_idempotency.c.scope == scope, api_idempotency.c.key == key
                )
            )
            return str(stored.scalar_one_or_none() or fingerprint)

    async def finish(
        self, scope: str, key: str, *, status: int, body: bytes, job_id: str | None
    ) -> None:
        """Store the response; later requests with the key replay it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_idempotency)
                .where(api_idempotency.c.scope == scope, api_idempotency.c.key == key)
                .values(response_status=status, body=body, job_id=job_id, locked_at=None)
            )

    async def release(self, scope: str, key: str) -> None:
        """Forget an in-flight claim whose request failed: the client may fix the
        request and send it again with the same key."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(api_idempotency).where(
                    api_idempotency.c.scope == scope,
                    api_idempotency.c.key == key,
                    api_idempotency.c.response_status.is_(None),
                )
            )

    async def _delete(self, scope: str, key: str, *, expires_at: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(api_idempotency).where(
                    and_(
                        api_idempotency.c.scope == scope,
                        api_idempotency.c.key == key,
                        api_idempotency.c.expires_at == expires_at,
                    )
                )
            )

    async def reap(self, *, now: float) -> int:
        """Delete the keys past their retention; returns how many."""
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                delete(api_idempotency).where(api_idempotency.c.expires_at < now)
            )
        return int(gone.rowcount or 0)
