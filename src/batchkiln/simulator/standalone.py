"""Running the simulator standalone over HTTP (the core of `kiln simulator`).

    serve(host="127.0.0.1", port=8089, speed=3600.0, faults_spec="retryable=0.05,seed=7")

prints the environment to point the SDKs at it, then serves until interrupted. Time runs
`speed` times faster than real time (3600: a vendor hour per second, so 24 h pass in 24 s).
Webhooks are delivered by a background loop while the server runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from batchkiln.clock import ScaledClock
from batchkiln.simulator.app import ConnectionCut, Simulator
from batchkiln.simulator.faults import parse_faults


class _QuietCuts(logging.Filter):
    """Keep uvicorn from logging a traceback for every deliberately cut connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionCut))


def quiet_cuts() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietCuts) for f in logger.filters):
        logger.addFilter(_QuietCuts())


def banner(sim: Simulator) -> str:
    """The lines to paste into a shell to use this simulator."""
    return "\n".join(
        [
            f"OPENAI_BASE_URL={sim.openai_base_url}",
            f"ANTHROPIC_BASE_URL={sim.anthropic_base_url}",
            f"GOOGLE_GEMINI_BASE_URL={sim.gemini_base_url}",
            f"OPENAI_WEBHOOK_SECRET={sim.webhook_secret}",
            "OPENAI_API_KEY=sim ANTHROPIC_API_KEY=sim GEMINI_API_KEY=sim  # any key is accepted",
            f"# admin API: {sim.base_url}/_sim/counters (faults, clock, webhooks under /_sim/)",
        ]
    )


def build_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 8089,
    speed: float = 1.0,
    faults_spec: str = "",
    seed: int = 0,
    webhook_urls: Sequence[str] = (),
    webhook_secret: str | None = None,
    public_url: str | None = None,
) -> Simulator:
    """A simulator on a scaled clock, addressed as http://host:port (or `public_url`)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return Simulator(
        clock=ScaledClock(speed),
        seed=seed,
        faults=parse_faults(faults_spec),
        base_url=public_url or f"http://{shown}:{port}",
        webhook_urls=webhook_urls,
        webhook_secret=webhook_secret,
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 8089,
    speed: float = 1.0,
    faults_spec: str = "",
    *,
    seed: int = 0,
    webhook_urls: Sequence[str] = (),
    webhook_secret: str | None = None,
    public_url: str | None = None,
    log_level: str = "warning",
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the simulator until interrupted (blocking). Raises ValueError for a bad
    `faults_spec` before anything starts."""
    sim = build_simulator(
        host=host,
        port=port,
        speed=speed,
        faults_spec=faults_spec,
        seed=seed,
        webhook_urls=webhook_urls,
        webhook_secret=webhook_secret,
        public_url=public_url,
    )
    echo(banner(sim))
    echo(f"# virtual time runs {speed:g}x real time; faults: {faults_spec or 'none'}")
    quiet_cuts()
    uvicorn.run(sim.app, host=host, port=port, log_level=log_level, lifespan="on")


@contextmanager
def serve_app_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    *,
    on_bound: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Serve any ASGI app with uvicorn from a background thread on a real socket (port 0
    picks a free one) and yield its base URL; `on_bound` sees the URL before the server
    starts. For loopback tests and benchmarks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}"
    if on_bound is not None:
        on_bound(url)
    quiet_cuts()
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True, name="kiln-asgi"
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server failed to start")
            threading.Event().wait(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serve_in_thread(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> Iterator[str]:
    """Serve `sim` from a background thread (webhooks delivered by its background loop);
    yields the base URL, which is also set as `sim.base_url` so `results_url` points back."""

    def bound(url: str) -> None:
        sim.base_url = url

    with serve_app_in_thread(sim.app, host, port, log_level, on_bound=bound) as url:
        yield url
