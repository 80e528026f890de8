"""The lease guard: a step's writes land only while its worker still holds the lease.

A worker steps a batch under `guarded_by(worker)`; while that context is active,
every write the store makes about a batch (a transition, a bookkeeping update, a
vendor-call count, an audit event, stored results, the closing transaction) runs
`check_lease` inside its own transaction first. The check is an UPDATE on the
batch row `WHERE lease_owner = :me`, so it also row-locks the batch until commit
(PostgreSQL): a claim (`FOR UPDATE SKIP LOCKED`) cannot slip in between the check
and the write. Zero rows means the lease expired and another worker claimed the
batch: `LeaseLost` is raised, the transaction rolls back, and the step stops.

Outside a guarded context (a user's cancel, a direct `kiln.step` in a script)
writes are not lease-checked: nobody holds a lease there.

A context variable rather than a parameter on every store method: it follows the
asyncio task that runs the step (each concurrent step has its own), and the
engine's modules need no change to be guarded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from batchkiln.errors import LeaseLost
from batchkiln.store.tables import batches

_OWNER: ContextVar[str | None] = ContextVar("kiln_lease_owner", default=None)


@contextmanager
def guarded_by(owner: str | None) -> Iterator[None]:
    """Guard the store writes made inside the block with `owner`'s leases."""
    token = _OWNER.set(owner)
    try:
        yield
    finally:
        _OWNER.reset(token)


def lease_owner() -> str | None:
    """The worker whose leases guard writes here (None: unguarded)."""
    return _OWNER.get()


async def check_lease(conn: AsyncConnection, batch_id: str, owner: str | None = None) -> None:
    """Raise LeaseLost unless `owner` (default: the guard) holds `batch_id`'s lease."""
    owner = owner if owner is not None else _OWNER.get()
    if owner is None:
        return
    held = await conn.execute(
        update(batches)
        .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
        .values(lease_owner=owner)
    )
    if held.rowcount == 0:
        raise LeaseLost(batch_id, owner)


__all__ = ["check_lease", "guarded_by", "lease_owner"]
