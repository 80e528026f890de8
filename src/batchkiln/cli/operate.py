"""Commands for running batchkiln as a service: the worker, the worker list,
cancel, and the standalone simulator."""

from __future__ import annotations

import errno
import socket
import time
from contextlib import AsyncExitStack
from typing import Annotated

import typer

from batchkiln.cli.app import (
    JsonOpt,
    _print_json,
    app,
    console,
    err,
    fail,
    open_app,
    run_command,
)
from batchkiln.cli.options import above_zero, at_least, choice, port
from batchkiln.clock import ScaledClock
from batchkiln.engine.cancel import CancelReport
from batchkiln.engine.schedule import TrackingMode
from batchkiln.engine.worker import Worker
from batchkiln.settings import Settings


def virtual_clock(speed: float, epoch: float | None) -> ScaledClock:
    """Time running `speed` times real time since `epoch` (default: now), so that
    processes started at different moments with the same epoch agree on the time."""
    now = time.time()
    anchor = now if epoch is None else epoch
    return ScaledClock(speed, start=anchor + (now - anchor) * speed)


def _check_port_free(host: str, number: int) -> None:
    """--webhook-port already taken (or not bindable): one line now, not uvicorn's
    traceback and exit 3 once the store is open. The bind is released at once; the
    receiver binds it again (SO_REUSEADDR, as uvicorn does)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, number))
    except OSError as exc:
        reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise fail(f"--webhook-port {number}: cannot listen on {host}:{number}: {reason}") from None


@app.command()
def worker(
    batch_size: Annotated[
        int,
        typer.Option(
            callback=at_least(1, what="a whole number of batches"),
            help="Batches claimed per round.",
        ),
    ] = 10,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Steps run at once (default KILN_WORKER_CONCURRENCY, 8)."),
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="On SIGTERM, seconds steps in flight may take before they are released"
            " (default KILN_WORKER_GRACE_SECONDS, 30).",
        ),
    ] = None,
    idle_cap: Annotated[
        float,
        typer.Option(
            callback=above_zero("a number of seconds"), help="Longest idle sleep, seconds."
        ),
    ] = 30.0,
    mode: Annotated[
        str | None,
        typer.Option(
            callback=choice(*(m.value for m in TrackingMode)),
            help="Completion tracking: poll | webhook | hybrid (default: hybrid when"
            " OPENAI_WEBHOOK_SECRET or KILN_WEBHOOK_SECRETS is set, else poll).",
        ),
    ] = None,
    webhook_port: Annotated[
        int | None,
        typer.Option(
            callback=port, help="Also serve the webhook receiver on this port, in this process."
        ),
    ] = None,
    webhook_host: Annotated[str, typer.Option(help="Address the receiver binds.")] = "127.0.0.1",
    speed: Annotated[
        float | None,
        typer.Option(
            hidden=True,
            callback=above_zero("a speed"),
            help="Virtual time at N x real (simulator).",
        ),
    ] = None,
    epoch: Annotated[
        float | None, typer.Option(hidden=True, help="Unix time the virtual clock runs from.")
    ] = None,
) -> None:
    """Claim due batches and run their submit, refresh and download steps until stopped.

    Runs up to --concurrency steps at once. SIGTERM (or Ctrl-C) stops claiming, lets
    the steps under way finish within --grace seconds (then releases them), and exits 0.
    On PostgreSQL any number of workers may share the database (leases with a
    heartbeat, woken by LISTEN/NOTIFY); on SQLite one worker process at a time. With
    --webhook-port, signed OpenAI batch webhooks POSTed to /webhooks/openai mark
    their batch due (its state is then fetched from the vendor)."""
    tracking = TrackingMode(mode) if mode else None
    secrets = Settings.load().all_webhook_secrets
    if webhook_port is not None and not secrets:
        raise fail("--webhook-port needs OPENAI_WEBHOOK_SECRET (or KILN_WEBHOOK_SECRETS)")
    if webhook_port:
        _check_port_free(webhook_host, webhook_port)
    clock = virtual_clock(speed, epoch) if speed else None

    async def go() -> int:
        async with open_app(clock=clock, tracking=tracking) as rt, AsyncExitStack() as stack:
            kiln, policy = rt.kiln, rt.tracking
            loop = Worker.for_app(
                rt,
                concurrency=concurrency,
                batch_size=batch_size,
                idle_cap=idle_cap,
                grace_seconds=grace,
            )
            loop.install_signal_handlers()
            if webhook_port is not None:
                from batchkiln.service.serve import serving
                from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app

                receiver = webhook_app(
                    kiln.store,
                    secrets,
                    on_due=loop.wake,
                    max_body_bytes=rt.settings.webhook_max_body_bytes,
                )
                url = await stack.enter_async_context(
                    serving(receiver, host=webhook_host, port=webhook_port)
                )
                err.print(f"webhook receiver at {url}{DEFAULT_PATH}")
            elif policy.mode != TrackingMode.POLL:
                err.print(
                    f"[dim]{policy.mode.value} mode: webhooks must reach a receiver on this"
                    " database (kiln worker --webhook-port PORT)[/]"
                )
            err.print(
                f"worker {kiln.worker} started ({policy.mode.value} tracking, concurrency"
                f" {loop.concurrency}); SIGTERM finishes the steps under way"
            )
            return await loop.run()

    steps = run_command(go)
    console.print(f"worker stopped after {steps} steps")


@app.command()
def workers(as_json: JsonOpt = False) -> None:
    """List the registered workers: host, pid, version, heartbeat and the batches they
    are stepping. A worker whose heartbeat is older than its lease is shown as lost
    (its leases run out by themselves; another worker resumes its batches)."""
    from rich.table import Table

    async def go() -> tuple[float, list[dict[str, object]]]:
        async with open_app() as rt:
            now = rt.clock.now()
            return now, [w.as_json(now) for w in await rt.store.workers.list()]

    _, rows = run_command(go)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print("no workers registered")
        return
    table = Table(title="workers", title_justify="left")
    for column in ("id", "state", "host", "pid", "version", "heartbeat", "steps"):
        table.add_column(column)
    for row in rows:
        state = str(row["state"])
        shown = f"[red]{state}[/]" if state == "lost" else state
        steps = row["steps"]
        table.add_row(
            str(row["id"]),
            shown,
            str(row["host"]),
            str(row["pid"]),
            str(row["version"]),
            f"{row['heartbeat_age_seconds']} s ago",
            str(len(steps)) if isinstance(steps, list) else "0",
        )
    console.print(table)


@app.command()
def cancel(job: Annotated[str, typer.Argument(help="Job id or key.")]) -> None:
    """Cancel a Job: every batch gets the cancel (recorded as intent, applied at the
    vendor where safe); finished results are kept and ingested. One line per batch."""

    async def go() -> list[CancelReport]:
        async with open_app() as rt:
            return await rt.kiln.cancel(job)

    reports = run_command(go)
    for report in reports:
        console.print(f"{report.batch_id} ({report.state}): {report.action}: {report.detail}")
    if not reports:
        console.print("the job has no batches")
