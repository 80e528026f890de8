"""What a person sees: Rich renderings of jobs, batches and timelines. The
words for each state come from the lifecycle table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from batchkiln.engine.kiln import JobStatus
from batchkiln.engine.tracking import detection_latency
from batchkiln.lifecycle import STATE_INFO, State
from batchkiln.store import BatchRow

STATE_STYLE = {
    State.NOT_SUBMITTED: "bright_black",
    State.SUBMITTING: "cyan",
    State.PENDING: "blue",
    State.IN_PROGRESS: "bright_blue",
    State.CANCELLING: "magenta",
    State.COMPLETED: "green",
    State.PARTIAL: "yellow",
    State.FAILED: "red",
    State.EXPIRED: "dark_orange",
    State.CANCELLED: "magenta",
    State.DOWNLOADING: "cyan",
    State.DONE: "green",
}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def stamp(when: float | None) -> str:
    if when is None:
        return "-"
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def state_text(state: State) -> Text:
    return Text(state.value, style=STATE_STYLE[state])


def batch_progress(batch: BatchRow) -> str:
    if batch.vendor_total:
        done = (batch.vendor_succeeded or 0) + (batch.vendor_failed or 0)
        failed = f", {batch.vendor_failed} failed" if batch.vendor_failed else ""
        return f"{done}/{batch.vendor_total}{failed}"
    return f"0/{batch.request_count}"


def lease_lines(batches: list[BatchRow], now: float) -> list[str]:
    """'leased by WORKER until TIME' for each batch whose live lease blocks progress."""
    return [
        f"batch {b.id} is leased by {b.lease_owner} until {stamp(b.lease_expires_at)} UTC:"
        " it moves when that worker releases it or the lease expires"
        for b in batches
        if b.lease_owner and b.lease_expires_at is not None and b.lease_expires_at > now
    ]


def status_view(status: JobStatus, now: float, *, clock_now: float | None = None) -> Group:
    """The job and its batches; durations measured to `now`, leases to `clock_now`
    (default `now`)."""
    job = status.job
    head = Table.grid(padding=(0, 2))
    head.add_row("job", f"[bold]{job.id}[/]", "key", job.key)
    head.add_row("provider", f"{job.provider} / {job.model}", "requests", str(job.request_count))
    state = f"[bold]{status.state}[/]" + (f" ({status.waiting})" if status.waiting else "")
    head.add_row("state", state, "elapsed", duration(now - job.created_at))
    outcome = ", ".join(f"{k} {v}" for k, v in sorted(status.counts.items()))
    head.add_row("outcomes", outcome, "source", job.source or "-")
    table = Table(title="batches", title_justify="left", expand=False)
    for column in (
        "batch",
        "attempt",
        "shard",
        "state",
        "vendor id",
        "progress",
        "next check",
        "calls",
        "next action",
    ):
        table.add_column(column)
    lease_now = now if clock_now is None else clock_now
    for b in status.batches:
        next_check = duration(b.next_check_at - now) if b.next_check_at else "-"
        if b.lease_owner and b.lease_expires_at is not None and b.lease_expires_at > lease_now:
            next_check = f"leased until {stamp(b.lease_expires_at)[11:]}"
        table.add_row(
            b.id,
            str(b.attempt),
            str(b.shard),
            state_text(b.state),
            b.vendor_id or "-",
            batch_progress(b),
            next_check,
            str(b.vendor_calls),
            b.hold_reason or STATE_INFO[b.state].next_action,
        )
    leases = [Text(line, style="yellow") for line in lease_lines(status.batches, lease_now)]
    return Group(head, table, *leases)


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="jobs", title_justify="left")
    for column in ("job", "key", "provider", "model", "requests", "status", "created"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["id"],
            r["key"][:40],
            r["provider"],
            r["model"],
            str(r["request_count"]),
            r["status"],
            stamp(r["created_at"]),
        )
    return table


def status_json(status: JobStatus) -> dict[str, Any]:
    job = status.job
    return {
        "job_id": job.id,
        "key": job.key,
        "state": status.state,
        "waiting": status.waiting,
        "provider": job.provider,
        "model": job.model,
        "requests": job.request_count,
        "outcomes": status.counts,
        "outcome": job.outcome,
        "batches": [
            {
                "id": b.id,
                "parent_id": b.parent_id,
                "attempt": b.attempt,
                "shard": b.shard,
                "state": b.state.value,
                "vendor_id": b.vendor_id,
                "requests": b.request_count,
                "vendor_succeeded": b.vendor_succeeded,
                "vendor_failed": b.vendor_failed,
                "next_check_at": b.next_check_at,
                "vendor_calls": b.vendor_calls,
                "lease_owner": b.lease_owner,
                "lease_expires_at": b.lease_expires_at,
                "hold_reason": b.hold_reason,
                "cancel_requested": b.cancel_requested_at is not None,
                "provisional": bool(b.provisional),
                "vendor_ended_at": b.vendor_ended_at,
                "detected_at": b.detected_at,
                "detection_latency": detection_latency(b),
            }
            for b in status.batches
        ],
    }


def usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"
