"""Building a Kiln for a command: the store from KILN_DATABASE_URL, and either
the real vendors (credentials from the SDKs' own environment variables) or the
built-in simulator in-process on a scaled clock, reached through the same
adapters and official SDKs over an ASGI transport."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from batchkiln.clock import Clock, ScaledClock, SystemClock
from batchkiln.engine.kiln import Kiln
from batchkiln.providers import make_provider
from batchkiln.providers.base import Provider
from batchkiln.simulator import Faults, Simulator, parse_faults
from batchkiln.store import Store

SIMULATOR = "simulator"  # OpenAI's wire format, served in-process
SIMULATOR_ANTHROPIC = "simulator-anthropic"
VENDORS = ("openai", "anthropic")
SIMULATED = (SIMULATOR, SIMULATOR_ANTHROPIC)
DEMO_SPEED = 2000.0  # 24 vendor hours in about 43 real seconds


class LazyProviders(Mapping[str, Provider]):
    """Providers built on first use, so a command that never calls OpenAI does not
    need OPENAI_API_KEY."""

    def __init__(self, factories: dict[str, Callable[[], Provider]]) -> None:
        self._factories = factories
        self._built: dict[str, Provider] = {}

    def __getitem__(self, name: str) -> Provider:
        if name not in self._built:
            self._built[name] = self._factories[name]()
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    async def aclose(self) -> None:
        for provider in self._built.values():
            await provider.aclose()


def fresh_sqlite_url(path: Path) -> str:
    """A SQLite URL at `path`, after deleting any database (and WAL files) there."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


@dataclass
class Runtime:
    kiln: Kiln
    simulator: Simulator | None
    clock: Clock


@asynccontextmanager
async def open_runtime(
    *,
    simulated: bool = False,
    speed: float = DEMO_SPEED,
    faults: Faults | None = None,
    database_url: str | None = None,
    seed: int = 0,
    clock: Clock | None = None,
    webhook_urls: Sequence[str] = (),
    webhook_client: httpx.AsyncClient | None = None,
) -> AsyncIterator[Runtime]:
    """A Kiln over the configured store; with `simulated`, also the in-process vendor
    (on `clock`, by default one running `speed` times real time)."""
    if clock is None:
        clock = ScaledClock(speed) if simulated else SystemClock()
    simulator = None
    http: httpx.AsyncClient | None = None
    if simulated:
        if faults is None:  # `kiln submit --provider simulator` takes faults from here
            faults = parse_faults(os.environ.get("KILN_SIMULATOR_FAULTS", ""))
        simulator = Simulator(
            clock=clock,
            seed=seed,
            faults=faults or Faults(),
            base_url="http://simulator.kiln",
            webhook_urls=webhook_urls,
            webhook_client=webhook_client,
            signing_clock=clock,
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=simulator.app), base_url="http://simulator.kiln"
        )
        sim_http = http
        sim = simulator
        providers = LazyProviders(
            {
                SIMULATOR: lambda: make_provider(
                    "openai", http_client=sim_http, base_url=sim.openai_base_url, api_key="sim"
                ),
                SIMULATOR_ANTHROPIC: lambda: make_provider(
                    "anthropic",
                    http_client=sim_http,
                    base_url=sim.anthropic_base_url,
                    api_key="sim",
                ),
            }
        )
    else:
        providers = LazyProviders(
            {name: functools.partial(make_provider, name) for name in VENDORS}
        )
    store = await Store.open(database_url, clock=clock)
    try:
        yield Runtime(Kiln(store, providers, clock=clock), simulator, clock)
    finally:
        await providers.aclose()
        if http is not None:
            await http.aclose()
        await store.close()
