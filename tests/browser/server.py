"""A served batchkiln for the browser tests: the service's FastAPI app (with the
dashboard mounted) on an App wired to the built-in simulator, under uvicorn on
127.0.0.1 port 0, in a thread with its own event loop, on a scaled clock so a
scenario runs its vendor minutes in a second or two of real time.

`LiveServer.call(fn)` runs `fn(app)` (a coroutine function) on the server's loop,
for tests that need to arrange something the page cannot (a job with a
`<script>` in its custom id and model name).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from batchkiln.app import App, fresh_sqlite_url
from batchkiln.clock import ScaledClock, SystemClock
from batchkiln.engine.worker import Worker
from batchkiln.service.api import create_api
from batchkiln.service.serve import serving
from batchkiln.settings import Settings

T = TypeVar("T")
SPEED = 120.0  # vendor seconds per real second: a scenario-2 batch takes 2-3 s


class LiveServer:
    def __init__(self, work: Path, *, settings: Settings | None = None) -> None:
        self.work = work
        self.settings = settings or Settings.load()
        self.url = ""
        self.app: App | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kiln-live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the server did not start within 60 s")
        if self._error is not None:
            raise RuntimeError(f"the server failed to start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def call(self, fn: Callable[[App], Awaitable[T]], timeout: float = 30) -> T:
        assert self._loop is not None and self.app is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(fn(self.app), self._loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        database_url = fresh_sqlite_url(self.work / "served.db")
        async with App.simulated(
            self.settings, clock=ScaledClock(SPEED), database_url=database_url, seed=15
        ) as app:
            self.app = app
            # what `kiln serve --simulator` runs (service.runner), minus the signal
            # handlers a thread cannot install: the API with the dashboard, and a worker
            worker = Worker(app.kiln, batch_size=50, idle_cap=30.0)
            api = create_api(app, clock=SystemClock(), wake=worker.wake)
            running = asyncio.create_task(worker.run())
            try:
                async with serving(api, host="127.0.0.1", port=0) as url:
                    self.url = url
                    self._ready.set()
                    await self._stop.wait()
            finally:
                worker.stop()
                await running
