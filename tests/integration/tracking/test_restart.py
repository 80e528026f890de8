"""A `kiln worker` killed mid-run (SIGKILL) and restarted resumes every batch from
its persisted schedule: nothing lost, nothing submitted twice.

The worker is a real subprocess (`kiln worker --mode hybrid --webhook-port N`) on a
file SQLite database, talking to the simulator over loopback and receiving a signed
webhook on its own port; both run on one virtual clock (200x real time, anchored at
the same epoch). After the kill the vendor's clock is frozen into a fake clock, and a new
worker on that clock finishes the run, so every resumed check can be timed exactly.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from batchkiln.cli.operate import virtual_clock
from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import TrackingMode, TrackingPolicy
from batchkiln.providers import make_provider
from batchkiln.providers.base import Provider
from batchkiln.service.webhooks import DEFAULT_PATH
from batchkiln.simulator import Faults, Simulator, serve_in_thread, sign
from batchkiln.simulator.webhooks import new_secret
from batchkiln.store import BatchRow, Store

from .helpers import MODELS, write_requests

SPEED = 200.0
JOBS = [("openai", f"gpt-{i}") for i in range(3)] + [("anthropic", f"claude-{i}") for i in range(2)]
SECRET = new_secret()
COLUMNS = "id, state, vendor_id, next_check_at, check_attempt, submit_attempts, lease_expires_at"


class HandOver:
    """Virtual time shared with the worker subprocess until `freeze()`, then a fake clock."""

    def __init__(self, epoch: float) -> None:
        self.scaled = virtual_clock(SPEED, epoch)
        self.fake: FakeClock | None = None

    def now(self) -> float:
        return self.fake.now() if self.fake is not None else self.scaled.now()

    async def sleep(self, seconds: float) -> None:
        await (self.fake or self.scaled).sleep(seconds)

    def freeze(self) -> FakeClock:
        self.fake = FakeClock(start=self.scaled.now())
        return self.fake


def _rows(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in conn.execute(f"SELECT {COLUMNS} FROM batches")}


def _polls(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        query = "SELECT batch_id, count(*) FROM audit_events WHERE kind = 'poll' GROUP BY batch_id"
        return dict(conn.execute(query).fetchall())


async def _submit_jobs(
    db: Path, clock: HandOver, providers: dict[str, Provider], tmp: Path
) -> None:
    store = await Store.open(f"sqlite:///{db}", clock=clock)
    kiln = Kiln(store, providers, clock=clock, worker="submitter", tracking="poll")
    for vendor, key in JOBS:
        path = write_requests(tmp / f"{key}.jsonl", 4, vendor=vendor)
        await kiln.submit(path, provider=vendor, model=MODELS[vendor], key=key)
    await store.close()


def _received_by_the_worker(db: Path) -> bool:
    with sqlite3.connect(db, timeout=10) as conn:
        query = "SELECT count(*) FROM webhook_events WHERE webhook_id = 'wh_restart'"
        return bool(conn.execute(query).fetchone()[0])


async def _next_claimable(store: Store, now: float) -> float:
    """When the next batch is both due and free of the dead worker's lease."""
    times = []
    for row in await store.batches.live():
        if row.next_check_at is None:
            continue
        free_at = now
        if row.lease_expires_at is not None and row.lease_expires_at >= now:
            free_at = row.lease_expires_at + 0.001  # claimable once strictly past expiry
        times.append(max(row.next_check_at, free_at))
    return min(times)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _webhook_reaches_the_worker(port: int, clock: HandOver) -> bool:
    """POST a signed event (for a batch that is not ours) to the worker's own receiver."""
    body = orjson.dumps({"type": "batch.completed", "data": {"id": "batch_elsewhere"}})
    # The receiver checks the stamp against the worker's virtual clock, where the 5 minute
    # tolerance is 1.5 real seconds: stamp it ahead, and retry (as a sender would) if slow.
    stamp = int(clock.now() + 240)
    headers = {
        "webhook-id": "wh_restart",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(SECRET, "wh_restart", stamp, body),
    }
    async with httpx.AsyncClient() as client:
        try:
            response = await client.post(
                f"http://127.0.0.1:{port}{DEFAULT_PATH}", content=body, headers=headers
            )
        except httpx.TransportError:
            return False  # not listening yet
    if response.status_code == 400 and "tolerance" in response.text:
        return False
    assert response.status_code == 200, response.text
    return True


async def _run_killed_worker(db: Path, url: str, clock: HandOver, epoch: float) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if "WEBHOOK_SECRET" not in k}
    env.update(
        OPENAI_WEBHOOK_SECRET=SECRET,
        KILN_DATABASE_URL=f"sqlite:///{db}",
        OPENAI_BASE_URL=f"{url}/v1",
        OPENAI_API_KEY="test",
        ANTHROPIC_BASE_URL=url,
        ANTHROPIC_API_KEY="test",
    )
    code = "import sys; from batchkiln.cli import app; sys.argv[0] = 'kiln'; app()"
    args = [
        "worker",
        "--mode",
        "hybrid",
        "--webhook-port",
        str(port),
        "--batch-size",
        "3",
        "--speed",
        str(SPEED),
        "--epoch",
        str(epoch),
    ]
    proc = _spawn([sys.executable, "-c", code, *args], env)
    deadline = time.monotonic() + 60
    hooked = False
    try:
        while True:  # until every batch is at the vendor and has been polled a few times
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, "the worker never got going"
            hooked = hooked or await _webhook_reaches_the_worker(port, clock)
            rows, polls = _rows(db), _polls(db)
            if (
                hooked
                and all(r["vendor_id"] for r in rows.values())
                and all(polls.get(bid, 0) >= 2 for bid in rows)
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: mid-run, no cleanup
        proc.wait(timeout=10)


@pytest.mark.slow
async def test_a_killed_worker_restarts_from_the_persisted_schedule(tmp_path: Path) -> None:
    """SIGKILL mid-run, restart: each batch's first check is at its persisted time with
    its persisted attempt; every job finishes, and no batch was created twice."""
    epoch = time.time()
    clock = HandOver(epoch)
    sim = Simulator(clock=clock, seed=7, faults=Faults(processing_seconds=900))
    db = tmp_path / "kiln.db"
    with serve_in_thread(sim) as url:
        providers = {
            "openai": make_provider("openai", base_url=f"{url}/v1", api_key="test"),
            "anthropic": make_provider("anthropic", base_url=url, api_key="test"),
        }
        await _submit_jobs(db, clock, providers, tmp_path)
        await _run_killed_worker(db, url, clock, epoch)
        for provider in providers.values():
            await provider.aclose()
    at_kill = _rows(db)
    assert any(r["check_attempt"] > 0 for r in at_kill.values())

    fake = clock.freeze()
    restart_at = fake.now()
    store = await Store.open(f"sqlite:///{db}", clock=fake)
    first: dict[str, tuple[float, BatchRow]] = {}
    claim = store.batches.claim_due

    async def recording_claim(**kwargs: Any) -> list[BatchRow]:
        rows = await claim(**kwargs)
        for row in rows:
            first.setdefault(row.id, (fake.now(), row))
        return rows

    store.batches.claim_due = recording_claim  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=url) as http:
        providers = {
            "openai": make_provider("openai", http_client=http, base_url=f"{url}/v1", api_key="t"),
            "anthropic": make_provider("anthropic", http_client=http, base_url=url, api_key="t"),
        }
        # List refresh off: a page may refresh a batch early (for free), and here each
        # batch's first check after the restart must be its own, to be timed.
        policy = TrackingPolicy(mode=TrackingMode.HYBRID, list_refresh=False)
        kiln = Kiln(store, providers, clock=fake, worker="restarted", tracking=policy)
        for _ in range(1000):
            if all(j.status == "done" for j in await store.jobs.list()):
                break
            if await kiln.run_once() == 0:  # sleep until the next batch can be claimed
                fake.set(await _next_claimable(store, fake.now()))
        jobs = await store.jobs.list()
        assert [j.status for j in jobs] == ["done"] * len(JOBS)
        for job in jobs:
            assert await store.ledger.job_counts(job.id) == {"succeeded": 4}
        final = {b.id: b for j in jobs for b in await store.batches.for_job(j.id)}
    await store.close()

    assert set(final) == set(at_kill)  # no batch lost, none added
    assert sim.counters.batches_created == len(JOBS)  # none submitted twice
    assert _received_by_the_worker(db)
    for bid, before in at_kill.items():
        assert final[bid].vendor_id == before["vendor_id"] and final[bid].submit_attempts == 1
        when, claimed = first[bid]
        assert (claimed.check_attempt, claimed.next_check_at) == (
            before["check_attempt"],
            before["next_check_at"],
        )
        resumes_at = max(before["next_check_at"], restart_at, before["lease_expires_at"] or 0)
        assert when == resumes_at or (before["lease_expires_at"] and when >= resumes_at)
