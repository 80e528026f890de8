"""Commands for running batchkiln as a service: the worker, cancel, and the
standalone simulator."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Annotated

import typer

from batchkiln.cli.app import app, console, err, fail, open_app, run_command
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


@app.command()
def worker(
    batch_size: Annotated[int, typer.Option(help="Batches claimed per round.")] = 10,
    idle_cap: Annotated[float, typer.Option(help="Longest idle sleep, seconds.")] = 30.0,
    mode: Annotated[
        str | None,
        typer.Option(
            help="Completion tracking: poll | webhook | hybrid (default: hybrid when"
            " OPENAI_WEBHOOK_SECRET or KILN_WEBHOOK_SECRETS is set, else poll)."
        ),
    ] = None,
    webhook_port: Annotated[
        int | None,
        typer.Option(help="Also serve the webhook receiver on this port, in this process."),
    ] = None,
    webhook_host: Annotated[str, typer.Option(help="Address the receiver binds.")] = "127.0.0.1",
    speed: Annotated[
        float | None, typer.Option(hidden=True, help="Virtual time at N x real (simulator).")
    ] = None,
    epoch: Annotated[
        float | None, typer.Option(hidden=True, help="Unix time the virtual clock runs from.")
    ] = None,
) -> None:
    """Claim due batches and run their submit, refresh and download steps until stopped.

    SIGTERM (or Ctrl-C) lets the step under way finish, then exits. With
    --webhook-port, signed OpenAI batch webhooks POSTed to /webhooks/openai mark
    their batch due (its state is then fetched from the vendor)."""
    try:
        tracking = TrackingMode(mode) if mode else None
    except ValueError:
        raise fail(f"--mode must be one of {', '.join(m.value for m in TrackingMode)}", 2) from None
    secrets = Settings.load().all_webhook_secrets
    if webhook_port is not None and not secrets:
        raise fail("--webhook-port needs OPENAI_WEBHOOK_SECRET (or KILN_WEBHOOK_SECRETS)", 2)
    clock = virtual_clock(speed, epoch) if speed else None

    async def go() -> int:
        async with open_app(clock=clock, tracking=tracking) as rt, AsyncExitStack() as stack:
            kiln, policy = rt.kiln, rt.tracking
            loop = Worker(kiln, batch_size=batch_size, idle_cap=idle_cap)
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
                f"worker {kiln.worker} started ({policy.mode.value} tracking);"
                " SIGTERM finishes the current step"
            )
            return await loop.run()

    steps = run_command(go)
    console.print(f"worker stopped after {steps} steps")


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
