"""The durable store: SQLAlchemy Core on SQLite (default) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock, SystemClock
from batchkiln.errors import NotFound, StaleTransition
from batchkiln.store.api_keys import ApiKeys
from batchkiln.store.audit import AuditLog
from batchkiln.store.batches import BatchRepository
from batchkiln.store.capacity import CapacityBook
from batchkiln.store.checkpoints import WalCheckpointer
from batchkiln.store.costs import CostBook, CostRow, EstimateRow, NewEstimate
from batchkiln.store.database import open_database
from batchkiln.store.drafts import NewBatch
from batchkiln.store.jobs import KEY_RETENTION_SECONDS, JobRepository
from batchkiln.store.ledger import ChildBatch, Closing, Ledger, OutcomeRules, StoredResult
from batchkiln.store.listing import Listing
from batchkiln.store.outbox import Outbox
from batchkiln.store.rows import AuditEvent, BatchRow, JobRow, RequestRow
from batchkiln.store.wakeups import notify_due
from batchkiln.store.webhooks import WebhookInbox
from batchkiln.store.workers import VendorPauses, WorkerRegistry, WorkerRow

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
    "OutcomeRules",
    "RequestRow",
    "StaleTransition",
    "Store",
    "StoredResult",
    "VendorPauses",
    "WebhookInbox",
    "WorkerRegistry",
    "WorkerRow",
]


class Store:
    """One database, seen through a repository per noun."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        # SQLite: bulk writes are checkpointed in the background (None elsewhere)
        self.checkpoints = WalCheckpointer.for_url(engine.url)
        self.jobs = JobRepository(engine, clock, self.checkpoints)
        self.batches = BatchRepository(engine, clock)
        self.ledger = Ledger(engine, clock, self.checkpoints)
        self.audit = AuditLog(engine, clock)
        self.webhooks = WebhookInbox(engine, clock)
        self.costs = CostBook(engine, clock)
        self.api_keys = ApiKeys(engine)
        self.outbox = Outbox(engine, clock)
        self.listing = Listing(engine)
        self.workers = WorkerRegistry(engine, clock)
        self.pauses = VendorPauses(engine, clock)
        self.url = engine.url.render_as_string(hide_password=False)
        # the engine's connect_args (a test schema's search_path) apply to LISTEN too
        self.server_settings: dict[str, str] | None = None
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
        engine = await open_database(url, run_migrations=run_migrations, **engine_kwargs)
        store = cls(engine, clock or SystemClock())
        store.server_settings = engine_kwargs.get("connect_args", {}).get("server_settings")
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def wake(self, payload: str = "") -> None:
        """Wake idle workers now (PostgreSQL NOTIFY; nothing on SQLite, where the one
        worker is in this process or polls)."""
        if self.dialect != "postgresql":
            return
        async with self.engine.begin() as conn:
            await notify_due(conn, payload)

    async def close(self) -> None:
        if self.checkpoints is not None:
            await self.checkpoints.aclose()
        await self.engine.dispose()
