"""The engine on the simulator through the official SDKs, on both databases, with
the token counter fixed to the approximation so figures never depend on a local
tiktoken cache, and no global budget unless a test sets one."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from batchkiln import App, FakeClock, Kiln, Settings, Simulator, Store
from batchkiln.costs.budget import GlobalBudget, Period

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


@dataclass
class Env:
    clock: FakeClock
    sim: Simulator
    store: Store
    kiln: Kiln
    tmp: Path
    app: App

    def new_kiln(self, worker: str) -> Kiln:
        return self.app.engine(worker, rng=random.Random(1))

    def set_global_budget(self, limit_usd: float, period: Period = "month") -> None:
        """What KILN_BUDGET_USD / KILN_BUDGET_PERIOD give the next process started."""
        self.app.budget.global_budget = GlobalBudget(limit_usd, period)


def write_requests(
    path: Path, n: int, *, vendor: str = "openai", max_tokens: int | None = 64
) -> Path:
    with path.open("wb") as out:
        for i in range(n):
            messages = [{"role": "user", "content": f"Summarise item r{i}: " + "x " * (i % 7)}]
            cap = {} if max_tokens is None else {"max_tokens": max_tokens}
            if vendor == "anthropic":
                line = {"custom_id": f"r{i}", "params": {**cap, "messages": messages}}
            elif vendor == "gemini":
                config = {} if max_tokens is None else {"maxOutputTokens": max_tokens}
                request = {
                    "contents": [{"role": "user", "parts": [{"text": messages[0]["content"]}]}]
                }
                line = {"key": f"r{i}", "request": {**request, "generationConfig": config}}
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
    async with App.simulated(
        Settings.load(),
        clock=clock,
        seed=1,
        store=store,
        worker="test-worker",
        rng=random.Random(0),
    ) as app:
        assert app.simulator is not None
        yield Env(clock, app.simulator, store, app.kiln, tmp_path, app)
