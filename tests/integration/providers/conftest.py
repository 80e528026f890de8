"""Fixtures for the adapter tests: a simulator on a fake clock, and the adapters
reaching it through the official SDKs over one in-process httpx ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from batchkiln.clock import FakeClock
from batchkiln.providers import AnthropicProvider, GeminiProvider, OpenAIProvider
from batchkiln.simulator import Faults, Simulator

from .helpers import PAGE, SIM_URL


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[Simulator]:
    s = Simulator(clock=clock, seed=0, faults=Faults(), base_url=SIM_URL)
    yield s
    await s.aclose()


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url=SIM_URL
    ) as client:
        yield client


@pytest.fixture
async def oai(sim: Simulator, http: httpx.AsyncClient) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        http_client=http, base_url=sim.openai_base_url, api_key="test", list_page_size=PAGE
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def ant(sim: Simulator, http: httpx.AsyncClient) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(
        http_client=http, base_url=sim.anthropic_base_url, api_key="test", list_page_size=PAGE
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def gem(sim: Simulator, http: httpx.AsyncClient) -> AsyncIterator[GeminiProvider]:
    provider = GeminiProvider(
        http_client=http, base_url=sim.gemini_base_url, api_key="test", list_page_size=PAGE
    )
    yield provider
    await provider.aclose()
