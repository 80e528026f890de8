"""`kiln demo`: a real batch through the whole lifecycle, on the built-in simulator.

The requests go through the real OpenAI adapter and the official SDK to the
simulator in this process, on a clock running 2000x, so the vendor's minutes
pass in a blink. A few requests fail with a model timeout, so the run shows
partial -> retry child batch with a new key -> done.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from batchkiln.app import App, fresh_sqlite_url
from batchkiln.cli.app import app, console, drive, fail, run_command
from batchkiln.cli.options import at_least, choice
from batchkiln.cli.views import duration
from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import JobStatus
from batchkiln.export import write_results
from batchkiln.scenarios import SCENARIOS, Report, run_scenario
from batchkiln.settings import Settings
from batchkiln.simulator import Faults

DEMO_DIR = Path(".kiln")
_WORDS = (
    "the",
    "batch",
    "window",
    "closes",
    "at",
    "midnight",
    "while",
    "the",
    "queue",
    "drains",
    "slowly",
    "and",
    "every",
    "request",
    "carries",
    "a",
    "custom",
    "id",
    "that",
    "maps",
    "back",
    "to",
    "the",
    "ledger",
    "so",
    "nothing",
    "is",
    "lost",
    "when",
    "the",
    "network",
    "drops",
    "or",
    "a",
    "worker",
    "restarts",
    "halfway",
    "through",
    "the",
    "overnight",
    "summarisation",
    "run",
)


def write_demo_requests(path: Path, count: int, *, vendor: str, seed: int = 7) -> None:
    """A deterministic 'summarise this paragraph' job of `count` requests."""
    rng = random.Random(seed)
    with path.open("wb") as out:
        for i in range(count):
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 120)))
            messages = [{"role": "user", "content": f"Summarise in one sentence: {text}"}]
            if vendor == "anthropic":
                line = {
                    "custom_id": f"doc-{i:04d}",
                    "params": {"max_tokens": 200, "messages": messages},
                }
            elif vendor == "gemini":
                line = {
                    "key": f"doc-{i:04d}",
                    "request": {
                        "contents": [{"role": "user", "parts": [{"text": messages[0]["content"]}]}],
                        "generationConfig": {"maxOutputTokens": 200},
                    },
                }
            else:
                line = {
                    "custom_id": f"doc-{i:04d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"messages": messages, "max_tokens": 200},
                }
            out.write(orjson.dumps(line) + b"\n")


def _walked(events: list[tuple[str | None, str | None, str | None]], batch_id: str) -> str:
    states = [to for (bid, _frm, to) in events if bid == batch_id and to]
    return " -> ".join(dict.fromkeys(states)) if states else "-"


def print_report(report: Report) -> None:
    console.print(f"\n[bold]scenario {report.number}[/]: {report.title}")
    for label, walk in report.walked.items():
        console.print(f"  {label}:\n    {walk}", soft_wrap=True)
    console.print(f"  terminal state: [bold]{report.terminal}[/]")
    console.print(f"  action taken:   {report.action}")
    console.print(f"  final outcome:  {report.outcome}", soft_wrap=True)
    for check, held in report.checks.items():
        mark = "[green]ok[/]  " if held else "[red]FAIL[/]"
        console.print(f"    {mark} {check}")


async def _scenarios(numbers: list[int]) -> list[Report]:
    work = DEMO_DIR / "scenarios"
    work.mkdir(parents=True, exist_ok=True)
    return [await run_scenario(n, work, clock=FakeClock(time.time())) for n in numbers]


@app.command()
def demo(
    scenario: Annotated[
        int | None, typer.Option(help="Run only practice scenario N (1-6).", min=1, max=6)
    ] = None,
    scenarios: Annotated[
        bool, typer.Option(help="After the main batch, run the six practice scenarios.")
    ] = True,
    requests: Annotated[
        int,
        typer.Option(
            callback=at_least(1, what="a number of requests"),
            help="How many requests the demo job has.",
        ),
    ] = 300,
    vendor: Annotated[
        str,
        typer.Option(
            "--vendor",
            "--provider",
            callback=choice("openai", "anthropic", "gemini"),
            help="Wire format: openai, anthropic or gemini.",
        ),
    ] = "openai",
    failure_rate: Annotated[
        float,
        typer.Option(
            callback=at_least(0.0, high=1.0, what="a share"),
            help="Share of requests that time out.",
        ),
    ] = 0.04,
    seed: Annotated[int, typer.Option(help="Seed for the simulator's faults.")] = 7,
) -> None:
    """Run a real batch on the built-in simulator, from submit to done, then the six
    practice scenarios (each in virtual time, checking what must hold)."""
    DEMO_DIR.mkdir(exist_ok=True)
    if scenario is not None:
        _finish(run_command(lambda: _scenarios([scenario])))
        return
    source = DEMO_DIR / f"demo-requests-{vendor}.jsonl"
    results_path = DEMO_DIR / "demo-results.jsonl"
    db_path = DEMO_DIR / "demo.db"
    write_demo_requests(source, requests, vendor=vendor)
    vendor = {"simulator": "openai"}.get(vendor, vendor.removeprefix("simulator-"))
    if vendor not in ("openai", "anthropic", "gemini"):
        raise fail(f"--vendor {vendor!r}: use openai, anthropic or gemini")
    provider = {"anthropic": "simulator-anthropic", "gemini": "simulator-gemini"}.get(
        vendor, "simulator"
    )
    model = {"anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}.get(
        vendor, "gpt-4o-mini"
    )
    faults = Faults(seed=seed, retryable_rate=failure_rate)

    async def go() -> tuple[JobStatus, list[tuple[str | None, str | None, str | None]], float]:
        async with App.simulated(
            Settings.load(), faults=faults, seed=seed, database_url=fresh_sqlite_url(db_path)
        ) as rt:
            started = rt.vendor_clock.now()
            submitted = await rt.kiln.submit(
                source, provider=provider, model=model, key=f"demo-{vendor}"
            )
            status = await drive(rt, submitted.job.id)
            await write_results(rt.kiln.store, submitted.job.id, results_path)
            events = await rt.kiln.store.audit.for_job(submitted.job.id)
            walked = [(e.batch_id, e.from_state, e.to_state) for e in events]
            return status, walked, rt.vendor_clock.now() - started

    status, walked, vendor_seconds = run_command(go)
    console.print("\n[bold]what happened[/]")
    for b in status.batches:
        origin = f"retry of {b.parent_id}" if b.parent_id else f"shard {b.shard}"
        console.print(f"  {b.id} (attempt {b.attempt}, {origin}, {b.request_count} requests):")
        console.print(f"    {_walked(walked, b.id)}", soft_wrap=True)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(status.counts.items()))
    console.print(f"job [bold]{status.job.id}[/] is [bold]{status.state}[/]: {counts}")
    console.print(f"vendor time elapsed: {duration(vendor_seconds)} (simulated at 2000x)")
    console.print(f"results: {results_path} (one line per request, input order)")
    console.print(
        f"store:   {db_path} (KILN_DATABASE_URL=sqlite:///{db_path} kiln status {status.job.id})"
    )
    if scenarios:
        _finish(run_command(lambda: _scenarios(sorted(SCENARIOS))))


def _finish(reports: list[Report]) -> None:
    for report in reports:
        print_report(report)
    failed = [r.number for r in reports if not r.ok]
    if failed:
        console.print(f"\n[red]scenario(s) {failed} did not hold[/]")
        raise typer.Exit(1)
    console.print(f"\n{len(reports)} scenario(s) ran; every check held")
