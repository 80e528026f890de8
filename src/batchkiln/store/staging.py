"""A batch's closing transaction, opened while its results are downloaded (PostgreSQL).

The close (`Ledger.close_batch`) gives every request of the batch its outcome in one
transaction. On PostgreSQL the UPDATE of the succeeded requests, nearly all of them as a
rule, was most of the close: 0.25 s of 0.41 s at 50,000 requests, ~5 us a row of
executor work however narrow the row. So that transaction is opened with the download
instead, and each chunk's succeeded requests get their outcome in it as the chunk is
stored, while the engine parses the next chunk (the server works in its own process).
The close then runs its own statements in the same transaction and commits.

Nothing is visible before that commit: a request shows no outcome until its batch is
done, and a crash, or a close refused (closed already, lease lost, counts off the
plan), rolls the staged rows back with the rest. A result that succeeded always makes
a succeeded request, whatever the plan decides for the others (engine.ingest `_decide`),
so staging needs no plan; the close checks that the plan agrees and that the staged
count is the plan's.

Locks: the staged rows stay locked until the close. Nothing else writes them meanwhile
(result chunks go to `results`, lease checks to `batches`, and this transaction touches
the batch row only in the close itself); a second worker ingesting the same batch waits
on them, then finds the batch closed (StaleTransition) or its own staging short.

The statement must not depend on statistics (none yet for rows just written, as in
store.ledger): the chunk's seqs, in the order the vendor wrote them (not input order),
are probed on the primary key (`job_id`, `seq` = ANY). The array is handed over through
a scalar subquery, so the planner cannot see its length: given 2,000 constants it chose
to scan every request of the job for each chunk instead. For the same reason the batch
is tested with IS NOT DISTINCT FROM, not `=`: an indexable test let the planner AND in
the `batch_id` index, all of the batch's rows again.

SQLite has one writer at a time: a transaction held across the download would block the
result chunks themselves and every other write of the process. There `Stage` stages
nothing and the close applies every outcome itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import Integer, any_, bindparam, cast, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.store.rows import BatchRow
from batchkiln.store.tables import requests

_INTS = ARRAY(Integer)


class Stage:
    """The closing transaction of one batch, and how many requests it has given
    `succeeded` so far. Inert (`active` False) on SQLite."""

    def __init__(self, engine: AsyncEngine, batch: BatchRow) -> None:
        self.active = engine.dialect.name == "postgresql"
        self.count = 0
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._update = (
            update(requests)
            .where(
                requests.c.job_id == batch.job_id,
                requests.c.seq
                == any_(cast(select(bindparam("seqs", type_=_INTS)).scalar_subquery(), _INTS)),
                requests.c.batch_id.is_not_distinct_from(batch.id),  # not by its index
                requests.c.outcome.is_(None),
            )
            .values(outcome="succeeded", result_batch_id=batch.id, attempts=batch.attempt)
        )

    async def succeeded(self, seqs: Sequence[int]) -> None:
        """Give these requests (their results succeeded) their outcome, uncommitted."""
        if not self.active or not seqs:
            return
        conn = await self.connection()
        moved = await conn.execute(self._update, {"seqs": list(seqs)})
        self.count += moved.rowcount

    async def connection(self) -> AsyncConnection:
        """The transaction's connection (opened on first use)."""
        if self._conn is None:
            self._conn = await self._engine.connect()
        return self._conn

    async def _close(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # rolls back what the close did not commit


@asynccontextmanager
async def staged_close(engine: AsyncEngine, batch: BatchRow) -> AsyncIterator[Stage]:
    """A `Stage` for `batch`, rolled back on the way out unless the close committed it."""
    stage = Stage(engine, batch)
    try:
        yield stage
    finally:
        await stage._close()
