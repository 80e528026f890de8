"""The durable store: SQLAlchemy Core on SQLite (default) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock, SystemClock
from batchkiln.errors import NotFound, StaleTransition
from batchkiln.store.audit import AuditLog
from batchkiln.store.batches import BatchRepository
from batchkiln.store.capacity import CapacityBook
from batchkiln.store.costs import CostBook, CostRow, EstimateRow, NewEstimate
from batchkiln.store.database import create_engine, database_url, migrate
from batchkiln.store.jobs import KEY_RETENTION_SECONDS, JobRepository, NewBatch
from batchkiln.store.ledger import ChildBatch, Closing, Ledger, StoredResult
from batchkiln.store.rows import AuditEvent, BatchRow, JobRow, RequestRow
from batchkiln.store.webhooks import WebhookInbox

__all__ = [
    "KEY_RETENTION_SECONDS",
    "AuditEvent",
    "AuditLog",
    "BatchRow",
    "CapacityBook",
    "ChildBatch",
    "Closing",
    "CostBook",
    "CostRow",
    "EstimateRow",
    "JobRow",
    "NewBatch",
    "NewEstimate",
    "NotFound",
    "RequestRow",
    "StaleTransition",
    "Store",
    "StoredResult",
    "WebhookInbox",
]


class Store:
    """One database, seen through a repository per noun."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.jobs = JobRepository(engine, clock)
        self.batches = BatchRepository(engine, clock)
        self.ledger = Ledger(engine, clock)
        self.audit = AuditLog(engine, clock)
        self.webhooks = WebhookInbox(engine, clock)
        self.costs = CostBook(engine, clock)
        self.capacity = CapacityBook(engine, clock)

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        run_migrations: bool = True,
        **engine_kwargs: Any,
    ) -> Store:
        """Open (and by default migrate) the database at `url` / KILN_DATABASE_URL."""
        engine = create_engine(database_url(url), **engine_kwargs)
        if run_migrations:
            await migrate(engine)
        return cls(engine, clock or SystemClock())

    async def close(self) -> None:
        await self.engine.dispose()
