"""Read-only queries of the HTTP service: pages of jobs and audit events, the
readiness probe, and the figures `/metrics` reports (counted from the database,
so they are right across restarts and across the processes sharing it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.store.rows import AuditEvent, JobRow, from_row
from batchkiln.store.tables import audit_events, batches, jobs, results, webhook_outbox


@dataclass
class Figures:
    batches: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, state)
    vendor_calls: dict[str, int] = field(default_factory=dict)  # provider
    audit_kinds: dict[str, int] = field(default_factory=dict)
    submissions: dict[str, int] = field(default_factory=dict)  # outcome
    detection_latencies: list[float] = field(default_factory=list)
    ingest_lines: int = 0
    ingest_bytes: int = 0
    outbox: dict[str, int] = field(default_factory=dict)  # state


class Listing:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def jobs_page(
        self,
        *,
        provider: str | None = None,
        status: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> list[JobRow]:
        """Jobs newest first, after the cursor `before` = (created_at, id)."""
        query = select(jobs)
        if provider is not None:
            query = query.where(jobs.c.provider == provider)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if before is not None:
            at, job_id = before
            query = query.where(
                or_(jobs.c.created_at < at, and_(jobs.c.created_at == at, jobs.c.id < job_id))
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [from_row(JobRow, r) for r in rows.mappings()]

    async def events_after(
        self, after_id: int, *, job_id: str | None = None, limit: int = 100
    ) -> list[AuditEvent]:
        query = select(audit_events).where(audit_events.c.id > after_id)
        if job_id is not None:
            query = query.where(audit_events.c.job_id == job_id)
        query = query.order_by(audit_events.c.id).limit(limit)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [from_row(AuditEvent, r) for r in rows.mappings()]

    async def revision(self) -> str | None:
        """The migration the database is at (None: not migrated); raises if unreachable."""
        async with self._engine.connect() as conn:
            row = await conn.execute(text("SELECT version_num FROM alembic_version"))
            found = row.scalar_one_or_none()
            return None if found is None else str(found)

    async def figures(self) -> Figures:
        out = Figures()
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    jobs.c.provider, batches.c.state, func.count(), func.sum(batches.c.vendor_calls)
                )
                .select_from(batches.join(jobs, jobs.c.id == batches.c.job_id))
                .group_by(jobs.c.provider, batches.c.state)
            )
            for provider, state, count, calls in rows.all():
                out.batches[(str(provider), str(state))] = int(count)
                out.vendor_calls[str(provider)] = out.vendor_calls.get(str(provider), 0) + int(
                    calls or 0
                )
            kinds = await conn.execute(
                select(audit_events.c.kind, func.count()).group_by(audit_events.c.kind)
            )
            out.audit_kinds = {str(k): int(n) for k, n in kinds.all()}
            moves = await conn.execute(
                select(audit_events.c.to_state, func.count())
                .where(audit_events.c.from_state == "submitting")
                .group_by(audit_events.c.to_state)
            )
            moved = {str(k): int(n) for k, n in moves.all()}
            out.submissions = {
                "accepted": moved.get("pending", 0),
                "rejected": moved.get("failed", 0),
                "reconciled": out.audit_kinds.get("submit.reconcile", 0),
                "unknown": out.audit_kinds.get("submit.unknown", 0)
                + out.audit_kinds.get("submit.ambiguous", 0),
            }
            latencies = await conn.execute(
                select(batches.c.detected_at - batches.c.vendor_ended_at).where(
                    batches.c.detected_at.is_not(None), batches.c.vendor_ended_at.is_not(None)
                )
            )
            out.detection_latencies = [max(0.0, float(v)) for (v,) in latencies.all()]
            # A full scan of the results: fine for a scrape every 15 s on a modest store.
            ingested = await conn.execute(
                select(func.count(), func.coalesce(func.sum(func.length(results.c.raw)), 0))
            )
            lines, size = ingested.one()
            out.ingest_lines, out.ingest_bytes = int(lines), int(size)
            box = await conn.execute(
                select(webhook_outbox.c.delivery, func.count()).group_by(webhook_outbox.c.delivery)
            )
            out.outbox = {str(k): int(n) for k, n in box.all()}
        return out
