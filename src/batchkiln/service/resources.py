"""The JSON shapes of the API (pydantic models: they are the OpenAPI schemas too)
and the functions that build them from what the App knows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from batchkiln.app import App
from batchkiln.costs.report import job_cost
from batchkiln.engine.kiln import JobStatus
from batchkiln.engine.tracking import detection_latency
from batchkiln.lifecycle import LIVE_AT_VENDOR, STATE_INFO
from batchkiln.store import AuditEvent, BatchRow


class Lease(BaseModel):
    owner: str | None = Field(description="the worker holding the batch, if any")
    expires_at: float | None


class Batch(BaseModel):
    id: str
    parent_id: str | None = Field(description="the batch whose failures this one retries")
    state: str = Field(description="Batch lifecycle state (see lifecycle.py)")
    next_action: str
    attempt: int
    shard: int
    request_count: int
    vendor_id: str | None
    vendor_status: str | None
    vendor_succeeded: int | None
    vendor_failed: int | None
    next_check_at: float | None
    check_attempt: int
    vendor_calls: int
    detected_at: float | None
    detection_latency: float | None
    lease: Lease
    created_at: float
    updated_at: float


class Money(BaseModel):
    cost_usd: float | None = Field(description="at batch prices (None: model not priced)")
    list_cost_usd: float | None = Field(description="the same work at standard prices")
    saving_usd: float | None
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


class Cost(BaseModel):
    estimate: Money = Field(description="upper bound made before submission (first attempts)")
    retry_estimate: Money = Field(description="estimates of retry children admitted since")
    actual: Money = Field(description="recorded from the billed usage in the results")
    estimate_usd: float | None
    actual_usd: float | None
    standard_usd: float | None = Field(description="actual work at standard (non-batch) prices")
    batches_not_costed_yet: int


class Callback(BaseModel):
    url: str
    events: str
    disabled: bool
    own_secret: bool = Field(description="signed with the job's own secret (never shown)")


class Job(BaseModel):
    id: str
    key: str = Field(description="the job's idempotency key (derived: see README)")
    state: str = Field(
        description="`done` when finished, `awaiting_retry` when failures wait for a manual"
        " retry, else the least advanced live Batch state"
    )
    status: str = Field(description="the Job lifecycle state: active | awaiting_retry | done")
    provider: str
    model: str
    endpoint: str
    request_count: int
    counts: dict[str, int] = Field(description="requests by final outcome; pending: none yet")
    outcome: dict[str, Any] | None
    options: dict[str, Any]
    batches: list[Batch]
    cost: Cost
    next_check_at: float | None = Field(description="the soonest check of a live batch")
    callback: Callback | None
    created_at: float
    updated_at: float
    finished_at: float | None


class JobSummary(BaseModel):
    id: str
    key: str
    state: str
    status: str
    provider: str
    model: str
    request_count: int
    created_at: float
    updated_at: float
    finished_at: float | None


class JobPage(BaseModel):
    data: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class Event(BaseModel):
    """One audit event (the SSE `data:`; its `id:` is this id)."""

    id: int
    at: float
    kind: str
    job_id: str | None
    batch_id: str | None
    from_state: str | None
    to_state: str | None
    reason: str | None
    worker: str | None
    data: dict[str, Any] | None


class EventPage(BaseModel):
    data: list[Event]
    next_cursor: str | None


class CancelResult(BaseModel):
    cancelled: list[str] = Field(description="ids of the batches cancel was requested for")
    job: Job


class RetryResult(BaseModel):
    created: list[str] = Field(description="ids of the retry batches started now")
    job: Job


class Health(BaseModel):
    status: str
    revision: str | None = None
    detail: str | None = None


def batch_resource(b: BatchRow) -> Batch:
    return Batch(
        id=b.id,
        parent_id=b.parent_id,
        state=b.state.value,
        next_action=STATE_INFO[b.state].next_action,
        attempt=b.attempt,
        shard=b.shard,
        request_count=b.request_count,
        vendor_id=b.vendor_id,
        vendor_status=b.vendor_status,
        vendor_succeeded=b.vendor_succeeded,
        vendor_failed=b.vendor_failed,
        next_check_at=b.next_check_at,
        check_attempt=b.check_attempt,
        vendor_calls=b.vendor_calls,
        detected_at=b.detected_at,
        detection_latency=detection_latency(b),
        lease=Lease(owner=b.lease_owner, expires_at=b.lease_expires_at),
        created_at=b.created_at,
        updated_at=b.updated_at,
    )


async def job_resource(app: App, status: JobStatus) -> Job:
    job = status.job
    cost = await job_cost(app.store, job.id)
    callback = await app.store.outbox.callback(job.id)
    live = [b.next_check_at for b in status.batches if b.state in LIVE_AT_VENDOR]
    due = [b.next_check_at for b in status.batches if b.next_check_at is not None]
    nexts = [t for t in live if t is not None] or due
    return Job(
        id=job.id,
        key=job.key,
        state=status.state,
        status=job.status,
        provider=job.provider,
        model=job.model,
        endpoint=job.endpoint,
        request_count=job.request_count,
        counts=status.counts,
        outcome=job.outcome,
        options=job.options,
        batches=[batch_resource(b) for b in status.batches],
        cost=Cost(
            estimate=Money(**cost.estimate.to_json()),
            retry_estimate=Money(**cost.retry_estimate.to_json()),
            actual=Money(**cost.actual.to_json()),
            estimate_usd=cost.estimate.to_json()["cost_usd"],
            actual_usd=cost.actual.to_json()["cost_usd"],
            standard_usd=cost.actual.to_json()["list_cost_usd"],
            batches_not_costed_yet=cost.pending_batches,
        ),
        next_check_at=min(nexts) if nexts else None,
        callback=Callback(
            url=callback.url,
            events=callback.events,
            disabled=callback.disabled_at is not None,
            own_secret=callback.secret is not None,
        )
        if callback
        else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def event_resource(e: AuditEvent) -> Event:
    return Event(
        id=e.id,
        at=e.at,
        kind=e.kind,
        job_id=e.job_id,
        batch_id=e.batch_id,
        from_state=e.from_state,
        to_state=e.to_state,
        reason=e.reason,
        worker=e.worker,
        data=_clean(e.data),
    )


_SECRET_WORDS = ("secret", "token", "password", "api_key")


def _clean(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Audit data as shown over HTTP: nothing whose name says secret (belt and braces:
    no secret is written to the audit log in the first place)."""
    if data is None:
        return None
    return {k: v for k, v in data.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
