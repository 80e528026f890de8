"""`App`, the composition root: one per process.

It holds the store, the providers (built on first use), the clock, the settings,
the tracking policy and the budget guard, and exposes the engine as `app.kiln`.
Every edge (the CLI, the synchronous facade, the webhook receiver, the service,
the dashboard, the worker) receives an App and calls it; none opens the store or
reads the environment itself.

    async with App.open() as app:                      # real vendors, KILN_* settings
        submitted = await app.kiln.submit("requests.jsonl", provider="openai")

    async with App.simulated(clock=FakeClock()) as app:  # the in-process simulator
        ...                                              # through the official SDKs

`App.simulated` is the one place the simulator, its in-process ASGI transport and
the adapters are wired together (the demo, the tests and the benches use it).
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from batchkiln.clock import Clock, ScaledClock, SystemClock, store_time
from batchkiln.costs import prices, tokens
from batchkiln.costs.budget import GlobalBudget
from batchkiln.engine.budget import BudgetGuard
from batchkiln.engine.kiln import Kiln, default_worker_id
from batchkiln.engine.schedule import TrackingMode, TrackingPolicy
from batchkiln.errors import ConfigError
from batchkiln.providers import make_provider
from batchkiln.providers.base import Provider
from batchkiln.settings import Settings
from batchkiln.simulator import Faults, Simulator, parse_faults
from batchkiln.store import Store

VENDORS = ("openai", "anthropic", "gemini")
#: provider names that mean "the in-process simulator, speaking this vendor's wire format"
SIMULATED = {
    "simulator": "openai",
    "simulator-anthropic": "anthropic",
    "simulator-gemini": "gemini",
}
DEMO_SPEED = 2000.0  # 24 vendor hours in about 43 real seconds
SIM_BASE_URL = "http://simulator.kiln"


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


class App:
    """One store, the providers, one clock, one Settings, one tracking policy and one
    budget guard; the engine on top of them is `app.kiln`."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        providers: Mapping[str, Provider],
        clock: Clock,
        simulator: Simulator | None = None,
        tracking: TrackingPolicy | TrackingMode | str | None = None,
        worker: str | None = None,
        rng: random.Random | None = None,
        vendor_clock: Clock | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.settings = settings
        # The cost model is process-wide (estimates and costs are pure functions of the
        # price table and the token counter); the App sets it from its settings.
        prices.configure(settings.prices_file)
        tokens.configure(settings.tokenizer)
        self.store = store
        self.providers = providers
        self.clock = clock  # store time: real UTC (or a test's FakeClock)
        # the vendor's time: the simulator's virtual clock when it runs fast
        self.vendor_clock = vendor_clock or clock
        self.time_scale = time_scale  # vendor seconds per store second
        self.simulator = simulator
        self.worker = worker or default_worker_id()
        self.tracking = TrackingPolicy.of(
            tracking if tracking is not None else settings.tracking,
            webhooks=bool(settings.all_webhook_secrets),
        )
        self.budget = BudgetGuard(
            store, clock, GlobalBudget.of(settings.budget_usd, settings.budget_period)
        )
        self.kiln = self.engine(self.worker, rng=rng)
        self._closers = AsyncExitStack()

    def engine(self, worker: str, *, rng: random.Random | None = None) -> Kiln:
        """An engine on this App's store, providers and policies under another worker
        name (a second process, in effect; tests use it to race two workers)."""
        return Kiln(
            self.store,
            self.providers,
            clock=self.clock,
            worker=worker,
            rng=rng or random.Random(),
            tracking=self.tracking,
            budget=self.budget,
            lease_seconds=self.settings.lease_seconds,
            vendor_clock=self.vendor_clock,
            time_scale=self.time_scale,
            enqueued_limits=self.settings.enqueued_token_limits,
            stall_after=self.settings.stall_after_seconds,
            vendor_concurrency=self.settings.vendor_concurrency,
        )

    # -- building ---------------------------------------------------------------

    @classmethod
    async def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        tracking: TrackingPolicy | TrackingMode | str | None = None,
        worker: str | None = None,
    ) -> App:
        """The App for real vendors (credentials from the settings). Close it with
        `aclose()`, or use `App.open(...)`."""
        settings = settings or Settings.load()
        # Real vendors: one clock for all. (`kiln worker --speed`, a hidden test tool for
        # the standalone simulator, shares one virtual clock with it on purpose.)
        clock = clock or SystemClock()
        providers = LazyProviders(
            {name: functools.partial(_real_provider, name, settings) for name in VENDORS}
        )
        store = await Store.open(settings.database_url, clock=clock)
        app = cls(
            settings=settings,
            store=store,
            providers=providers,
            clock=clock,
            tracking=tracking,
            worker=worker,
        )
        app._closers.push_async_callback(store.close)
        app._closers.push_async_callback(providers.aclose)
        return app

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings | None = None, **options: Any) -> AsyncIterator[App]:
        """`from_settings` (same options) as an async context manager."""
        app = await cls.from_settings(settings, **options)
        try:
            yield app
        finally:
            await app.aclose()

    @classmethod
    @asynccontextmanager
    async def simulated(
        cls,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        speed: float = DEMO_SPEED,
        faults: Faults | None = None,
        seed: int = 0,
        store: Store | None = None,
        database_url: str | None = None,
        webhook_urls: Sequence[str] = (),
        webhook_secret: str | None = None,
        webhook_client: httpx.AsyncClient | None = None,
        tracking: TrackingPolicy | TrackingMode | str | None = None,
        worker: str | None = None,
        rng: random.Random | None = None,
    ) -> AsyncIterator[App]:
        """An App whose vendors are the in-process simulator, reached through the real
        adapters and official SDKs over an ASGI transport. Providers `openai`,
        `anthropic` and `gemini` (and their aliases `simulator`, `simulator-anthropic`,
        `simulator-gemini`) all go to it.

        `clock` defaults to one running `speed` times real time (the vendor's clock: the
        store still gets real UTC, see `clock.store_time`); `faults` to
        KILN_SIMULATOR_FAULTS; `store` (not closed here) to `database_url` or the
        settings' database."""
        settings = settings or Settings.load()
        vendor_clock = clock or ScaledClock(speed)
        # The simulator's timeline runs on the virtual clock; the store and the
        # engine on real time, with the engine's waits scaled (clock.store_time).
        clock, scale = store_time(vendor_clock)
        if faults is None:
            faults = parse_faults(settings.simulator_faults)
        simulator = Simulator(
            clock=vendor_clock,
            seed=seed,
            faults=faults,
            base_url=SIM_BASE_URL,
            webhook_urls=webhook_urls,
            webhook_secret=webhook_secret,
            webhook_client=webhook_client,
            signing_clock=clock,  # signatures are checked against the receiver's clock
        )
        async with AsyncExitStack() as stack:
            http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=simulator.app), base_url=SIM_BASE_URL
            )
            stack.push_async_callback(http.aclose)
            factories: dict[str, Callable[[], Provider]] = {
                "openai": lambda: make_provider(
                    "openai", http_client=http, base_url=simulator.openai_base_url, api_key="sim"
                ),
                "anthropic": lambda: make_provider(
                    "anthropic",
                    http_client=http,
                    base_url=simulator.anthropic_base_url,
                    api_key="sim",
                ),
                "gemini": lambda: make_provider(
                    "gemini", http_client=http, base_url=simulator.gemini_base_url, api_key="sim"
                ),
            }
            providers = _Aliased(LazyProviders(factories), SIMULATED)
            stack.push_async_callback(providers.aclose)
            if store is None:
                store = await Store.open(database_url or settings.database_url, clock=clock)
                stack.push_async_callback(store.close)
            app = cls(
                settings=settings,
                store=store,
                providers=providers,
                clock=clock,
                simulator=simulator,
                tracking=tracking,
                worker=worker,
                rng=rng,
                vendor_clock=vendor_clock,
                time_scale=scale,
            )
            try:
                yield app
            finally:
                await app.aclose()

    async def aclose(self) -> None:
        await self._closers.aclose()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Aliased(Mapping[str, Provider]):
    """The simulator's providers under their vendor names and their aliases."""

    def __init__(self, inner: LazyProviders, aliases: Mapping[str, str]) -> None:
        self._inner = inner
        self._aliases = dict(aliases)

    def __getitem__(self, name: str) -> Provider:
        return self._inner[self._aliases.get(name, name)]

    def __iter__(self) -> Iterator[str]:
        yield from self._inner
        yield from self._aliases

    def __len__(self) -> int:
        return len(self._inner) + len(self._aliases)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _real_provider(name: str, settings: Settings) -> Provider:
    key = {
        "openai": settings.openai_api_key,
        "anthropic": settings.anthropic_api_key,
        "gemini": settings.gemini_api_key,
    }[name]
    if key is None:
        variable = {
            "openai": "OPENAI_API_KEY",
            "anthropic": "ANTHROPIC_API_KEY",
            "gemini": "GEMINI_API_KEY",
        }[name]
        raise ConfigError(
            f"{variable} is not set: the {name} provider needs it (or use --provider"
            f" simulator{'' if name == 'openai' else '-' + name} to try things with no key)",
            name=variable,
        )
    base_url = {
        "openai": settings.openai_base_url,
        "anthropic": settings.anthropic_base_url,
        "gemini": settings.gemini_base_url,
    }[name]
    kwargs: dict[str, Any] = {"api_key": key.get_secret_value()}
    if base_url:
        kwargs["base_url"] = base_url
    return make_provider(name, **kwargs)


__all__ = ["DEMO_SPEED", "SIMULATED", "VENDORS", "App", "LazyProviders", "fresh_sqlite_url"]
