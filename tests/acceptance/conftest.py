"""A whole batchkiln on the simulator: fake clock, store, both adapters through the
official SDKs over an in-process ASGI transport."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import Kiln
from batchkiln.providers import make_provider
from batchkiln.simulator import Faults, Simulator
from batchkiln.store import Store

SIM_URL = "http://sim.test"


@dataclass
class Env:
    clock: FakeClock
    sim: Simulator
    store: Store
    kiln: Kiln
    http: httpx.AsyncClient
    tmp: Path

    def new_kiln(self, worker: str) -> Kiln:
        """Another engine on the same store and vendor (a second process, in effect)."""
        return Kiln(
            self.store,
            self.kiln.providers,
            clock=self.clock,
            worker=worker,
            rng=random.Random(worker),
        )


def write_requests(path: Path, n: int, *, vendor: str = "openai", prefix: str = "r") -> Path:
    with path.open("wb") as out:
        for i in range(n):
            messages = [
                {"role": "user", "content": f"Summarise item {prefix}{i}: " + "x " * (i % 7)}
            ]
            if vendor == "anthropic":
                line = {
                    "custom_id": f"{prefix}{i}",
                    "params": {"max_tokens": 64, "messages": messages},
                }
            else:
                line = {
                    "custom_id": f"{prefix}{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"messages": messages, "max_tokens": 64},
                }
            out.write(orjson.dumps(line) + b"\n")
    return path


MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


@pytest.fixture
async def env(store: Store, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Env]:
    """The engine, its store (SQLite and PostgreSQL) and the simulator, on one fake clock."""
    sim = Simulator(clock=clock, seed=1, faults=Faults(), base_url=SIM_URL)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=SIM_URL)
    providers = {
        "openai": make_provider(
            "openai", http_client=http, base_url=sim.openai_base_url, api_key="test"
        ),
        "anthropic": make_provider(
            "anthropic", http_client=http, base_url=sim.anthropic_base_url, api_key="test"
        ),
    }
    kiln = Kiln(store, providers, clock=clock, worker="test-worker", rng=random.Random(0))
    yield Env(clock, sim, store, kiln, http, tmp_path)
    await http.aclose()
