"""Builders shared by the adapter tests."""

from __future__ import annotations

from batchkiln.clock import FakeClock
from batchkiln.lifecycle import ENDED_AT_VENDOR
from batchkiln.providers import CreateSpec, Provider, ResultLine, VendorBatch, WireRequest
from batchkiln.simulator import Simulator

SIM_URL = "http://sim.test"
PAGE = 3  # list page size, small so a handful of batches spans pages
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
GEMINI_MODEL = "gemini-2.5-flash"


def openai_spec(tag: str, n: int = 4, *, endpoint: str = "/v1/chat/completions") -> CreateSpec:
    requests = [
        WireRequest(f"{tag}-{i}", {"messages": [{"role": "user", "content": f"question {i}"}]})
        for i in range(n)
    ]
    return CreateSpec(
        batch_key=f"key-{tag}", tag=tag, model=OPENAI_MODEL, endpoint=endpoint, requests=requests
    )


def anthropic_spec(tag: str, n: int = 4) -> CreateSpec:
    requests = [
        WireRequest(
            f"{tag}-{i}",
            {"max_tokens": 64, "messages": [{"role": "user", "content": f"question {i}"}]},
        )
        for i in range(n)
    ]
    return CreateSpec(
        batch_key=f"key-{tag}",
        tag=tag,
        model=ANTHROPIC_MODEL,
        endpoint="/v1/messages",
        requests=requests,
    )


def gemini_spec(tag: str, n: int = 4, **extra: object) -> CreateSpec:
    requests = [
        WireRequest(
            f"{tag}-{i}",
            {
                "model": GEMINI_MODEL,
                "contents": [{"role": "user", "parts": [{"text": f"question {i}"}]}],
                "generationConfig": {"maxOutputTokens": 64},
            },
        )
        for i in range(n)
    ]
    return CreateSpec(
        batch_key=f"key-{tag}",
        tag=tag,
        model=GEMINI_MODEL,
        endpoint="generateContent",
        requests=requests,
        **extra,  # type: ignore[arg-type]
    )


async def run_to_end(
    provider: Provider, vendor_id: str, clock: FakeClock, *, step: float = 60.0, limit: int = 100
) -> VendorBatch:
    """Poll, advancing the fake clock `step` seconds between looks, until the batch ends."""
    for _ in range(limit):
        batch = await provider.retrieve(vendor_id)
        if batch.state in ENDED_AT_VENDOR:
            return batch
        clock.advance(step)
    raise AssertionError(f"{vendor_id} did not end in {limit * step} virtual seconds")


async def collect(provider: Provider, batch: VendorBatch) -> dict[str, ResultLine]:
    lines = [line async for line in provider.results(batch)]
    by_id = {line.wire_id: line for line in lines}
    assert len(by_id) == len(lines), "a result line appeared twice"
    return by_id


def calls(sim: Simulator, method: str, route: str) -> int:
    return sim.counters.calls[(method, route)]


def first_attempts(sim: Simulator, method: str, route: str) -> int:
    """Calls that carried x-stainless-retry-count: 0 (the SDK's first attempt)."""
    return sim.counters.retry_counts[(method, route, 0)]
