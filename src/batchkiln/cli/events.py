"""`kiln events`: the timeline of everything that happened to a Job, from the audit log."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from batchkiln.cli.app import app, console, open_app, run_command
from batchkiln.cli.views import stamp, usd
from batchkiln.store import AuditEvent, BatchRow

JobArg = Annotated[str, typer.Argument(help="Job id or key.")]
JsonlOpt = Annotated[bool, typer.Option("--json", help="JSONL: one event per line, for tools.")]


def offset(seconds: float) -> str:
    """+H:MM:SS since the job was created (+Nd H:MM:SS past a day)."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"+{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"+{days}d {text[1:]}" if days else text


def event_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at,
        "job_id": event.job_id,
        "batch_id": event.batch_id,
        "kind": event.kind,
        "from": event.from_state,
        "to": event.to_state,
        "reason": event.reason,
        "worker": event.worker,
        "data": event.data,
    }


def describe(event: AuditEvent) -> str:
    """The event's reason, or a sentence made from its data where it has none."""
    if event.reason:
        return event.reason
    data = event.data or {}
    if event.kind == "cost.recorded":
        return (
            f"{data.get('billed_requests', 0):,} billed requests,"
            f" {data.get('input_tokens', 0):,} input ({data.get('cached_input_tokens', 0):,}"
            f" cached) + {data.get('output_tokens', 0):,} output tokens:"
            f" {usd(data.get('cost_usd'))} (standard {usd(data.get('list_cost_usd'))})"
        )
    if event.kind == "key.archived" and "expires_at" in data:
        return f"key {data.get('key')} kept until {stamp(data['expires_at'])} UTC, then reaped"
    if event.kind == "batch.ingested" and data:
        counts = ", ".join(
            f"{name} {data[name]}"
            for name in ("succeeded", "failed", "exhausted", "cancelled", "retrying")
            if data.get(name)
        )
        return f"ended {data.get('ended_as', '?')}: {counts or 'no requests'}"
    return ""


def timeline(events: list[AuditEvent], batches: list[BatchRow], started: float) -> Table:
    labels = {b.id: f"s{b.shard} a{b.attempt}" for b in batches}
    by_key = {b.key: labels[b.id] for b in batches}
    table = Table(title="timeline", title_justify="left")
    for column in ("+time", "batch", "event", "change", "reason", "worker"):
        table.add_column(column, overflow="fold")
    for e in events:
        change = f"{e.from_state or '·'} → {e.to_state}" if e.to_state else ""
        label = labels.get(e.batch_id or "", e.batch_id or "job")
        if e.batch_id is None and (e.data or {}).get("batch_key") in by_key:
            label = by_key[(e.data or {})["batch_key"]]
        table.add_row(offset(e.at - started), label, e.kind, change, describe(e), e.worker or "")
    return table


@app.command()
def events(job: JobArg, as_json: JsonlOpt = False) -> None:
    """A Job's timeline: every transition, call, webhook, cost and key event.
    With --json, one JSON object per line (JSONL)."""

    async def go() -> tuple[Any, list[AuditEvent], list[BatchRow]]:
        async with open_app() as rt:
            store = rt.kiln.store
            found = await store.jobs.get(job)
            return found, await store.audit.for_job(found.id), await store.batches.for_job(found.id)

    found, history, batches = run_command(go)
    if as_json:
        for event in history:
            sys.stdout.write(orjson.dumps(event_json(event)).decode() + "\n")
        return
    console.print(
        f"job [bold]{found.id}[/] (key {found.key}), created {stamp(found.created_at)} UTC;"
        " batches are labelled s<shard> a<attempt>"
    )
    console.print(timeline(history, batches, found.created_at))
