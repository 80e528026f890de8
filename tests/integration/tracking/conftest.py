"""The engine on the simulator, one fake clock, with the webhook receiver wired in:
the simulator POSTs signed batch events through an in-process ASGI transport into
`webhook_app`, signed on the same fake clock the receiver checks them against."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from batchkiln import App, FakeClock, Kiln, Settings, Simulator, Store, TrackingMode, TrackingPolicy
from batchkiln.providers.base import Provider
from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app
from batchkiln.simulator.webhooks import new_secret

HOOK_URL = f"http://kiln.test{DEFAULT_PATH}"


@dataclass
class World:
    clock: FakeClock
    sim: Simulator
    store: Store
    providers: Mapping[str, Provider]
    receiver: httpx.AsyncClient  # posts straight into the webhook app
    secret: str
    tmp: Path
    app: App
    woken: list[float] = field(default_factory=list)  # when the receiver made a batch due

    def kiln(self, tracking: TrackingPolicy | TrackingMode | str, worker: str = "w1") -> Kiln:
        return Kiln(
            self.store,
            self.providers,
            clock=self.clock,
            worker=worker,
            rng=random.Random(worker),
            tracking=tracking,
            budget=self.app.budget,
        )


@pytest.fixture
async def world(store: Store, clock: FakeClock, tmp_path: Path) -> AsyncIterator[World]:
    """Simulator + both adapters + webhook receiver on one fake clock and store."""
    secret = new_secret()
    woken: list[float] = []
    receiver_app = webhook_app(store, [secret], on_due=lambda: woken.append(clock.now()))
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=receiver_app), base_url="http://kiln.test"
        ) as receiver,
        App.simulated(
            Settings.load(),
            clock=clock,
            seed=3,
            store=store,
            webhook_urls=[HOOK_URL],
            webhook_secret=secret,
            webhook_client=receiver,
        ) as app,
    ):
        assert app.simulator is not None
        yield World(
            clock, app.simulator, store, app.providers, receiver, secret, tmp_path, app, woken
        )
