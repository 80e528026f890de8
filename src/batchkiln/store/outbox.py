"""Webhooks out: the callback of a Job and the durable outbox of its deliveries.

`announce` runs inside the transaction that appends an audit event (see
`store.audit.append_event`), so an outbox row exists exactly when the change it
announces was committed: a crash loses none and sends none that did not happen.
A Job with a callback gets a `job.done` delivery when it reaches its final
outcome and, if it asked for `events="all"`, a `batch.transition` delivery for
every batch state change and a `job.transition` for every other Job move (e.g.
to `awaiting_retry`).

Delivering (signing, HTTP, the retry schedule) is the service's business
(`service.outbox`); this module only stores rows and audits each attempt.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.store.rows import from_row
from batchkiln.store.tables import job_callbacks, webhook_outbox

JOB_FINAL_KINDS = frozenset({"job.done"})
DELIVERED_RETENTION_SECONDS = 7 * 86400  # finished deliveries kept this long, then reaped


@dataclass(frozen=True)
class CallbackRow:
    job_id: str
    url: str
    secret: str | None
    events: str
    disabled_at: float | None
    created_at: float


@dataclass(frozen=True)
class OutboxRow:
    id: str
    job_id: str
    event_type: str
    payload: bytes
    delivery: str  # pending | delivered | failed | disabled
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


async def announce(
    conn: AsyncConnection,
    *,
    at: float,
    kind: str,
    job_id: str | None,
    batch_id: str | None,
    from_state: str | None,
    to_state: str | None,
    reason: str | None,
    data: dict[str, Any] | None,
) -> None:
    """Inside the caller's transaction: queue the delivery this event calls for, if any."""
    final = kind in JOB_FINAL_KINDS
    transition = from_state is not None and to_state is not None
    if job_id is None or not (final or transition):
        return
    callback = (
        await conn.execute(
            select(job_callbacks.c.events).where(
                job_callbacks.c.job_id == job_id, job_callbacks.c.disabled_at.is_(None)
            )
        )
    ).first()
    if callback is None or (not final and callback.events != "all"):
        return
    if final:
        event_type = "job.done"
        body: dict[str, Any] = {"id": job_id, "job_id": job_id, "state": "done", "outcome": data}
    else:
        event_type = "batch.transition" if batch_id is not None else "job.transition"
        body = {
            "id": job_id,
            "job_id": job_id,
            "batch_id": batch_id,
            "from_state": from_state,
            "to_state": to_state,
            "reason": reason,
        }
    payload = orjson.dumps({"type": event_type, "timestamp": _iso(at), "data": body})
    await conn.execute(
        insert(webhook_outbox).values(
            id=f"msg_{uuid.uuid4().hex}",
            job_id=job_id,
            event_type=event_type,
            payload=payload,
            delivery="pending",
            attempts=0,
            # 0, not `at`: due at once on any clock (the sender may run on wall time
            # while the engine runs on a simulator's virtual clock)
            next_attempt_at=0.0,
            created_at=at,
            updated_at=at,
        )
    )


class Outbox:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def register(self, job_id: str, *, url: str, secret: str | None, events: str) -> None:
        """Set a Job's callback (first registration wins: a replayed submit changes nothing)."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(job_callbacks).values(
                        job_id=job_id,
                        url=url,
                        secret=secret,
                        events=events,
                        created_at=self._clock.now(),
                    )
                )
        except IntegrityError:
            pass

    async def callback(self, job_id: str) -> CallbackRow | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(job_callbacks).where(job_callbacks.c.job_id == job_id)))
                .mappings()
                .first()
            )
        return from_row(CallbackRow, row) if row else None

    async def get(self, message_id: str) -> OutboxRow:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(webhook_outbox).where(webhook_outbox.c.id == message_id)
                    )
                )
                .mappings()
                .one()
            )
        return from_row(OutboxRow, row)

    async def for_job(self, job_id: str) -> list[OutboxRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(webhook_outbox)
                .where(webhook_outbox.c.job_id == job_id)
                .order_by(webhook_outbox.c.created_at, webhook_outbox.c.id)
            )
            return [from_row(OutboxRow, r) for r in rows.mappings()]

    async def claim_due(
        self, *, worker: str, now: float, lease_seconds: float, limit: int = 20
    ) -> list[OutboxRow]:
        """Lease pending deliveries that are due (compare-and-set per row, so two
        senders on one database never send the same attempt twice)."""
        async with self._engine.connect() as conn:
            ids = (
                await conn.execute(
                    select(webhook_outbox.c.id)
                    .where(
                        webhook_outbox.c.delivery == "pending",
                        webhook_outbox.c.next_attempt_at <= now,
                        or_(
                            webhook_outbox.c.lease_expires_at.is_(None),
                            webhook_outbox.c.lease_expires_at < now,
                        ),
                    )
                    .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.created_at)
                    .limit(limit)
                )
            ).scalars()
            wanted = list(ids)
        claimed = []
        for message_id in wanted:
            async with self._engine.begin() as conn:
                taken = await conn.execute(
                    update(webhook_outbox)
                    .where(
                        webhook_outbox.c.id == message_id,
                        webhook_outbox.c.delivery == "pending",
                        or_(
                            webhook_outbox.c.lease_expires_at.is_(None),
                            webhook_outbox.c.lease_expires_at < now,
                        ),
                    )
                    .values(lease_owner=worker, lease_expires_at=now + lease_seconds)
                )
            if taken.rowcount == 1:
                claimed.append(await self.get(message_id))
        return claimed

    async def record_attempt(
        self,
        row: OutboxRow,
        *,
        worker: str,
        now: float,
        result: str,
        state: str,
        status: int | None,
        error: str | None,
        next_attempt_at: float | None,
        url: str,
    ) -> None:
        """Store one attempt's outcome and audit it, in one transaction."""
        from batchkiln.store.audit import append_event  # audit imports this module

        attempt = row.attempts + 1
        async with self._engine.begin() as conn:
            await conn.execute(
                update(webhook_outbox)
                .where(webhook_outbox.c.id == row.id, webhook_outbox.c.lease_owner == worker)
                .values(
                    attempts=attempt,
                    delivery=state,
                    last_status=status,
                    last_error=error,
                    next_attempt_at=next_attempt_at,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            if state == "disabled":
                await conn.execute(
                    update(job_callbacks)
                    .where(job_callbacks.c.url == url, job_callbacks.c.disabled_at.is_(None))
                    .values(disabled_at=now)
                )
            await append_event(
                conn,
                at=self._clock.now(),
                kind="webhook.delivery",
                job_id=row.job_id,
                worker=worker,
                reason=f"{row.event_type} attempt {attempt}: {result}",
                data={
                    "webhook_id": row.id,
                    "event_type": row.event_type,
                    "attempt": attempt,
                    "result": result,
                    "status": status,
                    "error": error,
                    "next_attempt_at": next_attempt_at,
                },
            )

    async def depth(self) -> int:
        """Deliveries not finished yet (pending, including those waiting to retry)."""
        async with self._engine.connect() as conn:
            count = await conn.execute(
                select(func.count()).where(webhook_outbox.c.delivery == "pending")
            )
            return int(count.scalar_one())

    async def reap(self, *, now: float, keep: float = DELIVERED_RETENTION_SECONDS) -> int:
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                delete(webhook_outbox).where(
                    webhook_outbox.c.delivery != "pending", webhook_outbox.c.updated_at < now - keep
                )
            )
        return int(gone.rowcount or 0)
