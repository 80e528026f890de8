"""LISTEN/NOTIFY on PostgreSQL: a webhook received by one worker's receiver wakes
another, idle worker, which steps the batch within a second (real clock, real
notifications, bounded waits)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from batchkiln import App, Kiln, Settings
from batchkiln.clock import SystemClock
from batchkiln.engine.worker import Worker
from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app
from batchkiln.simulator import sign
from batchkiln.simulator.webhooks import new_secret
from batchkiln.store import Store

from .helpers import MODELS, write_requests

pytestmark = pytest.mark.postgres
POSTGRES_URL = os.environ.get(
    "KILN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
RAW_URL = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")


async def _postgres_store(clock: SystemClock) -> tuple[Store, str]:
    """A store in a schema of its own on a real clock (skips, or fails in CI, without
    PostgreSQL, as tests/conftest.py does)."""
    import asyncpg

    schema = f"kiln_wake_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(RAW_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL not reachable at {RAW_URL}: {exc} (CI=true)")
        pytest.skip(f"PostgreSQL not reachable at {RAW_URL}: {exc}")
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    settings = {"server_settings": {"search_path": schema}}
    return await Store.open(POSTGRES_URL, clock=clock, connect_args=settings), schema


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(RAW_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _first_poll_by(store: Store, job_id: str, worker: str) -> float | None:
    for event in await store.audit.for_job(job_id):
        if event.kind == "poll" and event.worker == worker:
            return event.at
    return None


async def test_a_webhook_to_one_worker_wakes_another_idle_worker_within_a_second(
    tmp_path: Path,
) -> None:
    """Worker B idles (next check an hour away, idle cap 30 s); a signed webhook reaches
    worker A's receiver; B is woken by NOTIFY and polls the batch in under a second."""
    clock = SystemClock()
    store, schema = await _postgres_store(clock)
    secret = new_secret()
    try:
        async with App.simulated(Settings.load(), clock=clock, store=store) as app:
            first = Kiln(store, app.providers, clock=clock, worker="A", tracking="webhook")
            path = write_requests(tmp_path / "wake.jsonl", 2)
            job = (await first.submit(path, provider="openai", model=MODELS["openai"])).job
            assert await first.run_once() == 1  # submitted: pending at the vendor
            (batch,) = await store.batches.for_job(job.id)
            await store.batches.update(batch.id, next_check_at=clock.now() + 3600)

            idle = Kiln(store, app.providers, clock=clock, worker="B", tracking="webhook")
            worker = Worker(idle, listen=True, idle_cap=30.0)
            running = asyncio.create_task(worker.run(max_steps=1))
            await asyncio.sleep(0.5)  # B is listening and idle
            assert not running.done()

            receiver = webhook_app(store, [secret])  # A's receiver: A itself stays put
            body = orjson.dumps({"type": "batch.completed", "data": {"id": batch.vendor_id}})
            stamp = int(time.time())
            headers = {
                "webhook-id": "wh_wake",
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign(secret, "wh_wake", stamp, body),
            }
            transport = httpx.ASGITransport(app=receiver)
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
                sent = clock.now()
                response = await client.post(DEFAULT_PATH, content=body, headers=headers)
            assert response.status_code == 200 and response.json()["known"]
            assert await asyncio.wait_for(running, timeout=5) == 1
            polled = await _first_poll_by(store, job.id, "B")
            assert polled is not None and polled - sent < 1.0
    finally:
        await store.close()
        await _drop_schema(schema)


async def test_a_new_submission_wakes_an_idle_worker(tmp_path: Path) -> None:
    """Submitting a job NOTIFYs: an idle listening worker submits it within a second."""
    clock = SystemClock()
    store, schema = await _postgres_store(clock)
    try:
        async with App.simulated(Settings.load(), clock=clock, store=store) as app:
            idle = Kiln(store, app.providers, clock=clock, worker="B")
            worker = Worker(idle, listen=True, idle_cap=30.0)
            running = asyncio.create_task(worker.run(max_steps=1))
            await asyncio.sleep(0.5)
            submitter = Kiln(store, app.providers, clock=clock, worker="cli")
            path = write_requests(tmp_path / "new.jsonl", 2)
            sent = clock.now()
            job = (await submitter.submit(path, provider="openai", model=MODELS["openai"])).job
            assert await asyncio.wait_for(running, timeout=5) == 1
            (batch,) = await store.batches.for_job(job.id)
            assert batch.vendor_id is not None and batch.updated_at - sent < 1.0
    finally:
        await store.close()
        await _drop_schema(schema)
