"""Plain values read from the store; nothing outside the store sees a Row."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import RowMapping

from batchkiln.lifecycle import JobState, State

T = TypeVar("T")


def from_row(cls: type[T], row: RowMapping) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in row.items() if k in names})


@dataclass(frozen=True)
class JobRow:
    id: str
    key: str
    fingerprint: str
    provider: str
    model: str
    endpoint: str
    source: str | None
    request_count: int
    options: dict[str, Any]
    status: JobState
    outcome: dict[str, Any] | None
    created_at: float
    updated_at: float
    finished_at: float | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", JobState(self.status))


@dataclass(frozen=True)
class BatchRow:
    id: str
    job_id: str
    parent_id: str | None
    key: str
    tag: str
    shard: int
    attempt: int
    state: State
    request_count: int
    wire_bytes: int
    vendor_id: str | None
    vendor_status: str | None
    vendor_total: int | None
    vendor_succeeded: int | None
    vendor_failed: int | None
    vendor_created_at: float | None
    vendor_ended_at: float | None
    error: Any
    submit_started_at: float | None
    submit_attempts: int
    last_submit_at: float | None
    next_check_at: float | None
    check_attempt: int
    vendor_calls: int
    detected_at: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    provisional: int = 0
    foreign_vendor_ids: list[str] | None = None
    cancel_requested_at: float | None = None
    woken_at: float | None = None
    hold_reason: str | None = None
    input_file: str | None = None  # Gemini: the input file recorded before create

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", State(self.state))


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: float
    job_id: str | None
    batch_id: str | None
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str | None
    worker: str | None
    data: dict[str, Any] | None


@dataclass(frozen=True)
class RequestRow:
    job_id: str
    seq: int
    custom_id: str
    line: int
    batch_id: str | None
    attempts: int
    outcome: str | None
    last_error: dict[str, Any] | None
    result_batch_id: str | None
