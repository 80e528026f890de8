"""`kiln serve` in one process: the API (with the vendor webhook receivers and the
dashboard), the worker loop of `kiln worker`, the webhook sender and the reaper,
all on one App.

SIGTERM or Ctrl-C stops the worker after the step under way, then the sender
and the server; a request in flight is answered first (uvicorn's graceful exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from batchkiln.app import App
from batchkiln.clock import Clock
from batchkiln.engine.worker import Worker
from batchkiln.service.api import create_api
from batchkiln.service.auth import check_bind
from batchkiln.service.outbox import Sender
from batchkiln.service.serve import serving

REAP_EVERY_SECONDS = 600.0


async def reaper(app: App, clock: Clock, stop: asyncio.Event) -> None:
    """Delete idempotency records and finished deliveries past their retention."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a failed round is retried next time
            await app.store.api_keys.reap(now=clock.now())
            await app.store.outbox.reap(now=clock.now())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REAP_EVERY_SECONDS)


async def _until_signal() -> int:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    return 0


async def run_service(
    app: App,
    *,
    host: str,
    port: int,
    clock: Clock,
    batch_size: int = 10,
    idle_cap: float = 30.0,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
    run_worker: bool = True,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the number of worker steps. Without
    `run_worker` the process only serves (separate `kiln worker`s do the steps)."""
    wake_sender: list[Callable[[], None]] = []

    def stepped(_count: int) -> None:  # a step may have queued a delivery
        for wake in wake_sender:
            wake()

    worker = Worker(app.kiln, batch_size=batch_size, idle_cap=idle_cap, on_step=stepped)
    api = create_api(app, clock=clock, wake=worker.wake)
    svc = api.state.service
    check_bind(host, svc.tokens)
    sender = Sender(
        app.store,
        clock=clock,
        worker=app.worker,
        default_secret=svc.default_secret,
        rules=svc.rules,
        on_result=svc.metrics.delivery,
    )
    wake_sender.append(sender.wake)
    stop = asyncio.Event()
    if run_worker:
        worker.install_signal_handlers()
    async with serving(api, host=host, port=port, log_level=log_level) as url:
        if on_ready is not None:
            on_ready(url)
        tasks = [
            asyncio.create_task(sender.run()),
            asyncio.create_task(reaper(app, clock, stop)),
        ]
        try:
            steps = await worker.run() if run_worker else await _until_signal()
        finally:
            stop.set()
            sender.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sender.aclose()
    return steps
