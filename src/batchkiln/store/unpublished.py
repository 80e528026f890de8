"""Rows of Jobs not yet published: the marks of their drafts, and the sweep of dead ones.

A draft (store/drafts.py) commits its request rows as it reads them, under a job id no
job row has until it publishes the Job. Its mark, a `job_drafts` row, says it is alive:
`register`ed when it opens, `touch`ed at least every TOUCH_EVERY while it writes, and
`claim`ed (deleted) by the transaction that publishes the Job. A draft whose process
died (a crash, a kill) leaves its mark and its rows; `sweep` deletes both once the mark
has been silent for STALE_AFTER.

A draft taken for dead while alive (its process stopped for minutes) loses nothing that
was published: its next `touch` or its `claim` finds the mark gone and raises
DraftSwept, and it deletes what it wrote since. Every statement that deletes a mark
says which one it expects (the sweep: still silent), so the one of a sweep and a
publish that comes second finds no row.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from batchkiln.errors import StoreError
from batchkiln.store.audit import append_event
from batchkiln.store.tables import job_drafts, request_bodies, requests

# A draft touches its mark at least this often while it reads (store clock seconds: it
# writes what it has when a read is this slow), and one silent for STALE_AFTER is taken
# for dead and swept. Only a process stopped (or a read stalled) for minutes is taken for
# dead while alive, and then it finds its mark gone and publishes nothing.
TOUCH_EVERY = 30.0
STALE_AFTER = 600.0


class DraftSwept(StoreError):
    """The draft's mark and rows were swept (it was silent for STALE_AFTER): nothing is
    published."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"the submission's stored requests (draft {job_id}) were swept after"
            f" {STALE_AFTER:.0f} s without a sign of life, so no Job was created: submit"
            " the file again"
        )


async def register(conn: AsyncConnection, job_id: str, worker: str | None, now: float) -> None:
    """The mark of a new draft, in the caller's transaction."""
    await conn.execute(
        insert(job_drafts).values(job_id=job_id, worker=worker, started_at=now, touched_at=now)
    )


async def touch(conn: AsyncConnection, job_id: str, now: float) -> None:
    """A sign of life on the draft's mark; DraftSwept if the mark has gone."""
    touched = await conn.execute(
        update(job_drafts).where(job_drafts.c.job_id == job_id).values(touched_at=now)
    )
    if touched.rowcount != 1:
        raise DraftSwept(job_id)


async def claim(conn: AsyncConnection, job_id: str) -> None:
    """Delete the draft's mark in the transaction that publishes its Job (first: a
    sweep after it finds no mark); DraftSwept if a sweep took it, and the rows with it."""
    claimed = await conn.execute(delete(job_drafts).where(job_drafts.c.job_id == job_id))
    if claimed.rowcount != 1:
        raise DraftSwept(job_id)


async def delete_rows(conn: AsyncConnection, job_id: str) -> int:
    """Delete a draft's row and request rows; how many request rows there were."""
    await conn.execute(delete(request_bodies).where(request_bodies.c.job_id == job_id))
    gone = await conn.execute(delete(requests).where(requests.c.job_id == job_id))
    await conn.execute(delete(job_drafts).where(job_drafts.c.job_id == job_id))
    return int(gone.rowcount)


async def sweep(conn: AsyncConnection, now: float) -> list[str]:
    """In the caller's transaction: delete every draft silent for STALE_AFTER, with its
    request rows, each audited; the ids of those swept."""
    cutoff = now - STALE_AFTER
    stale = (
        await conn.execute(
            select(job_drafts.c.job_id, job_drafts.c.worker, job_drafts.c.started_at).where(
                job_drafts.c.touched_at < cutoff
            )
        )
    ).all()
    swept = []
    for job_id, worker, started_at in stale:
        # guarded: a draft that touched its row since the select above is alive
        claimed = await conn.execute(
            delete(job_drafts).where(
                job_drafts.c.job_id == job_id, job_drafts.c.touched_at < cutoff
            )
        )
        if claimed.rowcount != 1:
            continue
        count = await delete_rows(conn, job_id)
        await append_event(
            conn,
            at=now,
            kind="draft.swept",
            reason=f"a submission left unfinished (silent for {STALE_AFTER:.0f} s or more):"
            f" its {count} stored request(s) deleted",
            data={"draft": job_id, "worker": worker, "started_at": started_at, "requests": count},
        )
        swept.append(job_id)
    return swept
