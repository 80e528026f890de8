"""Batch rows: guarded transitions, the persisted schedule, and leases.

Every state change goes through `store.transitions.move` (`UPDATE ... WHERE id = :id
AND state = :from`); zero rows means another worker moved the batch first, and the
caller gets StaleTransition. Inside a leased step (see store.leases) the WHERE also
names the lease owner, and a lease taken over by another worker raises LeaseLost
instead: nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from batchkiln.clock import Clock
from batchkiln.errors import LeaseLost, NotFound, StaleTransition
from batchkiln.lifecycle import Event, State
from batchkiln.store.leases import check_lease, lease_owner
from batchkiln.store.rows import BatchRow, from_row
from batchkiln.store.tables import batches
from batchkiln.store.transitions import BATCHES, move
from batchkiln.store.wakeups import notify_due

_STATE_COLUMNS = {"state"}
_guard = lease_owner


class BatchRepository:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def get(self, batch_id: str) -> BatchRow:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(batches).where(batches.c.id == batch_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no batch {batch_id!r}")
        return from_row(BatchRow, row)

    async def for_job(self, job_id: str) -> list[BatchRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(batches)
                .where(batches.c.job_id == job_id)
                .order_by(batches.c.attempt, batches.c.shard, batches.c.created_at)
            )
            return [from_row(BatchRow, r) for r in rows.mappings()]

    async def by_vendor_id(self, vendor_id: str) -> BatchRow | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(batches).where(batches.c.vendor_id == vendor_id)))
                .mappings()
                .first()
            )
        return from_row(BatchRow, row) if row else None

    async def transition(
        self,
        batch: BatchRow | str,
        from_state: State,
        event: Event,
        *,
        reason: str | None = None,
        worker: str | None = None,
        values: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        lease_owner: str | None = None,
    ) -> BatchRow:
        """Move a batch by `event` if it is still in `from_state`, with its audit event, in
        a transaction of its own; returns the moved row. Raises IllegalTransition (not in
        the table) or StaleTransition (someone else moved it). With `lease_owner`
        (default: the step's lease guard), only while that worker holds the batch's
        lease; LeaseLost otherwise."""
        batch_id = batch if isinstance(batch, str) else batch.id
        owner = lease_owner if lease_owner is not None else _guard()
        guards = () if owner is None else (batches.c.lease_owner == owner,)
        try:
            async with self._engine.begin() as conn:
                row = await move(
                    conn,
                    BATCHES,
                    batch_id,
                    from_state,
                    event,
                    now=self._clock.now(),
                    reason=reason,
                    worker=worker,
                    values=values,
                    data=data,
                    guards=guards,
                )
        except StaleTransition as exc:
            if owner is not None and exc.actual == from_state:  # the state held, the lease not
                raise LeaseLost(batch_id, owner) from None
            raise
        return from_row(BatchRow, row)

    async def update(self, batch_id: str, **values: Any) -> None:
        """Change bookkeeping columns (schedule, counters, vendor snapshot), never the state."""
        if _STATE_COLUMNS & values.keys():
            raise ValueError("state changes go through transition()")
        async with self._engine.begin() as conn:
            await check_lease(conn, batch_id)
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(updated_at=self._clock.now(), **values)
            )

    async def add_vendor_calls(self, batch_id: str, calls: int) -> None:
        async with self._engine.begin() as conn:
            await check_lease(conn, batch_id)
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(vendor_calls=batches.c.vendor_calls + calls)
            )

    async def claim_due(
        self, *, worker: str, lease_seconds: float, limit: int = 10, job_id: str | None = None
    ) -> list[BatchRow]:
        """Lease up to `limit` batches whose next check is due and whose lease is free.

        PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent workers never claim the
        same row. SQLite: the write transaction (BEGIN IMMEDIATE) serialises claims.
        """
        now = self._clock.now()
        due = (
            select(batches.c.id)
            .where(
                batches.c.state != State.DONE.value,
                batches.c.next_check_at.is_not(None),
                batches.c.next_check_at <= now,
                or_(batches.c.lease_expires_at.is_(None), batches.c.lease_expires_at < now),
            )
            .order_by(batches.c.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if job_id is not None:
            due = due.where(batches.c.job_id == job_id)
        async with self._engine.begin() as conn:
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            await conn.execute(
                update(batches)
                .where(batches.c.id.in_(ids))
                .values(lease_owner=worker, lease_expires_at=now + lease_seconds, woken_at=None)
            )
            rows = await conn.execute(select(batches).where(batches.c.id.in_(ids)))
            return [from_row(BatchRow, r) for r in rows.mappings()]

    async def release(
        self,
        batch_id: str,
        *,
        worker: str,
        next_check_at: float | None,
        vendor_calls: int = 0,
    ) -> bool:
        """Give up a lease we hold, set when the batch is next due (None: never) and add
        the vendor calls the step made, in one write. False: the lease was no longer
        ours (nothing written).

        A `mark_due` that landed while we held the lease (a webhook during the step)
        left `woken_at`: the batch is then due again at once, whatever the step said,
        so a delivery during a step is never lost."""
        async with self._engine.begin() as conn:
            woken = (
                await conn.execute(
                    select(batches.c.woken_at)
                    .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                    .with_for_update()
                )
            ).first()
            if woken is None:
                return False  # not ours (any more)
            if woken.woken_at is not None and next_check_at is not None:
                next_check_at = min(next_check_at, woken.woken_at)
            result = await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    next_check_at=next_check_at,
                    woken_at=None,
                    vendor_calls=batches.c.vendor_calls + vendor_calls,
                )
            )
            return bool(result.rowcount)

    async def renew(
        self, batch_ids: Sequence[str], *, worker: str, lease_seconds: float
    ) -> set[str]:
        """The heartbeat: extend `worker`'s leases on `batch_ids`; returns the ids still
        held (a missing one expired and was claimed by another worker: lost)."""
        if not batch_ids:
            return set()
        until = self._clock.now() + lease_seconds
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id.in_(list(batch_ids)), batches.c.lease_owner == worker)
                .values(lease_expires_at=until)
            )
            held = await conn.execute(
                select(batches.c.id).where(
                    batches.c.id.in_(list(batch_ids)), batches.c.lease_owner == worker
                )
            )
            return set(held.scalars())

    async def clear_expired_done_leases(self) -> int:
        """Forget leases that ran out on done batches (a worker killed between closing a
        batch and releasing it): nobody claims a done batch, so nothing is taken over."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(batches)
                .where(
                    batches.c.state == State.DONE.value,
                    batches.c.lease_owner.is_not(None),
                    batches.c.lease_expires_at < self._clock.now(),
                )
                .values(lease_owner=None, lease_expires_at=None)
            )
            return int(result.rowcount or 0)

    async def leased(self) -> list[BatchRow]:
        """Batches whose lease is set (held, or expired and not yet claimed again)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(batches).where(batches.c.lease_owner.is_not(None)))
            return [from_row(BatchRow, r) for r in rows.mappings()]

    async def mark_due(self, batch_id: str, *, at: float | None = None) -> None:
        """Make a batch due now (a webhook said it changed): its state is then fetched.
        If a worker holds it, `woken_at` makes `release` keep it due. On PostgreSQL,
        idle workers are woken (NOTIFY, delivered at commit)."""
        when = self._clock.now() if at is None else at
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.state != State.DONE.value)
                .values(next_check_at=when, woken_at=when)
            )
            await notify_due(conn, batch_id)

    async def request_cancel(self, batch_id: str) -> bool:
        """Record the user's cancel as intent on a batch not yet done (kept if already
        recorded). True when the batch carries the intent now."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.state != State.DONE.value,
                    batches.c.cancel_requested_at.is_(None),
                )
                .values(cancel_requested_at=now, updated_at=now)
            )
            found = (
                await conn.execute(
                    select(batches.c.cancel_requested_at).where(batches.c.id == batch_id)
                )
            ).scalar()
        return found is not None

    async def prove_ownership(self, batch_id: str) -> None:
        """The batch's results carry our tag: it is ours (no longer provisional)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(provisional=0, updated_at=self._clock.now())
            )
            await notify_due(conn, batch_id)

    async def next_due_at(self, *, job_id: str | None = None) -> float | None:
        """When the earliest batch becomes due (so an idle worker knows how long to wait)."""
        query = (
            select(batches.c.next_check_at)
            .where(batches.c.state != State.DONE.value, batches.c.next_check_at.is_not(None))
            .order_by(batches.c.next_check_at)
            .limit(1)
        )
        if job_id is not None:
            query = query.where(batches.c.job_id == job_id)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def next_claimable_at(self) -> float | None:
        """When the earliest batch is both due and free of any lease (a dead worker's
        lease must run out first), so idle workers do not spin on a held batch."""
        free_at = case(
            (
                and_(
                    batches.c.lease_expires_at.is_not(None),
                    batches.c.lease_expires_at > batches.c.next_check_at,
                ),
                batches.c.lease_expires_at,
            ),
            else_=batches.c.next_check_at,
        )
        query = select(func.min(free_at)).where(
            batches.c.state != State.DONE.value, batches.c.next_check_at.is_not(None)
        )
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).scalar()
        return None if found is None else float(found)

    async def live(self) -> list[BatchRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(batches).where(batches.c.state != State.DONE.value))
            return [from_row(BatchRow, r) for r in rows.mappings()]
