"""A whole batchkiln on the simulator: fake clock, store, the three adapters through the
official SDKs over an in-process ASGI transport."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from batchkiln import App, FakeClock, Kiln, Settings, Simulator, Store


@dataclass
class Env:
    clock: FakeClock
    sim: Simulator
    store: Store
    kiln: Kiln
    tmp: Path
    app: App

    def new_kiln(self, worker: str) -> Kiln:
        """Another engine on the same store and vendor (a second process, in effect)."""
        return self.app.engine(worker, rng=random.Random(worker))


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
            elif vendor == "gemini":  # Gemini's own line form
                line = {
                    "key": f"{prefix}{i}",
                    "request": {
                        "contents": [{"role": "user", "parts": [{"text": messages[0]["content"]}]}],
                        "generationConfig": {"maxOutputTokens": 64},
                    },
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


MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


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
