"""`kiln simulator`: the built-in vendor as a standalone server on loopback."""

from __future__ import annotations

from typing import Annotated

import typer

from batchkiln.cli.app import app, fail
from batchkiln.cli.options import above_zero
from batchkiln.cli.options import port as valid_port
from batchkiln.simulator import FAULTS_FORMAT, serve


@app.command()
def simulator(
    port: Annotated[int, typer.Option(callback=valid_port, help="Port to listen on.")] = 8089,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    speed: Annotated[
        float,
        typer.Option(callback=above_zero("a speed"), help="Virtual seconds per real second."),
    ] = 1.0,
    faults: Annotated[str, typer.Option(help="Faults to inject, e.g. retryable=0.05,seed=7.")] = "",
    seed: Annotated[int, typer.Option(help="Seed for reproducible faults.")] = 0,
    webhook_url: Annotated[
        list[str] | None, typer.Option(help="Where to POST signed OpenAI batch webhooks.")
    ] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="whsec_... secret to sign with (default: a new one).")
    ] = None,
) -> None:
    """Serve a simulated OpenAI + Anthropic batch vendor, printing the base URLs and
    the webhook secret to use."""
    try:
        serve(
            host,
            port,
            speed,
            faults,
            seed=seed,
            webhook_urls=webhook_url or (),
            webhook_secret=webhook_secret,
        )
    except ValueError as exc:
        raise fail(f"{exc}\n{FAULTS_FORMAT}") from None
