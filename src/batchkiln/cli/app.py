"""`kiln`: thin edges over the engine. Each command parses, calls the Kiln, prints."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from importlib.metadata import version as _version
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.live import Live

from batchkiln.app import SIMULATED, App
from batchkiln.cli import views
from batchkiln.costs import FileEstimator
from batchkiln.costs.report import submitted_estimate
from batchkiln.engine.kiln import JobStatus
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.errors import BudgetExceeded, ConfigError
from batchkiln.export import ExportFormat, write_results, write_stream
from batchkiln.intake import InputError, InvalidKey, KeyConflict, validate_file
from batchkiln.providers import wire_format
from batchkiln.settings import Settings
from batchkiln.store import NotFound

app = typer.Typer(
    name="kiln",
    help="Run LLM batch jobs through their whole lifecycle without losing a request"
    " or paying twice.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)

ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider",
        "-p",
        help="openai | anthropic | gemini | simulator (OpenAI format, in-process, no keys)"
        " | simulator-anthropic | simulator-gemini",
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model for every request.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")]


def _wire(provider: str) -> str:
    try:
        return wire_format(provider)
    except ValueError as exc:
        raise fail(f"--provider: {exc}", 2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error verbatim (no wrapping, no markup: it names files and lines)."""
    err.print("[red]error:[/]", end=" ")
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def open_app(*, simulated: bool = False, **kwargs: Any) -> AbstractAsyncContextManager[App]:
    """The command's App: settings read once, here; the simulator in-process if asked."""
    settings = Settings.load()
    if simulated:
        return App.simulated(settings, **kwargs)
    return App.open(settings, **kwargs)


def _print_json(payload: Any) -> None:
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def version() -> None:
    """Print the batchkiln version."""
    console.print(f"batchkiln {_version('batchkiln')}")


@app.command()
def config(as_json: JsonOpt = False) -> None:
    """Print the effective settings (every KILN_* and SDK variable), secrets masked."""
    try:
        settings = Settings.load()
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    rows = list(settings.describe())
    if as_json:
        _print_json({r.variable: r.value for r in rows})
        return
    for r in rows:
        mark = "" if r.is_default else "  (set)"
        console.print(f"{r.variable} = {r.value}{mark}", markup=False, highlight=False)
        console.print(f"    {r.description}", style="dim", markup=False, highlight=False)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Request file (JSONL).")],
    provider: ProviderOpt = "openai",
    model: ModelOpt = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI endpoint for plain lines.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a request file and print the plan (requests, shards, bytes); sends nothing."""
    estimator = FileEstimator(_wire(provider))
    try:
        summary = validate_file(
            file,
            provider=_wire(provider),  # type: ignore[arg-type]
            model=model,
            endpoint=endpoint,
            on_request=estimator,
        )
    except InputError as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror or exc}", 2) from None
    estimate, _ = estimator.finish()
    if as_json:
        _print_json(
            {
                "file": str(file),
                "provider": provider,
                "model": summary.model,
                "endpoint": summary.endpoint,
                "requests": summary.count,
                "wire_bytes": summary.wire_bytes,
                "fingerprint": summary.fingerprint,
                "shards": [
                    {"index": s.index, "requests": s.count, "wire_bytes": s.wire_bytes}
                    for s in summary.shards
                ],
                "estimate": estimate.to_json(),
            }
        )
        return
    console.print(
        f"[green]valid[/] {file}: {summary.count} requests for {summary.model}"
        f" ({summary.endpoint}), {summary.wire_bytes:,} bytes on the wire"
    )
    for s in summary.shards:
        console.print(
            f"  shard {s.index}: requests {s.start}..{s.stop - 1}"
            f" ({s.count}, {s.wire_bytes:,} bytes)"
        )
    for line in estimate.lines():
        console.print(line, highlight=False)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="Request file (JSONL).")],
    provider: ProviderOpt = "openai",
    model: ModelOpt = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key (default: content fingerprint).")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI endpoint for plain lines.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Drive the job here until it is done.")
    ] = False,
    max_attempts: Annotated[int, typer.Option(help="Attempts per request, retries included.")] = 3,
    auto_retry: Annotated[
        bool, typer.Option(help="Retry retryable failures as child batches.")
    ] = True,
    budget: Annotated[
        float | None,
        typer.Option(help="Most the job may cost in USD at batch prices, retries included."),
    ] = None,
    delete_vendor_files: Annotated[
        bool, typer.Option(help="Delete the vendor's input and result files after ingest.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a request file as a Job. The same key (or content) never submits twice.
    A job whose estimate is over --budget or KILN_BUDGET_USD is refused (exit 3)."""
    simulated = provider in SIMULATED
    if simulated and not wait:
        err.print("[dim]the simulator lives in this process: --wait is implied[/]")
        wait = True
    options = JobOptions(
        retry=RetryPolicy(max_attempts=max_attempts, auto_retry=auto_retry),
        budget_usd=budget,
        delete_vendor_files=delete_vendor_files,
    )

    async def go() -> JobStatus:
        async with open_app(simulated=simulated) as rt:
            try:
                submitted = await rt.kiln.submit(
                    file,
                    provider=provider,
                    model=model,
                    endpoint=endpoint,
                    key=key,
                    options=options,
                )
            except BudgetExceeded as exc:
                raise fail(f"{exc}; nothing was sent", 3) from None
            if not as_json:
                verb = "created" if submitted.created else "found existing"
                err.print(f"{verb} job [bold]{submitted.job.id}[/] (key {submitted.job.key})")
                estimate = await submitted_estimate(rt.kiln.store, submitted.job, _wire(provider))
                for line in estimate.lines() if estimate else []:
                    err.print(line, highlight=False)
            if not wait:
                await rt.kiln.run_once(job_id=submitted.job.id)  # submit now; a worker tracks it
                return await rt.kiln.status(submitted.job.id)
            return await drive(rt, submitted.job.id, quiet=as_json)

    status = run_command(go)
    if as_json:
        _print_json(views.status_json(status))
    else:
        console.print(views.status_view(status, status.job.updated_at))
    failed = status.counts.get("failed", 0) + status.counts.get("exhausted", 0)
    if status.state == "done" and failed:
        raise typer.Exit(1)


async def drive(rt: App, job_id: str, *, quiet: bool = False) -> JobStatus:
    if quiet:
        return await rt.kiln.run_until_done(job_id)
    with Live(console=err, refresh_per_second=8, transient=False) as live:
        return await rt.kiln.run_until_done(
            job_id, on_progress=lambda s: live.update(views.status_view(s, rt.clock.now()))
        )


@app.command()
def status(
    job: Annotated[
        str | None, typer.Argument(help="Job id or key; none lists recent jobs.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a Job and its batches, or list recent Jobs."""

    async def go() -> Any:
        async with open_app() as rt:
            if job is None:
                return [j.__dict__ for j in await rt.kiln.store.jobs.list()]
            found = await rt.kiln.status(job)
            events = await rt.kiln.store.audit.for_job(found.job.id)
            stalled = [
                {"batch_id": e.batch_id, "at": e.at, "reason": e.reason}
                for e in events
                if e.kind == "batch.stalled"
            ]
            return found, stalled

    result = run_command(go)
    if isinstance(result, list):
        if as_json:
            _print_json(result)
        else:
            console.print(views.jobs_table(result))
        return
    status_, stalled = result
    if as_json:
        _print_json({**views.status_json(status_), "stalled": stalled})
    else:
        console.print(views.status_view(status_, status_.job.updated_at))
        for note in stalled:  # Gemini batches sitting PENDING past KILN_STALL_AFTER_SECONDS
            console.print(f"[yellow]stalled[/] {note['batch_id']}: {note['reason']}")


@app.command()
def watch(job: Annotated[str, typer.Argument(help="Job id or key.")]) -> None:
    """A live view of a Job, driving its due batches here until it is done."""

    async def go() -> JobStatus:
        async with open_app() as rt:
            return await drive(rt, job)

    run_command(go)


@app.command()
def results(
    job: Annotated[str, typer.Argument(help="Job id or key.")],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="JSONL file to write ('-': stdout). A file is replaced atomically; a"
            " symlink is written through to its target; a FIFO or device is written to.",
        ),
    ] = Path("results.jsonl"),
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="flat or vendor.")
    ] = ExportFormat.FLAT,
) -> None:
    """Write one line per request, in input order, under your custom_ids."""
    to_stdout = str(output) == "-"

    async def go() -> int:
        async with open_app() as rt:
            if to_stdout:
                job_id = (await rt.kiln.store.jobs.get(job)).id
                return await write_stream(rt.kiln.store, job_id, sys.stdout.buffer, fmt)
            return await write_results(rt.kiln.store, job, output, fmt)

    count = run_command(go)
    (err if to_stdout else console).print(
        f"wrote {count} results to {'stdout' if to_stdout else output}"
    )


class RetryClass(StrEnum):
    RETRYABLE = "retryable"
    ACCOUNT = "account"


@app.command()
def retry(
    job: Annotated[str, typer.Argument(help="Job id or key.")],
    wait: Annotated[bool, typer.Option("--wait", help="Drive the retry here until done.")] = False,
    classes: Annotated[
        list[RetryClass] | None,
        typer.Option(
            "--class",
            help="Failure class to resubmit (repeatable): retryable (default), or account"
            " (credit, quota or billing failures, held until you fix the account).",
        ),
    ] = None,
) -> None:
    """Retry a Job's waiting failures as child batches with new keys: retryable ones
    (for jobs whose automatic retry is off), or with --class account the requests held
    by an account failure, after a top-up. Running it twice starts nothing twice."""
    wanted = [c.value for c in classes or [RetryClass.RETRYABLE]]

    async def go() -> tuple[list[str], JobStatus]:
        async with open_app() as rt:
            created = await rt.kiln.retry(job, wanted)
            if wait and created:
                return created, await drive(rt, job)
            if created:
                await rt.kiln.run_once(job_id=(await rt.kiln.status(job)).job.id)
            return created, await rt.kiln.status(job)

    created, status = run_command(go)
    if created:
        console.print(f"started {len(created)} retry batch(es): {', '.join(created)}")
    else:
        console.print("nothing to retry (no failures waiting, or their retry already exists)")
    console.print(views.status_view(status, status.job.updated_at))


def run_command(factory: Any) -> Any:
    try:
        return asyncio.run(factory())
    except InputError as exc:
        raise fail(str(exc), 2) from None
    except (KeyConflict, InvalidKey, ConfigError) as exc:
        raise fail(str(exc), 2) from None
    except NotFound as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(str(exc), 2) from None
