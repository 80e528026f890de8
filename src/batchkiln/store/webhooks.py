"""Webhook deliveries we have seen, kept to deduplicate on `webhook-id`, and the
reaper for them and for archived idempotency keys."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock
from batchkiln.store.audit import append_event
from batchkiln.store.database import insert_ignoring_duplicates
from batchkiln.store.tables import idempotency_keys, webhook_events


class WebhookInbox:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def record(
        self,
        webhook_id: str,
        *,
        event_type: str,
        vendor_batch_id: str | None,
        batch_id: str | None,
        job_id: str | None,
        keep_seconds: float,
    ) -> bool:
        """Remember a verified delivery and audit it; False if `webhook_id` was seen."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
                insert_ignoring_duplicates(conn, webhook_events).values(
                    webhook_id=webhook_id,
                    received_at=now,
                    event_type=event_type,
                    vendor_batch_id=vendor_batch_id,
                    batch_id=batch_id,
                    expires_at=now + keep_seconds,
                )
            )
            fresh = inserted.rowcount == 1
            await append_event(
                conn,
                at=now,
                kind="webhook.received" if fresh else "webhook.duplicate",
                job_id=job_id,
                batch_id=batch_id,
                reason=event_type if batch_id else f"{event_type} for unknown batch",
                data={"webhook_id": webhook_id, "vendor_batch_id": vendor_batch_id},
            )
        return fresh

    async def seen(self, webhook_id: str) -> bool:
        async with self._engine.connect() as conn:
            row = await conn.execute(
                select(webhook_events.c.webhook_id).where(webhook_events.c.webhook_id == webhook_id)
            )
            return row.first() is not None

    async def reap(self) -> dict[str, int]:
        """Delete webhook ids and archived idempotency keys past their retention."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            hooks = await conn.execute(
                delete(webhook_events).where(webhook_events.c.expires_at < now)
            )
            keys = await conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.expires_at.is_not(None),
                    idempotency_keys.c.expires_at < now,
                )
            )
            counts = {"webhook_ids": hooks.rowcount, "keys": keys.rowcount}
            if any(counts.values()):
                await append_event(conn, at=now, kind="reaper.ran", data=counts)
        return counts
