"""Fixtures for the simulator tests: a simulator on a fake clock, and the official
`openai` and `anthropic` SDKs pointed at it over in-process ASGI transports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import httpx2
import openai
import pytest

from batchkiln.clock import FakeClock
from batchkiln.simulator import Faults, Simulator

from .helpers import SIM_URL, WebhookReceiver, openai_client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def receiver() -> WebhookReceiver:
    """An in-process webhook endpoint that records what it is sent."""
    return WebhookReceiver()


@pytest.fixture
async def sim(clock: FakeClock, receiver: WebhookReceiver) -> AsyncIterator[Simulator]:
    """A simulator with no faults, posting webhooks to `receiver`."""
    hooks = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app))
    s = Simulator(
        clock=clock,
        seed=0,
        faults=Faults(),
        base_url=SIM_URL,
        webhook_urls=[receiver.url],
        webhook_client=hooks,
    )
    yield s
    await s.aclose()
    await hooks.aclose()


@pytest.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI SDK on the simulator, with retries off (tests that need the
    SDK's default retries build their own client)."""
    client = openai_client(sim.app, sim.openai_base_url, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def ant(sim: Simulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official Anthropic SDK on the simulator (it only accepts httpx2 clients)."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sim.app))
    client = anthropic.AsyncAnthropic(
        base_url=sim.anthropic_base_url, api_key="sk-ant-test", http_client=http, max_retries=0
    )
    yield client
    await client.close()
