"""Read-only questions the dashboard asks the store that no repository answers yet:
batches grouped by state, costs grouped by the vendor outcome that billed them, a
filtered job list, and a job's requests.

They run on a connection of the App's own engine (`app.store.engine`; a view asks
all its questions on one, since every SQLite transaction here takes the write lock)
with SQLAlchemy Core and write nothing; every state change still goes through the
engine. Kept here, not in store/, because only the dashboard needs these shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from batchkiln.lifecycle import State
from batchkiln.store.tables import audit_events, batches, costs, jobs, requests


@dataclass(frozen=True)
class StateCost:
    batches: int
    cost_usd: float
    list_cost_usd: float


async def batch_counts(conn: AsyncConnection, *, job_id: str | None = None) -> dict[str, int]:
    """How many batches are in each state right now (of one job, or of all)."""
    query = select(batches.c.state, func.count()).group_by(batches.c.state)
    if job_id is not None:
        query = query.where(batches.c.job_id == job_id)
    return {str(s): int(n) for s, n in (await conn.execute(query)).all()}


async def batches_in_states(
    conn: AsyncConnection, *, job_id: str | None = None, per_state: int = 12
) -> list[dict[str, Any]]:
    """The newest batches of each state (at most `per_state` each), for the cards."""
    ranked = select(
        batches.c.id,
        batches.c.job_id,
        batches.c.parent_id,
        batches.c.state,
        batches.c.attempt,
        batches.c.request_count,
        batches.c.next_check_at,
        batches.c.check_attempt,
        batches.c.vendor_calls,
        batches.c.vendor_id,
        batches.c.updated_at,
        jobs.c.provider,
        jobs.c.model,
        func.row_number()
        .over(partition_by=batches.c.state, order_by=batches.c.updated_at.desc())
        .label("rank"),
    ).select_from(batches.join(jobs, jobs.c.id == batches.c.job_id))
    if job_id is not None:
        ranked = ranked.where(batches.c.job_id == job_id)
    sub = ranked.subquery()
    query = select(sub).where(sub.c.rank <= per_state).order_by(sub.c.state, sub.c.rank)
    rows = (await conn.execute(query)).mappings().all()
    return [{k: v for k, v in row.items() if k != "rank"} for row in rows]


async def cost_by_outcome(
    conn: AsyncConnection, *, job_id: str | None = None
) -> dict[str, StateCost]:
    """Recorded actual cost, grouped by the vendor outcome each billed batch ended in
    (read from its `batch.download` audit event: completed, partial, expired, ...)."""
    ended = (
        select(
            audit_events.c.batch_id,
            func.min(audit_events.c.from_state).label("outcome"),
        )
        .where(audit_events.c.kind == "batch.download")
        .group_by(audit_events.c.batch_id)
        .subquery()
    )
    query = (
        select(
            ended.c.outcome,
            func.count(),
            func.coalesce(func.sum(costs.c.cost_usd), 0.0),
            func.coalesce(func.sum(costs.c.list_cost_usd), 0.0),
        )
        .select_from(costs.join(ended, ended.c.batch_id == costs.c.batch_id))
        .group_by(ended.c.outcome)
    )
    if job_id is not None:
        query = query.where(costs.c.job_id == job_id)
    rows = (await conn.execute(query)).all()
    return {str(o): StateCost(int(n), float(c), float(lc)) for o, n, c, lc in rows}


async def list_jobs(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    provider: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Jobs newest first, filtered by status (active / done) and provider."""
    query = select(
        jobs.c.id,
        jobs.c.key,
        jobs.c.provider,
        jobs.c.model,
        jobs.c.request_count,
        jobs.c.status,
        jobs.c.created_at,
        jobs.c.finished_at,
    ).order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
    if status:
        query = query.where(jobs.c.status == status)
    if provider:
        query = query.where(jobs.c.provider == provider)
    rows = (await conn.execute(query.limit(limit))).mappings().all()
    return [dict(row) for row in rows]


async def providers_in_use(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(select(jobs.c.provider).distinct().order_by(jobs.c.provider))
    return [str(p) for (p,) in rows]


async def job_requests(
    conn: AsyncConnection, job_id: str, *, limit: int = 25
) -> list[dict[str, Any]]:
    """A job's requests that did not (yet) succeed, then the first others, in input
    order (each part capped at `limit`)."""
    columns = (
        requests.c.seq,
        requests.c.custom_id,
        requests.c.line,
        requests.c.batch_id,
        requests.c.attempts,
        requests.c.outcome,
        requests.c.last_error,
    )
    unsettled = (
        select(*columns)
        .where(
            requests.c.job_id == job_id,
            (requests.c.outcome.is_(None)) | (requests.c.outcome != "succeeded"),
        )
        .order_by(requests.c.seq)
        .limit(limit)
    )
    first = select(*columns).where(requests.c.job_id == job_id).order_by(requests.c.seq)
    rows = [dict(r) for r in (await conn.execute(unsettled)).mappings().all()]
    seen = {r["seq"] for r in rows}
    for r in (await conn.execute(first.limit(limit + len(seen)))).mappings().all():
        if r["seq"] not in seen and len(rows) < 2 * limit:
            rows.append(dict(r))
    return rows


async def last_event_id(conn: AsyncConnection) -> int:
    """The newest audit event's id (0 when there is none): where a live view starts."""
    newest = select(func.coalesce(func.max(audit_events.c.id), 0))
    return int((await conn.execute(newest)).scalar_one())


async def awaiting_retry(conn: AsyncConnection, *, limit: int = 10) -> list[dict[str, Any]]:
    """Jobs with requests that have no outcome while their batch is done: failures
    waiting for a manual retry (automatic retry off), with how many, newest first."""
    query = (
        select(requests.c.job_id, func.count().label("waiting"))
        .select_from(requests.join(batches, batches.c.id == requests.c.batch_id))
        .where(requests.c.outcome.is_(None), batches.c.state == "done")
        .group_by(requests.c.job_id)
        .order_by(func.max(batches.c.updated_at).desc())
        .limit(limit)
    )
    return [{"job_id": str(j), "waiting": int(n)} for j, n in (await conn.execute(query)).all()]


async def job_states(
    conn: AsyncConnection, jobs_: list[dict[str, Any]]
) -> dict[str, tuple[str, dict[str, int]]]:
    """For listed jobs, in two queries: the state word `JobStatus.state` gives (the
    job's own state once it is not active, else its least advanced live batch state)
    and the counts of its requests by outcome."""
    ids = [str(j["id"]) for j in jobs_]
    if not ids:
        return {}
    order = {s.value: i for i, s in enumerate(State)}
    live: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {i: {} for i in ids}
    rows = await conn.execute(
        select(batches.c.job_id, batches.c.state)
        .where(batches.c.job_id.in_(ids), batches.c.state != State.DONE.value)
        .distinct()
    )
    for job_id, state in rows:
        best = live.get(job_id)
        if best is None or order.get(str(state), 99) < order.get(best, 99):
            live[job_id] = str(state)
    tallies = await conn.execute(
        select(requests.c.job_id, requests.c.outcome, func.count())
        .where(requests.c.job_id.in_(ids))
        .group_by(requests.c.job_id, requests.c.outcome)
    )
    for job_id, outcome, n in tallies:
        counts[job_id][outcome or "pending"] = int(n)
    out = {}
    for j in jobs_:
        status = str(j["status"])
        word = live.get(str(j["id"]), status) if status == "active" else status
        out[str(j["id"])] = (word, counts[str(j["id"])])
    return out
