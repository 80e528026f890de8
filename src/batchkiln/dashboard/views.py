"""The JSON the dashboard's page draws from.

- `lifecycle_view`: states, arrows, colours and every text, read from
  `batchkiln.lifecycle` (the page has no copy of them), plus the polling schedule
  from the served App's `TrackingPolicy` and the mode it actually runs in.
- `summary_view`: live counts per state, the batches in each (next check, vendor
  calls), and the actual cost billed in each vendor outcome.
- `job_view`: one job's batches as a lineage tree, its audit timeline, costs
  (estimate, actual, standard price), requests, failures waiting for a retry, and
  the Done hygiene (key archived until when, cost records, audit event ids).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchkiln.dashboard import queries
from batchkiln.engine.policy import JobOptions
from batchkiln.engine.schedule import Backoff, TrackingMode
from batchkiln.lifecycle import (
    DIAGRAM_STEPS,
    EDGE_LABELS,
    ENDED_AT_VENDOR,
    JOB_STATE_INFO,
    JOB_TRANSITIONS,
    LIVE_AT_VENDOR,
    PALETTE,
    STATE_INFO,
    STATE_LOOK,
    TRANSITIONS,
    Event,
    State,
)

if TYPE_CHECKING:
    from batchkiln.app import App
    from batchkiln.store import AuditEvent

# Arrows of TRANSITIONS the drawing leaves out: a poll can see a batch finish
# straight from `pending`, and a cancel can race a finish; drawing all of them
# would bury the seed's shape. They are listed in the response as `shortcuts`.
_SHORTCUT_SOURCES = {State.PENDING, State.CANCELLING}
_FAILURE_KINDS = ("fail", "unknown", "error", "reject", "refused", "exceeded", "expired")


def schedule(backoff: Backoff, *, steps: int = 12) -> list[float]:
    """The un-jittered delays of a backoff, up to and including its cap."""
    out: list[float] = []
    for attempt in range(steps):
        delay = backoff.ceiling(attempt)
        out.append(delay)
        if delay >= backoff.cap:
            break
    return out


def _is_shortcut(source: State, target: State) -> bool:
    if source == State.CANCELLING and target == State.CANCELLED:
        return False  # the user's cancel path is drawn
    if source in _SHORTCUT_SOURCES and target in ENDED_AT_VENDOR:
        return True
    return source == State.IN_PROGRESS and target == State.CANCELLED


def _edges() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    pairs: dict[tuple[State, State], list[Event]] = {}
    for (source, event), target in TRANSITIONS.items():
        pairs.setdefault((source, target), []).append(event)
    drawn: list[dict[str, Any]] = []
    shortcuts: list[dict[str, str]] = []
    for (source, target), events in pairs.items():
        edge = {"from": source.value, "to": target.value, "events": [e.value for e in events]}
        if _is_shortcut(source, target):
            shortcuts.append({"from": source.value, "to": target.value})
            continue
        edge["label"] = EDGE_LABELS.get((source, target), "")
        drawn.append(edge)
    for state, info in STATE_INFO.items():  # the retry path: a child batch, never this row
        if info.retry_path:
            drawn.append(
                {
                    "from": state.value,
                    "to": "retry",
                    "label": EDGE_LABELS.get((state, "retry"), ""),
                    "events": [],
                }
            )
    drawn.append(
        {
            "from": "retry",
            "to": State.PENDING.value,
            "label": EDGE_LABELS.get(("retry", State.PENDING), ""),
            "events": [],
        }
    )
    return drawn, shortcuts


def lifecycle_view(app: App) -> dict[str, Any]:
    tracking = app.tracking
    states = []
    for state in State:
        info, look = STATE_INFO[state], STATE_LOOK[state]
        states.append(
            {
                "id": state.value,
                "label": look.label,
                "verdict": look.verdict,
                "palette": look.palette,
                "seed": look.seed,
                "cost_badge": look.cost_badge,
                "meaning": info.meaning,
                "typical_wait": info.typical_wait,
                "next_action": info.next_action,
                "billed": info.billed,
                "terminal_at_vendor": info.terminal_at_vendor,
                "retry_path": info.retry_path,
                "live_at_vendor": state in LIVE_AT_VENDOR,
            }
        )
    steps = [{"id": key, "step": True, **step.__dict__} for key, step in DIAGRAM_STEPS.items()]
    edges, shortcuts = _edges()
    return {
        "states": states,
        "steps": steps,
        "edges": edges,
        "shortcuts": shortcuts,
        "palette": PALETTE,
        "polled_states": [s.value for s in State if s in LIVE_AT_VENDOR],
        "tracking": {
            "mode": tracking.mode.value,
            "view": "polling" if tracking.mode == TrackingMode.POLL else "webhook",
            "poll": schedule(tracking.poll),
            "hybrid": schedule(tracking.hybrid),
            "safety_net": tracking.safety_net.first,
            "jitter": tracking.poll.jitter,
            "list_tick": tracking.list_tick,
        },
        "simulator": app.simulator is not None,
    }


def _batch_card(row: dict[str, Any], now: float) -> dict[str, Any]:
    next_at = row.get("next_check_at")
    return {
        "id": row["id"],
        "job_id": row["job_id"],
        "parent_id": row["parent_id"],
        "attempt": row["attempt"],
        "requests": row["request_count"],
        "provider": row["provider"],
        "model": row["model"],
        "vendor_id": row["vendor_id"],
        "vendor_calls": row["vendor_calls"],
        "check_attempt": row["check_attempt"],
        "next_check_in": None if next_at is None else round(next_at - now, 1),
    }


async def summary_view(app: App, *, job_id: str | None = None) -> dict[str, Any]:
    now = app.clock.now()
    async with app.store.engine.connect() as conn:  # one transaction for the whole view
        counts = await queries.batch_counts(conn, job_id=job_id)
        listed = await queries.batches_in_states(conn, job_id=job_id)
        billed = await queries.cost_by_outcome(conn, job_id=job_id)
        last_event_id = await queries.last_event_id(conn)
        waiting = await queries.awaiting_retry(conn)
        newest_done = (
            job_id
            if job_id is not None
            else next(
                (str(j["id"]) for j in await queries.list_jobs(conn, status="done", limit=1)),
                None,
            )
        )
    by_state: dict[str, list[dict[str, Any]]] = {}
    for row in listed:
        by_state.setdefault(str(row["state"]), []).append(_batch_card(row, now))
    costs = {k: {"batches": v.batches, "usd": v.cost_usd} for k, v in billed.items()}
    costs[State.DONE.value] = {
        "batches": sum(v.batches for v in billed.values()),
        "usd": sum(v.cost_usd for v in billed.values()),
    }
    return {
        "now": now,
        "last_event_id": last_event_id,
        "job_id": job_id,
        "counts": counts,
        "batches": by_state,
        "costs": costs,
        "hygiene": None
        if newest_done is None
        else hygiene(newest_done, await app.store.audit.for_job(newest_done)),
        "awaiting_retry": [w for w in waiting if job_id is None or w["job_id"] == job_id],
    }


def hygiene(job_id: str, events: list[AuditEvent]) -> dict[str, Any] | None:
    """What was done when the job finished, from its audit log; None until done."""
    finished = [e for e in events if e.kind == "job.done"]
    if not finished:
        return None
    key = [e for e in events if e.kind == "key.archived" and e.batch_id is None]
    batch_keys = [e for e in events if e.kind == "key.archived" and e.batch_id is not None]
    cost = [e for e in events if e.kind == "cost.recorded"]
    deleted = [e for e in events if e.kind == "vendor.files_deleted"]
    return {
        "job_id": job_id,
        "done_event_id": finished[-1].id,
        "done_at": finished[-1].at,
        "key": (key[-1].data or {}).get("key") if key else None,
        "key_archived_until": (key[-1].data or {}).get("expires_at") if key else None,
        "key_event_id": key[-1].id if key else None,
        "batch_keys_archived": len(batch_keys),
        "cost_records": [
            {
                "event_id": e.id,
                "batch_id": e.batch_id,
                "cost_usd": (e.data or {}).get("cost_usd"),
                "billed_requests": (e.data or {}).get("billed_requests"),
            }
            for e in cost
        ],
        "vendor_files_deleted": len(deleted),
    }


def is_failure(event: AuditEvent) -> bool:
    """Whether a timeline entry is about something going wrong."""
    if event.to_state in (State.FAILED, State.PARTIAL, State.EXPIRED):
        return True
    kind = event.kind.lower()
    return any(word in kind for word in _FAILURE_KINDS)


def _event(e: AuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at,
        "kind": e.kind,
        "batch_id": e.batch_id,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "reason": e.reason,
        "failure": is_failure(e),
    }


async def job_view(app: App, job_id: str) -> dict[str, Any]:
    status = await app.kiln.status(job_id)  # NotFound
    job = status.job
    events = await app.store.audit.for_job(job.id)
    estimates = await app.store.costs.estimates_for_job(job.id)
    recorded = await app.store.costs.costs_for_job(job.id)
    waiting = await app.store.ledger.awaiting_retry(job.id)
    options = JobOptions.load(job.options)
    walked: dict[str, list[str]] = {}
    for e in events:
        if e.batch_id and e.to_state:
            path = walked.setdefault(e.batch_id, [])
            if not path or path[-1] != e.to_state:
                path.append(e.to_state)
    est_by_key = {e.batch_key: e for e in estimates}
    cost_by_batch = {c.batch_id: c for c in recorded}
    batches = []
    for b in status.batches:
        est = est_by_key.get(b.key)
        cost = cost_by_batch.get(b.id)
        batches.append(
            {
                "id": b.id,
                "parent_id": b.parent_id,
                "shard": b.shard,
                "attempt": b.attempt,
                "state": b.state.value,
                "requests": b.request_count,
                "vendor_id": b.vendor_id,
                "vendor_status": b.vendor_status,
                "vendor_succeeded": b.vendor_succeeded,
                "vendor_failed": b.vendor_failed,
                "vendor_calls": b.vendor_calls,
                "next_check_in": None
                if b.next_check_at is None
                else round(b.next_check_at - app.clock.now(), 1),
                "walked": walked.get(b.id, []),
                "estimate_usd": est.cost_usd if est else None,
                "actual_usd": cost.cost_usd if cost else None,
                "standard_usd": cost.list_cost_usd
                if cost
                else (est.list_cost_usd if est else None),
                "error": b.error if isinstance(b.error, (str, dict, list)) else None,
            }
        )
    failures_waiting = sum(len(seqs) for seqs in waiting.values())
    return {
        "job": {
            "id": job.id,
            "key": job.key,
            "provider": job.provider,
            "model": job.model,
            "endpoint": job.endpoint,
            "requests": job.request_count,
            "status": job.status,
            "state": status.state,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
            "auto_retry": options.retry.auto_retry,
            "max_attempts": options.retry.max_attempts,
        },
        "now": app.clock.now(),
        "counts": status.counts,
        "batches": batches,
        "events": [_event(e) for e in events],
        "costs": {
            "estimate_usd": _total(e.cost_usd for e in estimates),
            "actual_usd": _total(c.cost_usd for c in recorded),
            "standard_usd": _total(c.list_cost_usd for c in recorded),
            "standard_estimate_usd": _total(e.list_cost_usd for e in estimates),
            "recorded_batches": len(recorded),
        },
        "failures_waiting": failures_waiting if not options.retry.auto_retry else 0,
        "requests": await _requests(app, job.id),
        "hygiene": hygiene(job.id, events),
        "job_lifecycle": job_lifecycle(str(job.status)),
    }


async def _requests(app: App, job_id: str) -> list[dict[str, Any]]:
    async with app.store.engine.connect() as conn:
        return await queries.job_requests(conn, job_id)


def job_lifecycle(current: str) -> dict[str, Any]:
    """The Job's own lifecycle (lifecycle.JOB_*), with the job's state marked."""
    return {
        "current": current,
        "states": [
            {"id": s.value, "meaning": i.meaning, "next_action": i.next_action}
            for s, i in JOB_STATE_INFO.items()
        ],
        "edges": [
            {"from": a.value, "event": e.value, "to": b.value}
            for (a, e), b in JOB_TRANSITIONS.items()
        ],
    }


def _total(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return round(sum(present), 6) if present else None
