"""The engine on the simulator, one fake clock, with the webhook receiver wired in:
the simulator POSTs signed batch events through an in-process ASGI transport into
`webhook_app`, signed on the same fake clock the receiver checks them against."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import TrackingMode, TrackingPolicy
from batchkiln.providers.anthropic import AnthropicProvider
from batchkiln.providers.base import Provider
from batchkiln.providers.openai import OpenAIProvider
from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app
from batchkiln.simulator import Faults, Simulator
from batchkiln.simulator.webhooks import new_secret
from batchkiln.store import Store

SIM_URL = "http://sim.test"
HOOK_URL = f"http://kiln.test{DEFAULT_PATH}"


@dataclass
class World:
    clock: FakeClock
    sim: Simulator
    store: Store
    providers: dict[str, Provider]
    receiver: httpx.AsyncClient  # posts straight into the webhook app
    secret: str
    tmp: Path
    woken: list[float] = field(default_factory=list)  # when the receiver made a batch due

    def kiln(self, tracking: TrackingPolicy | TrackingMode | str, worker: str = "w1") -> Kiln:
        return Kiln(
            self.store,
            self.providers,
            clock=self.clock,
            worker=worker,
            rng=random.Random(worker),
            tracking=tracking,
        )


@pytest.fixture
async def world(store: Store, clock: FakeClock, tmp_path: Path) -> AsyncIterator[World]:
    """Simulator + both adapters + webhook receiver on one fake clock and store."""
    secret = new_secret()
    woken: list[float] = []
    app = webhook_app(store, [secret], on_due=lambda: woken.append(clock.now()))
    receiver = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://kiln.test"
    )
    sim = Simulator(
        clock=clock,
        seed=3,
        faults=Faults(),
        base_url=SIM_URL,
        webhook_urls=[HOOK_URL],
        webhook_secret=secret,
        webhook_client=receiver,
        signing_clock=clock,
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=SIM_URL)
    providers: dict[str, Provider] = {
        "openai": OpenAIProvider(http_client=http, base_url=sim.openai_base_url, api_key="t"),
        "anthropic": AnthropicProvider(
            http_client=http, base_url=sim.anthropic_base_url, api_key="t", list_page_size=1000
        ),
    }
    yield World(clock, sim, store, providers, receiver, secret, tmp_path, woken)
    for provider in providers.values():
        await provider.aclose()
    await http.aclose()
    await receiver.aclose()
