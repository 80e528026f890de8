"""The one guarded write of a state: every move of a Batch or a Job goes through `move`.

A move is `UPDATE <table> SET <state> = :to ... WHERE id = :id AND <state> = :from
RETURNING *`, inside the caller's transaction, followed by exactly one audit event
(`<noun>.<event>`) in that same transaction. Zero rows means someone else moved the
row first: StaleTransition. An event the lifecycle table does not list from `from`:
IllegalTransition, before anything is written. The updated row is returned, so
callers never re-read what they just wrote.

New rows are born in their lifecycle's initial state through `initial_state`; no
other module writes a state or status column (a test checks the source).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, RowMapping, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from batchkiln.errors import StaleTransition
from batchkiln.lifecycle import BATCH, JOB, Lifecycle
from batchkiln.store.audit import append_event
from batchkiln.store.tables import batches, jobs


@dataclass(frozen=True)
class Machine:
    """Where a lifecycle's rows live: the table and its state column."""

    lifecycle: Lifecycle[Any, Any]
    table: Table
    column: str

    @property
    def state_column(self) -> Column[Any]:
        return self.table.c[self.column]


BATCHES = Machine(BATCH, batches, "state")
JOBS = Machine(JOB, jobs, "status")


def initial_state(machine: Machine) -> dict[str, str]:
    """The state column of a new row: its lifecycle's initial state."""
    return {machine.column: machine.lifecycle.initial.value}


async def move(
    conn: AsyncConnection,
    machine: Machine,
    row_id: str,
    from_state: StrEnum,
    event: StrEnum,
    *,
    now: float,
    reason: str | None = None,
    worker: str | None = None,
    values: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    guards: tuple[Any, ...] = (),
) -> RowMapping:
    """Move row `row_id` by `event` if it is still in `from_state` (and `guards` hold),
    with its audit event, in `conn`'s transaction. Returns the updated row."""
    to_state = machine.lifecycle.apply(row_id, from_state, event)
    extra = dict(values or {})
    if machine.column in extra:
        raise ValueError("a state changes through its event, never through values")
    table = machine.table
    row = (
        (
            await conn.execute(
                update(table)
                .where(table.c.id == row_id, machine.state_column == from_state.value, *guards)
                .values({machine.column: to_state.value, "updated_at": now, **extra})
                .returning(*table.c)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        current = (
            await conn.execute(select(machine.state_column).where(table.c.id == row_id))
        ).scalar()
        states = machine.lifecycle.states
        raise StaleTransition(row_id, from_state, states(current) if current else None)
    is_batch = machine.lifecycle.noun == "batch"
    await append_event(
        conn,
        at=now,
        kind=f"{machine.lifecycle.noun}.{event.value}",
        job_id=row["job_id"] if is_batch else row_id,
        batch_id=row_id if is_batch else None,
        from_state=from_state.value,
        to_state=to_state.value,
        reason=reason,
        worker=worker,
        data=data,
    )
    return row
