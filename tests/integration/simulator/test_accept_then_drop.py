"""Accept-then-drop: the create commits the batch, then the caller sees a cut connection
or a 500, so it cannot know it succeeded. The SDKs' default retries then create more
than one batch (the double-billing case)."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest

from batchkiln.simulator import Faults, Simulator

from .helpers import anthropic_requests, chat_lines, openai_client, submit


def sdk(sim: Simulator, max_retries: int, transport: str = "httpx") -> openai.AsyncOpenAI:
    return openai_client(sim.app, sim.openai_base_url, max_retries=max_retries, transport=transport)


async def test_cut_create_surfaces_as_connection_error_yet_the_batch_exists(
    sim: Simulator,
) -> None:
    """With retries off the caller gets APIConnectionError, but the batch was created."""
    client = sdk(sim, max_retries=0)
    file = await client.files.create(file=("in.jsonl", chat_lines(2)), purpose="batch")
    sim.faults = Faults(drop_create="cut", drop_create_count=1)
    with pytest.raises(openai.APIConnectionError):
        await client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"kiln_tag": "t1"},
        )
    listed = (await client.batches.list()).data
    assert len(listed) == 1 and listed[0].metadata == {"kiln_tag": "t1"}
    assert sim.counters.faults["drop_create_cut"] == 1


@pytest.mark.parametrize("transport", ["httpx", "httpx2"])
async def test_sdk_default_retries_after_a_cut_create_two_batches(
    sim: Simulator, transport: str
) -> None:
    """openai's default max_retries=2 resends the create: two batches, one tag (over
    either HTTP client library)."""
    client = sdk(sim, max_retries=2, transport=transport)
    sim.faults = Faults(drop_create="cut")
    batch = await submit(client, chat_lines(2), tag="dup")
    assert sim.counters.batches_created == 2
    assert sim.counters.created_by_tag["dup"] == 2
    assert sim.counters.retry_counts[("POST", "/v1/batches", 1)] == 1
    assert batch.id == list(sim.openai_batches)[-1]


async def test_sdk_default_retries_after_a_500_create_two_batches(sim: Simulator) -> None:
    """A 500 after commit is retried by the SDK too, creating a second batch."""
    client = sdk(sim, max_retries=2)
    sim.faults = Faults(drop_create="500")
    await submit(client, chat_lines(2), tag="dup")
    assert sim.counters.batches_created == 2
    assert sim.counters.faults["drop_create_500"] == 1


async def test_500_drop_with_retries_off_is_an_internal_server_error(sim: Simulator) -> None:
    """The 500 says the SDK may retry (x-should-retry: true) though the batch exists."""
    client = sdk(sim, max_retries=0)
    sim.faults = Faults(drop_create="500")
    with pytest.raises(openai.InternalServerError) as caught:
        await submit(client, chat_lines(1))
    assert caught.value.response.headers["x-should-retry"] == "true"
    assert len(sim.openai_batches) == 1


async def test_anthropic_sdk_retries_after_a_cut_create_two_batches(sim: Simulator) -> None:
    """The anthropic SDK's default retries double-create on a cut connection as well."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sim.app))
    client = anthropic.AsyncAnthropic(
        base_url=sim.anthropic_base_url, api_key="k", http_client=http
    )
    sim.faults = Faults(drop_create="cut")
    await client.messages.batches.create(requests=anthropic_requests(2, tag="dup"))
    assert sim.counters.created_by_vendor["anthropic"] == 2
    assert sim.counters.created_by_tag["dup"] == 2
    page = await client.messages.batches.list()
    assert len(page.data) == 2


async def test_drop_count_limits_how_many_creates_are_dropped(sim: Simulator) -> None:
    """drop_create_count=1 drops one create; the next goes through normally."""
    client = sdk(sim, max_retries=0)
    sim.faults = Faults(drop_create="cut", drop_create_count=1)
    with pytest.raises(openai.APIConnectionError):
        await submit(client, chat_lines(1))
    await submit(client, chat_lines(1))
    assert sim.counters.batches_created == 2 and sim.counters.faults["drop_create_cut"] == 1
