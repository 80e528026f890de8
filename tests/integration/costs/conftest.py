"""The engine on the simulator through the official SDKs, on both databases, with
the token counter fixed to the approximation so figures never depend on a local
tiktoken cache, and no global budget unless a test sets one."""

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
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


@dataclass
class Env:
    clock: FakeClock
    sim: Simulator
    store: Store
    kiln: Kiln
    tmp: Path

    def new_kiln(self, worker: str) -> Kiln:
        return Kiln(
            self.store, self.kiln.providers, clock=self.clock, worker=worker, rng=random.Random(1)
        )


def write_requests(
    path: Path, n: int, *, vendor: str = "openai", max_tokens: int | None = 64
) -> Path:
    with path.open("wb") as out:
        for i in range(n):
            messages = [{"role": "user", "content": f"Summarise item r{i}: " + "x " * (i % 7)}]
            cap = {} if max_tokens is None else {"max_tokens": max_tokens}
            if vendor == "anthropic":
                line = {"custom_id": f"r{i}", "params": {**cap, "messages": messages}}
            else:
                line = {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"messages": messages, **cap},
                }
            out.write(orjson.dumps(line) + b"\n")
    return path


@pytest.fixture(autouse=True)
def _quiet_money_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_TOKENIZER", "approx")
    monkeypatch.delenv("KILN_BUDGET_USD", raising=False)
    monkeypatch.delenv("KILN_BUDGET_PERIOD", raising=False)
    monkeypatch.delenv("KILN_PRICES_FILE", raising=False)


@pytest.fixture
async def env(store: Store, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Env]:
    """The engine, its store (SQLite and PostgreSQL) and the simulator, on one fake clock."""
    sim = Simulator(clock=clock, seed=1, faults=Faults(), base_url=SIM_URL)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=SIM_URL)
    providers = {
        vendor: make_provider(
            vendor,
            http_client=http,
            base_url=sim.openai_base_url if vendor == "openai" else sim.anthropic_base_url,
            api_key="test",
        )
        for vendor in ("openai", "anthropic")
    }
    kiln = Kiln(store, providers, clock=clock, worker="test-worker", rng=random.Random(0))
    yield Env(clock, sim, store, kiln, tmp_path)
    await http.aclose()
