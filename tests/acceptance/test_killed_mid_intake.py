"""A `kiln submit` killed (SIGKILL) while its request rows are being committed: no Job
shows, the same command again creates the whole Job once, and the dead draft's rows are
swept once it has been silent for STALE_AFTER. The killed process is a real `kiln
submit` in a subprocess, on a SQLite file, its vendor the simulator over loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from batchkiln.clock import FakeClock, ScaledClock
from batchkiln.simulator import Simulator
from batchkiln.simulator.standalone import serve_app_in_thread
from batchkiln.store import Store
from batchkiln.store.drafts import CHUNK
from batchkiln.store.tables import job_drafts, jobs, request_bodies, requests
from batchkiln.store.unpublished import STALE_AFTER

from .conftest import MODELS, write_requests

# the child dies as it hands its third chunk to the store: two chunks are committed
KILL_ON_THIRD_CHUNK = """
import os, signal
import batchkiln.store.drafts as drafts
real, calls = drafts.insert_together, []
async def killed_on_the_third(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    await real(*args, **kwargs)
drafts.insert_together = killed_on_the_third
"""
KILN = "import sys; from batchkiln.cli import app; sys.argv[0] = 'kiln'; app()"


def _kiln_submit(
    path: Path, db: Path, vendor: str, *, kill: bool
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KILN_DATABASE_URL": f"sqlite:///{db}",
        "OPENAI_BASE_URL": f"{vendor}/v1",
        "OPENAI_API_KEY": "test",
    }
    code = (KILL_ON_THIRD_CHUNK if kill else "") + KILN
    argv = ["submit", str(path), "--provider", "openai", "--model", MODELS["openai"]]
    return subprocess.run(
        [sys.executable, "-c", code, *argv, "--key", "k-killed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def _counts(store: Store) -> dict[str, int]:
    async with store.engine.connect() as conn:
        return {
            t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
            for t in (jobs, requests, request_bodies, job_drafts)
        }


async def _after_the_kill(db: Path) -> dict[str, int]:
    store = await Store.open(f"sqlite:///{db}")
    try:
        return await _counts(store)
    finally:
        await store.close()


def test_a_submit_killed_mid_intake_leaves_no_job_and_a_rerun_stores_it_once(
    tmp_path: Path,
) -> None:
    """SIGKILL after two committed chunks: no Job; the rerun creates it with every row
    once; the sweep, after STALE_AFTER, deletes exactly the dead draft's rows."""
    n = 3 * CHUNK + 5
    path = write_requests(tmp_path / "in.jsonl", n)
    db = tmp_path / "kiln.db"
    sim = Simulator(clock=ScaledClock(600), seed=5)
    with serve_app_in_thread(sim.app, on_bound=lambda url: setattr(sim, "base_url", url)) as url:
        killed = _kiln_submit(path, db, url, kill=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        left = asyncio.run(_after_the_kill(db))
        rerun = _kiln_submit(path, db, url, kill=False)
    assert left == {
        "jobs": 0,
        "requests": 2 * CHUNK,
        "request_bodies": 2 * CHUNK,
        "job_drafts": 1,
    }
    assert rerun.returncode == 0, rerun.stderr
    assert "created job" in rerun.stderr

    async def swept_later() -> tuple[list[str], dict[str, int], dict[str, int]]:
        clock = FakeClock(start=time.time() + STALE_AFTER + 60)
        store = await Store.open(f"sqlite:///{db}", clock=clock)
        try:
            swept = await store.jobs.sweep_drafts()
            (job,) = await store.jobs.list()
            return swept, await _counts(store), await store.ledger.job_counts(job.id)
        finally:
            await store.close()

    swept, counts, job_counts = asyncio.run(swept_later())
    assert len(swept) == 1
    assert counts == {"jobs": 1, "requests": n, "request_bodies": n, "job_drafts": 0}
    assert job_counts == {"pending": n}
