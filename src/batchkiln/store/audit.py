"""The append-only audit log. Events are written inside the transaction of the
change they describe, so a change without its event cannot be committed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.store.leases import check_lease
from batchkiln.store.outbox import announce
from batchkiln.store.rows import AuditEvent, from_row
from batchkiln.store.tables import audit_events


async def append_event(
    conn: AsyncConnection,
    *,
    at: float,
    kind: str,
    job_id: str | None = None,
    batch_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    worker: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        insert(audit_events).values(
            at=at,
            kind=kind,
            job_id=job_id,
            batch_id=batch_id,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            worker=worker,
            data=data,
        )
    )
    # Webhooks out (issue 14): the delivery announcing this change, if its Job has a
    # callback, is queued in this same transaction.
    await announce(
        conn,
        at=at,
        kind=kind,
        job_id=job_id,
        batch_id=batch_id,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        data=data,
    )


class AuditLog:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def record(self, kind: str, **fields: Any) -> None:
        """Append one event in a transaction of its own (for facts that change no row).
        Inside a leased step, an event about a batch is written only under its lease."""
        async with self._engine.begin() as conn:
            if fields.get("batch_id") is not None:
                await check_lease(conn, str(fields["batch_id"]))
            await append_event(conn, at=self._clock.now(), kind=kind, **fields)

    async def for_job(self, job_id: str) -> list[AuditEvent]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(audit_events)
                .where(audit_events.c.job_id == job_id)
                .order_by(audit_events.c.id)
            )
            return [from_row(AuditEvent, r) for r in rows.mappings()]

    async def stream(self, *, after_id: int = 0, limit: int = 1000) -> AsyncIterator[AuditEvent]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(audit_events)
                .where(audit_events.c.id > after_id)
                .order_by(audit_events.c.id)
                .limit(limit)
            )
            for r in rows.mappings():
                yield from_row(AuditEvent, r)
