"""`kiln serve` as a real process on loopback: submit over HTTP with an
Idempotency-Key against the simulator, get the signed callback, download the
results, and replay the POST after the job ended."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from batchkiln.service.serve import serving

from .conftest import SECRET, jsonl, requests_lines

TOKEN = "acceptance-token-0123456789"
KILN = Path(sys.executable).with_name("kiln")


POSTGRES = os.environ.get("KILN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@asynccontextmanager
async def database(kind: str, tmp: Path) -> AsyncIterator[str]:
    """A fresh database for one `kiln serve` process: a SQLite file, or a new
    PostgreSQL database (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/kiln.db"
        return
    import asyncpg

    admin_url = POSTGRES.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL not reachable at {admin_url}: {exc} (CI=true)")
        pytest.skip(f"PostgreSQL not reachable at {admin_url}: {exc}")
    name = f"kiln_serve_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def kiln_serve(
    tmp: Path, database_url: str
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    env = {
        **os.environ,
        "KILN_DATABASE_URL": database_url,
        "KILN_CALLBACK_SECRET": SECRET,
        "KILN_CALLBACK_ALLOW_LOOPBACK": "1",
        "KILN_API_TOKENS": f"acceptance:{TOKEN}",
        "COLUMNS": "200",
    }
    proc = await asyncio.create_subprocess_exec(
        str(KILN), "serve", "--simulator", "--port", "0",
        env=env, cwd=tmp, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    url = None
    try:
        async with asyncio.timeout(60):
            while url is None:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    pytest.fail("kiln serve exited before listening")
                found = re.search(r"listening on (http://\S+)", line)
                url = found.group(1) if found else None
        yield url, proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_kiln_serve_end_to_end(tmp_path: Path, kind: str) -> None:
    """Submit, callback (verified), results, replay, clean SIGTERM exit: a real process,
    on SQLite and on PostgreSQL."""
    received: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()

    async def hook(request: Request) -> JSONResponse:
        await received.put((await request.body(), dict(request.headers)))
        return JSONResponse({"ok": True})

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with (
        database(kind, tmp_path) as database_url,
        serving(receiver, port=0) as hook_url,
        kiln_serve(tmp_path, database_url) as (url, proc),
    ):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:
            assert (await client.get("/readyz")).status_code == 200
            upload = {"file": ("batch.jsonl", jsonl(requests_lines(12)))}
            fields = {"provider": "openai", "callback_url": f"{hook_url}/hook"}
            key = {"Idempotency-Key": '"accept-0001"'}
            first = await client.post("/v1/jobs", files=upload, data=fields, headers=key)
            assert first.status_code == 201, first.text
            job_id = first.json()["id"]

            async with asyncio.timeout(120):
                body, headers = await received.get()
            event = Webhook(SECRET).verify(body, headers)
            assert event["type"] == "job.done"
            assert event["data"]["id"] == job_id

            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert job["state"] == "done"
            assert job["counts"] == {"succeeded": 12}
            results = await client.get(f"/v1/jobs/{job_id}/results")
            lines = [orjson.loads(x) for x in results.content.splitlines()]
            assert [x["custom_id"] for x in lines] == [f"r{i}" for i in range(12)]
            assert {x["outcome"] for x in lines} == {"succeeded"}

            again = await client.post("/v1/jobs", files=upload, data=fields, headers=key)
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            assert len((await client.get("/v1/jobs")).json()["data"]) == 1
            assert received.empty()  # one event, delivered once
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


async def test_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    """kiln serve --host 0.0.0.0 with no KILN_API_TOKENS exits 2 with one clear line."""
    env = {k: v for k, v in os.environ.items() if k != "KILN_API_TOKENS"}
    env["KILN_DATABASE_URL"] = f"sqlite:///{tmp_path}/kiln.db"
    proc = await asyncio.create_subprocess_exec(
        str(KILN), "serve", "--host", "0.0.0.0", "--port", "0",
        env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in err.decode()
