"""`kiln serve`: the HTTP API, the webhook receivers, the dashboard and a worker in
one process, on one App (SQLite by default, PostgreSQL via KILN_DATABASE_URL)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from batchkiln.app import DEMO_SPEED
from batchkiln.cli.app import app, console, err, fail, open_app, run_command
from batchkiln.clock import ScaledClock, SystemClock
from batchkiln.errors import ConfigError
from batchkiln.settings import mask_url


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless a token is set).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8080,
    simulator: Annotated[
        bool,
        typer.Option(
            "--simulator",
            help="Vendors are the built-in simulator (in this process, no keys), on virtual"
            " time; for demos and the dashboard's browser tests.",
        ),
    ] = False,
    speed: Annotated[
        float, typer.Option(help="With --simulator: vendor time runs N x real time.")
    ] = DEMO_SPEED,
    batch_size: Annotated[int, typer.Option(help="Batches the worker claims per round.")] = 10,
    idle_cap: Annotated[float, typer.Option(help="Longest idle sleep of the worker, s.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    worker: Annotated[
        bool, typer.Option(help="Run the worker loop here (--no-worker: API only).")
    ] = True,
) -> None:
    """Serve the jobs API (Idempotency-Key semantics), the vendor webhook receivers,
    signed webhooks out, /metrics and the dashboard, and run a worker, until SIGTERM."""
    from batchkiln.service.runner import run_service

    def ready(url: str) -> None:
        # one line, flushed: scripts and tests read the bound URL from it
        err.print(f"kiln serve listening on {url}", highlight=False, soft_wrap=True)
        sys.stderr.flush()

    async def go() -> int:
        kwargs = {"clock": ScaledClock(speed)} if simulator else {}
        async with open_app(simulated=simulator, **kwargs) as rt:
            err.print(
                f"store {mask_url(rt.settings.database_url)}"
                + (f"; vendors: simulator at {speed:g}x" if simulator else ""),
                highlight=False,
                soft_wrap=True,
            )
            return await run_service(
                rt,
                host=host,
                port=port,
                # idempotency records and webhook retries run on wall time even when
                # the vendors run on the simulator's virtual clock
                clock=SystemClock(),
                batch_size=batch_size,
                idle_cap=idle_cap,
                log_level=log_level,
                on_ready=ready,
                run_worker=worker,
            )

    try:
        steps = run_command(go)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    console.print(f"kiln serve stopped after {steps} worker steps")
