"""The standalone server over real loopback HTTP: uvicorn on a free 127.0.0.1 port in a
thread, reached by the SDKs with their default HTTP clients. The only test that waits
on real time (SDK retry backoff and the network)."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import openai
import pytest

from batchkiln.clock import FakeClock
from batchkiln.simulator import (
    Faults,
    Simulator,
    serve_app_in_thread,
    serve_in_thread,
    standalone,
)

from .helpers import WebhookReceiver, anthropic_requests, chat_lines, file_lines, submit


async def test_both_sdks_over_loopback_including_a_real_cut() -> None:
    """Upload, create, list, results, a webhook from the background loop and a cut
    connection all work over TCP."""
    clock = FakeClock()
    receiver = WebhookReceiver()
    with serve_app_in_thread(receiver.app) as hooks_url:
        sim = Simulator(clock=clock, seed=0, webhook_urls=[f"{hooks_url}/openai"])
        await _exercise(sim, receiver)


async def _exercise(sim: Simulator, receiver: WebhookReceiver) -> None:
    with serve_in_thread(sim) as url:
        assert url.startswith("http://127.0.0.1:")
        oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=2)
        ant = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        batch = await submit(oai, chat_lines(3))
        message_batch = await ant.messages.batches.create(requests=anthropic_requests(3))
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/_sim/clock/advance", json={"seconds": 3600})
        done = await oai.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id
        assert len(await file_lines(oai, done.output_file_id)) == 3
        results = [r async for r in await ant.messages.batches.results(message_batch.id)]
        assert [r.result.type for r in results] == ["succeeded"] * 3
        for _ in range(300):  # the server's loop delivers every 0.2 s of real time
            if receiver.received:
                break
            await asyncio.sleep(0.01)
        [hook] = receiver.received
        event = oai.webhooks.unwrap(hook.body, hook.headers, secret=sim.webhook_secret)
        assert event.type == "batch.completed" and event.data.id == batch.id
        sim.faults = Faults(drop_create="cut")
        await submit(oai, chat_lines(1), tag="dup")
        assert sim.counters.created_by_tag["dup"] == 2
        assert [b.id async for b in oai.batches.list(limit=1)] == list(reversed(sim.openai_batches))
        await oai.close()
        await ant.close()


def test_serve_prints_the_environment_and_runs_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() prints OPENAI_BASE_URL, ANTHROPIC_BASE_URL and a whsec_ secret, then runs."""
    ran: dict[str, object] = {}

    def fake_run(app: object, **kwargs: object) -> None:
        ran.update(kwargs, app=app)

    monkeypatch.setattr("batchkiln.simulator.standalone.uvicorn.run", fake_run)
    printed: list[str] = []
    standalone.serve(
        "127.0.0.1", 8089, speed=3600, faults_spec="retryable=0.05,seed=7", echo=printed.append
    )
    text = "\n".join(printed)
    assert "OPENAI_BASE_URL=http://127.0.0.1:8089/v1" in text
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8089\n" in text
    assert "OPENAI_WEBHOOK_SECRET=whsec_" in text
    assert ran["port"] == 8089 and ran["host"] == "127.0.0.1"
    with pytest.raises(ValueError):
        standalone.serve(faults_spec="nonsense=1", echo=printed.append)


async def test_the_gemini_adapter_over_loopback_with_its_own_http_client() -> None:
    """google-genai with its default httpx client: upload, create, poll, stream results."""
    from batchkiln.lifecycle import State
    from batchkiln.providers import CreateSpec, GeminiProvider, WireRequest

    clock = FakeClock()
    sim = Simulator(clock=clock, seed=0)
    with serve_in_thread(sim) as url:
        provider = GeminiProvider(base_url=url, api_key="k")
        body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        spec = CreateSpec(
            "k", "lb1", "gemini-2.5-flash", "generateContent",
            [WireRequest(f"lb1-{i}", body) for i in range(3)],
        )  # fmt: skip
        try:
            created = await provider.create(spec)
            clock.advance(3600)
            ended = await provider.retrieve(created.vendor_id)
            assert ended.state == State.COMPLETED
            keys = sorted([line.wire_id async for line in provider.results(ended)])
            assert keys == ["lb1-0", "lb1-1", "lb1-2"]
        finally:
            await provider.aclose()
