"""`kiln cost`: what a Job cost against its estimate and against standard prices,
each retry chain, and the spend in the global budget's period."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from batchkiln.cli.app import JsonOpt, app, console, open_app, run_command
from batchkiln.cli.options import at_least
from batchkiln.cli.views import stamp, usd
from batchkiln.costs.report import JobCost, Money, PeriodSpend, job_cost, period_spend

JobArg = Annotated[str, typer.Argument(help="Job id or key.")]


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
    limit: Annotated[
        int,
        typer.Option(
            callback=at_least(1, what="a number of jobs"), help="How many recent jobs to list."
        ),
    ] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Estimate against actual cost, and the saving against standard prices."""

    async def go() -> tuple[list[JobCost], PeriodSpend]:
        async with open_app() as rt:
            store = rt.kiln.store
            refs = [job] if job is not None else [j.id for j in await store.jobs.list(limit=limit)]
            reports = [await job_cost(store, ref) for ref in refs]
            return reports, await period_spend(store, rt.clock, rt.budget.global_budget)

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
