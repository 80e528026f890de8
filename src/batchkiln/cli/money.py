"""`kiln cost` and `kiln events`: what a Job cost against its estimate and against
standard prices, and the timeline of everything that happened to it."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from batchkiln.cli.app import JsonOpt, app, console, run_command
from batchkiln.cli.runtime import open_runtime
from batchkiln.cli.views import stamp
from batchkiln.engine.budget import GlobalBudget
from batchkiln.engine.spend import JobCost, Money, PeriodSpend, job_cost, period_spend
from batchkiln.store import AuditEvent, BatchRow

JobArg = Annotated[str, typer.Argument(help="Job id or key.")]
JsonlOpt = Annotated[bool, typer.Option("--json", help="JSONL: one event per line, for tools.")]


def usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"


def saving(money: Money) -> str:
    if money.saving_usd is None or not money.list_cost_usd:
        return "unknown"
    return f"{usd(money.saving_usd)} ({money.saving_usd / money.list_cost_usd:.0%})"


def _money_row(label: str, money: Money, *, estimate: bool = False) -> list[str]:
    t = money.tokens
    cached = "-" if estimate else f"{t['cached_input_tokens']:,}"
    return [
        label,
        f"{money.requests:,}",
        f"{t['input_tokens']:,}",
        cached,
        f"{t['output_tokens']:,}" + (" (max)" if estimate else ""),
        usd(money.cost_usd),
        usd(money.list_cost_usd),
    ]


def cost_view(report: JobCost) -> Group:
    job = report.job
    head = Table.grid(padding=(0, 2))
    head.add_row("job", f"[bold]{job.id}[/]", "key", job.key)
    head.add_row("model", f"{job.provider} / {job.model}", "status", job.status)
    table = Table(title="estimate and actual", title_justify="left")
    for column in ("", "requests", "input", "cached", "output", "batch price", "standard"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(*_money_row("estimate at submit", report.estimate, estimate=True))
    if report.retry_estimate.requests:
        table.add_row(*_money_row("estimate of retries", report.retry_estimate, estimate=True))
    table.add_row(*_money_row("actual (billed)", report.actual), style="bold")
    chains = Table(title="retry chains (one per shard)", title_justify="left")
    for column in ("batch", "attempt", "billed", "input", "cached", "output", "cost", "standard"):
        chains.add_column(column, justify="left" if column == "batch" else "right")
    for chain in report.chains:
        for row in chain.rows:
            label = row.batch_id if row.parent_id is None else f"└ {row.batch_id}"
            chains.add_row(
                label,
                str(row.attempt),
                f"{row.billed_requests:,}",
                f"{row.input_tokens:,}",
                f"{row.cached_input_tokens:,}",
                f"{row.output_tokens:,}",
                usd(row.cost_usd),
                usd(row.list_cost_usd),
            )
        if len(chain.rows) > 1:
            t = chain.total.tokens
            chains.add_row(
                f"shard {chain.shard} total",
                "",
                f"{chain.total.requests:,}",
                f"{t['input_tokens']:,}",
                f"{t['cached_input_tokens']:,}",
                f"{t['output_tokens']:,}",
                usd(chain.total.cost_usd),
                usd(chain.total.list_cost_usd),
                style="bold",
            )
    lines = [
        f"saving against standard prices: [bold green]{saving(report.actual)}[/]",
        _versus(report),
        f"estimate tokens counted by {report.tokenizer}",
    ]
    if report.uncapped:
        lines.append(
            f"[yellow]{report.uncapped} request(s) set no max_tokens; the estimate assumed"
            " 4,096 output tokens each[/]"
        )
    if report.pending_batches:
        lines.append(f"{report.pending_batches} batch(es) not ingested yet: actual is partial")
    if report.price_source:
        lines.append(f"[dim]prices: {report.price_source}[/]")
    parts: list[Any] = [head, table]
    if report.chains:
        parts.append(chains)
    parts.extend(Text.from_markup(line) for line in lines if line)
    return Group(*parts)


def _versus(report: JobCost) -> str:
    estimate = report.estimate.cost_usd
    actual = report.actual.cost_usd
    if estimate is None or actual is None or not estimate:
        return ""
    return f"actual is {actual / estimate:.0%} of the estimate (which is an upper bound)"


def spend_line(spend: PeriodSpend) -> str:
    budget = spend.budget
    period = budget.period if budget else "month"
    line = (
        f"this {period} (since {stamp(spend.since)} UTC): spent {usd(spend.spent_usd)},"
        f" {usd(spend.committed_usd)} more estimated for batches still running"
    )
    if budget is not None:
        left = budget.limit_usd - spend.spent_usd - spend.committed_usd
        line += f"; global budget {usd(budget.limit_usd)}, {usd(left)} left"
    return line


def jobs_cost_table(reports: list[JobCost]) -> Table:
    table = Table(title="cost of recent jobs", title_justify="left")
    for column in ("job", "model", "status", "estimate", "actual", "standard", "saving"):
        table.add_column(column, justify="right" if column in ("estimate", "actual") else "left")
    for r in reports:
        table.add_row(
            r.job.id,
            r.job.model,
            r.job.status,
            usd(r.estimate.cost_usd),
            usd(r.actual.cost_usd),
            usd(r.actual.list_cost_usd),
            saving(r.actual),
        )
    return table


@app.command()
def cost(
    job: Annotated[
        str | None, typer.Argument(help="Job id or key; none lists recent jobs.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many recent jobs to list.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Estimate against actual cost, and the saving against standard prices."""

    async def go() -> tuple[list[JobCost], PeriodSpend]:
        async with open_runtime() as rt:
            store = rt.kiln.store
            refs = [job] if job is not None else [j.id for j in await store.jobs.list(limit=limit)]
            reports = [await job_cost(store, ref) for ref in refs]
            return reports, await period_spend(store, rt.clock, GlobalBudget.from_env())

    reports, spend = run_command(go)
    if as_json:
        payload: Any = reports[0].to_json() if job is not None else [r.to_json() for r in reports]
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if job is not None:
        console.print(cost_view(reports[0]))
    else:
        console.print(jobs_cost_table(reports))
        console.print(spend_line(spend))


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
    if event.kind in ("batch.ingested", "batch.done") and data:
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
        async with open_runtime() as rt:
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
