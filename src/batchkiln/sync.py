"""A small synchronous facade for scripts and notebooks.

    from batchkiln import run_job
    status = run_job("requests.jsonl", provider="openai", model="gpt-4o-mini")

Each call builds an App from the settings (the environment), runs the async engine
to completion in its own event loop and closes the App, so it cannot be used from
inside a running loop (use `App` there).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from batchkiln.app import SIMULATED, App
from batchkiln.engine.kiln import JobStatus
from batchkiln.engine.policy import JobOptions
from batchkiln.export import ExportFormat, iter_results
from batchkiln.settings import Settings


def _app(simulated: bool, database_url: str | None) -> AbstractAsyncContextManager[App]:
    settings = Settings.load(**({"database_url": database_url} if database_url else {}))
    return App.simulated(settings) if simulated else App.open(settings)


def run_job(
    path: str | Path,
    *,
    provider: str,
    model: str | None = None,
    key: str | None = None,
    options: JobOptions | None = None,
    database_url: str | None = None,
) -> JobStatus:
    """Submit a request file and drive it until done; the same key never pays twice."""

    async def go() -> JobStatus:
        async with _app(provider in SIMULATED, database_url) as app:
            submitted = await app.kiln.submit(
                path, provider=provider, model=model, key=key, options=options
            )
            return await app.kiln.run_until_done(submitted.job.id)

    return asyncio.run(go())


def job_results(
    job: str, *, fmt: ExportFormat = ExportFormat.FLAT, database_url: str | None = None
) -> list[dict[str, Any]]:
    """Every request's outcome of a Job, in input order (loaded into a list)."""

    async def go() -> list[dict[str, Any]]:
        async with _app(False, database_url) as app:
            return [r async for r in iter_results(app.store, job, fmt)]

    return asyncio.run(go())
