"""The service on the simulator, in process: an App on a fake clock, its FastAPI
app, and an httpx client over ASGITransport."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from batchkiln import App, FakeClock, Settings, Store
from batchkiln.service.api import create_api

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 random bytes, base64


@dataclass
class Served:
    app: App
    api: FastAPI
    client: httpx.AsyncClient
    clock: FakeClock
    store: Store
    tmp: Path

    async def drive(self, job_id: str) -> None:
        """Run the job's batches to the end on the fake clock (the worker's part)."""
        await self.app.kiln.run_until_done(job_id)


def requests_lines(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Say {prefix}{i}"}],
                "max_tokens": 16,
            },
        }
        for i in range(n)
    ]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"callback_secret": SECRET, "callback_allow_loopback": True}
    base.update(overrides)
    return Settings.load(**base)


@asynccontextmanager
async def serve(
    store: Store, clock: FakeClock, tmp: Path, **overrides: Any
) -> AsyncIterator[Served]:
    async with App.simulated(
        settings(**overrides),
        clock=clock,
        seed=1,
        store=store,
        worker="test-worker",
        rng=random.Random(0),
    ) as app:
        api = create_api(app)
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
            yield Served(app, api, client, clock, store, tmp)


@pytest.fixture
async def served(store: Store, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Served]:
    """The API on the simulator (SQLite and PostgreSQL), fake clock, loopback callbacks."""
    async with serve(store, clock, tmp_path) as s:
        yield s


@pytest.fixture
def make_served(
    store: Store, clock: FakeClock, tmp_path: Path
) -> Callable[..., Any]:
    """Another API process on the same store (a restart, in effect)."""
    return lambda **overrides: serve(store, clock, tmp_path, **overrides)
