"""A small synchronous facade for scripts and notebooks.

    from batchkiln import run_job
    status = run_job("requests.jsonl", provider="openai", model="gpt-4o-mini")

Each call runs the async engine to completion in its own event loop, so it
cannot be used from inside a running loop (use `Kiln` there).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from batchkiln.engine.export import ExportFormat, iter_results
from batchkiln.engine.kiln import JobStatus
from batchkiln.engine.policy import JobOptions


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
    from batchkiln.cli.runtime import SIMULATED, open_runtime

    async def go() -> JobStatus:
        async with open_runtime(simulated=provider in SIMULATED, database_url=database_url) as rt:
            submitted = await rt.kiln.submit(
                path, provider=provider, model=model, key=key, options=options
            )
            return await rt.kiln.run_until_done(submitted.job.id)

    return asyncio.run(go())


def job_results(
    job: str, *, fmt: ExportFormat = ExportFormat.FLAT, database_url: str | None = None
) -> list[dict[str, Any]]:
    """Every request's outcome of a Job, in input order (loaded into a list)."""
    from batchkiln.cli.runtime import open_runtime

    async def go() -> list[dict[str, Any]]:
        async with open_runtime(database_url=database_url) as rt:
            return [r async for r in iter_results(rt.kiln.store, job, fmt)]

    return asyncio.run(go())
