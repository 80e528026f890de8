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
def make_served(store: Store, clock: FakeClock, tmp_path: Path) -> Callable[..., Any]:
    """Another API process on the same store (a restart, in effect)."""
    return lambda **overrides: serve(store, clock, tmp_path, **overrides)


@dataclass
class Delivery:
    url: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A callback endpoint behind httpx.MockTransport: records every delivery and
    answers from a script (default 200)."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.deliveries: list[Delivery] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.deliveries.append(Delivery(str(request.url), dict(request.headers), request.content))
        if self.answers:
            return self.answers.pop(0)
        return httpx.Response(200, json={"ok": True})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def sender_for(served: Served, receiver: Receiver, **kwargs: Any) -> Any:
    from batchkiln.service.outbox import Sender

    svc = served.api.state.service
    return Sender(
        served.app.store,
        clock=served.clock,
        worker="test-sender",
        default_secret=svc.default_secret,
        rules=svc.rules,
        client=receiver.client(),
        **kwargs,
    )


CALLBACK = "http://127.0.0.1:9/hook"


def inline_job(n: int = 3, *, prefix: str = "r", **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "requests": requests_lines(n, prefix), **extra}
