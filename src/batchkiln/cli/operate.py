"""Commands for running batchkiln as a service: the worker, cancel, and the
standalone simulator."""

from __future__ import annotations

from typing import Annotated

import typer

from batchkiln.cli.app import app, console, err, run_command
from batchkiln.cli.runtime import open_runtime
from batchkiln.engine.worker import Worker


@app.command()
def worker(
    batch_size: Annotated[int, typer.Option(help="Batches claimed per round.")] = 10,
    idle_cap: Annotated[float, typer.Option(help="Longest idle sleep, seconds.")] = 30.0,
) -> None:
    """Claim due batches and run their submit, refresh and download steps until stopped.

    SIGTERM (or Ctrl-C) lets the step under way finish, then exits."""

    async def go() -> int:
        async with open_runtime() as rt:
            loop = Worker(rt.kiln, batch_size=batch_size, idle_cap=idle_cap)
            loop.install_signal_handlers()
            err.print(f"worker {rt.kiln.worker} started; SIGTERM finishes the current step")
            return await loop.run()

    steps = run_command(go)
    console.print(f"worker stopped after {steps} steps")


@app.command()
def cancel(job: Annotated[str, typer.Argument(help="Job id or key.")]) -> None:
    """Ask the vendor to cancel every live batch of a Job (finished results are kept)."""

    async def go() -> list[str]:
        async with open_runtime() as rt:
            return await rt.kiln.cancel(job)

    ids = run_command(go)
    console.print(f"cancel requested for {len(ids)} batch(es): {', '.join(ids) or 'none live'}")
