"""Fault injection through the official SDKs: per-request failures (listed and by rate,
reproducible from a seed), batch rejection, rate limits, 5xx on reads, per-batch
overrides and `x-should-retry`."""

from __future__ import annotations

import anthropic
import openai
import pytest

from batchkiln.clock import FakeClock
from batchkiln.simulator import BatchMatch, Faults, Simulator

from .helpers import (
    SIM_URL,
    anthropic_requests,
    chat_lines,
    file_lines,
    openai_client,
    raw_batch,
    submit,
)


def sdk(sim: Simulator, max_retries: int = 2) -> openai.AsyncOpenAI:
    return openai_client(sim.app, sim.openai_base_url, max_retries=max_retries)


async def failed_ids(sim: Simulator, clock: FakeClock, n: int, tag: str = "t1") -> list[str]:
    """Run one n-request batch to the end and return the custom_ids that failed."""
    client = sdk(sim, max_retries=0)
    batch = await submit(client, chat_lines(n, tag=tag), tag=tag)
    clock.advance(3600)
    done = await raw_batch(client, batch.id)
    await client.close()
    if done.error_file_id is None:
        return []
    return sorted(line["custom_id"] for line in await file_lines(sdk(sim), done.error_file_id))


async def test_exactly_the_listed_ids_time_out_then_succeed_on_retry(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """95 of 100 succeed and the 5 listed hit a model timeout; a retry batch succeeds."""
    listed = [f"r{i}" for i in (3, 17, 42, 64, 99)]
    sim.faults = Faults(fail_ids=dict.fromkeys(listed, "timeout"))
    batch = await submit(oai, chat_lines(100))
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (95, 5)
    assert done.error_file_id is not None and done.output_file_id is not None
    errors = await file_lines(oai, done.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == sorted(f"t1-{i}" for i in listed)
    assert all(
        line["response"] is None and line["error"]["code"] == "request_timeout" for line in errors
    )
    retry = "\n".join(f"t2-{i}" for i in listed)
    assert retry  # the child batch re-sends the same requests under a new tag
    assert await failed_ids(sim, clock, 100, tag="t2") == []


async def test_failure_kinds_have_their_wire_shapes(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """server_error is a 500 line, overloaded a 503, invalid_request a 400."""
    sim.faults = Faults(
        fail_ids={"r0": "server_error", "r1": "overloaded", "r2": "invalid_request"}
    )
    batch = await submit(oai, chat_lines(4))
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.error_file_id is not None
    lines = {line["custom_id"]: line for line in await file_lines(oai, done.error_file_id)}
    statuses = {cid: line["response"]["status_code"] for cid, line in lines.items()}
    assert statuses == {"t1-r0": 500, "t1-r1": 503, "t1-r2": 400}
    assert lines["t1-r0"]["response"]["body"]["error"]["type"] == "server_error"


async def test_rate_based_failures_reproduce_from_the_seed(clock: FakeClock) -> None:
    """The same seed gives the same failing ids; another seed gives others."""
    faults = Faults(retryable_rate=0.1, permanent_rate=0.05)
    runs = [
        await failed_ids(
            Simulator(clock=clock, seed=seed, faults=faults, base_url=SIM_URL), clock, 400
        )
        for seed in (7, 7, 8)
    ]
    assert runs[0] == runs[1] != runs[2]
    assert 30 <= len(runs[0]) <= 90  # about 15% of 400


async def test_faults_seed_overrides_the_simulator_seed(clock: FakeClock) -> None:
    """Faults(seed=...) replaces the simulator's seed in the outcome draws."""
    runs = [
        await failed_ids(
            Simulator(clock=clock, seed=1, faults=Faults(retryable_rate=0.2, seed=seed)), clock, 100
        )
        for seed in (3, 3, 4)
    ]
    assert runs[0] == runs[1] != runs[2]


async def test_reject_invalid_json_line_fails_the_batch_with_a_line_number(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """A malformed line fails the batch after validation with invalid_json_line."""
    content = chat_lines(2) + b"{not json\n" + chat_lines(1, tag="z")
    batch = await submit(oai, content)
    assert batch.status == "validating"
    clock.advance(60)
    failed = await raw_batch(oai, batch.id)
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data is not None
    error = failed.errors.data[0]
    assert (error.code, error.line, error.param) == ("invalid_json_line", 3, None)
    assert failed.output_file_id is None and failed.error_file_id is None


async def test_forced_rejection_reproduces_its_line(clock: FakeClock) -> None:
    """reject_batch="invalid_json_line" fails a valid file at a seeded line number."""
    lines = []
    for _ in range(2):
        sim = Simulator(clock=clock, seed=5, faults=Faults(reject_batch="invalid_json_line"))
        client = sdk(sim, max_retries=0)
        batch = await submit(client, chat_lines(50))
        clock.advance(60)
        failed = await raw_batch(client, batch.id)
        assert failed.status == "failed" and failed.errors and failed.errors.data
        lines.append(failed.errors.data[0].line)
    assert lines[0] == lines[1] and lines[0] is not None and 1 <= lines[0] <= 50


async def test_enqueued_token_limit_fails_the_batch_that_goes_over(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Over the enqueued-token limit a batch fails with token_limit_exceeded; once the
    earlier batch finishes there is room again."""
    sim.faults = Faults(enqueued_token_limit=600)
    first = await submit(oai, chat_lines(10, words=20))
    second = await submit(oai, chat_lines(10, words=20), tag="t2")
    clock.advance(60)
    assert (await raw_batch(oai, first.id)).status == "in_progress"
    over = await raw_batch(oai, second.id)
    assert over.status == "failed" and over.errors and over.errors.data
    assert over.errors.data[0].code == "token_limit_exceeded"
    assert over.errors.data[0].line is None and "Limit: 600" in str(over.errors.data[0].message)
    clock.advance(3600)
    third = await submit(oai, chat_lines(10, words=20), tag="t3")
    clock.advance(60)
    assert (await raw_batch(oai, third.id)).status == "in_progress"


async def test_forced_token_limit_rejection(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """reject_batch="token_limit_exceeded" fails the batch with that code."""
    sim.faults = Faults(reject_batch="token_limit_exceeded")
    batch = await submit(oai, chat_lines(3))
    clock.advance(60)
    failed = await raw_batch(oai, batch.id)
    assert failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "token_limit_exceeded"


async def test_rate_limited_create_carries_retry_after_and_the_sdk_retries(
    sim: Simulator,
) -> None:
    """The next N creates get 429 with retry-after; the SDK waits and retries."""
    sim.faults = Faults(rate_limit_create=1, retry_after_seconds=0.01)
    plain = sdk(sim, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await submit(plain, chat_lines(1))
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "10"
    assert headers["x-should-retry"] == "true"
    sim.faults = Faults(rate_limit_create=1, retry_after_seconds=0.01)
    batch = await submit(sdk(sim), chat_lines(1))
    assert batch.id in sim.openai_batches
    assert sim.counters.retry_counts[("POST", "/v1/batches", 1)] == 1
    assert sim.counters.faults["rate_limit_create"] == 2
    assert sim.counters.batches_created == 1


async def test_rate_limit_rate_hits_any_call(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    """rate_limit_rate=1 answers every vendor call with 429."""
    sim.faults = Faults(rate_limit_rate=1.0, retry_after_seconds=2)
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.batches.list()
    assert caught.value.response.headers["retry-after"] == "2"
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "requests"


async def test_read_5xx_count_fails_the_next_reads_then_recovers(
    sim: Simulator, oai: openai.AsyncOpenAI
) -> None:
    """read_5xx_count=2 turns the next two GETs into 5xx; writes are untouched."""
    batch = await submit(oai, chat_lines(1))
    sim.faults = Faults(read_5xx_count=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await oai.batches.retrieve(batch.id)
        assert caught.value.status_code in (500, 503)
        assert caught.value.response.headers["x-should-retry"] == "true"
    assert (await oai.batches.retrieve(batch.id)).id == batch.id
    assert sim.counters.faults["read_5xx"] == 2


async def test_sdk_retries_a_read_5xx_and_the_retry_count_is_recorded(sim: Simulator) -> None:
    """With default retries a 5xx read is retried; x-stainless-retry-count 1 is logged."""
    client = sdk(sim)
    batch = await submit(client, chat_lines(1))
    sim.faults = Faults(read_5xx_count=1)
    assert (await client.batches.retrieve(batch.id)).id == batch.id
    route = ("GET", "/v1/batches/{batch_id}")
    assert sim.counters.calls[route] == 2
    assert sim.counters.retry_counts[(*route, 0)] == sim.counters.retry_counts[(*route, 1)] == 1


async def test_read_5xx_rate_is_reproducible(clock: FakeClock) -> None:
    """The pattern of failing reads is the same for the same seed."""
    patterns = []
    for _ in range(2):
        sim = Simulator(clock=clock, seed=11, faults=Faults(read_5xx_rate=0.5))
        client = sdk(sim, max_retries=0)
        pattern = []
        for _ in range(20):
            try:
                await client.batches.list()
                pattern.append(True)
            except openai.InternalServerError:
                pattern.append(False)
        patterns.append(pattern)
    assert patterns[0] == patterns[1] and 3 <= patterns[0].count(False) <= 17


async def test_permanent_errors_say_do_not_retry(sim: Simulator) -> None:
    """A 400 carries x-should-retry: false, so the SDK sends it only once."""
    client = sdk(sim)
    file = await client.files.create(file=("in.jsonl", chat_lines(1)), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        await client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert sim.counters.calls[("POST", "/v1/batches")] == 1


async def test_per_batch_override_matches_the_openai_metadata_tag(
    sim: Simulator, clock: FakeClock
) -> None:
    """set_batch_faults(tag) applies to batches whose metadata kiln_tag is that tag."""
    sim.set_batch_faults("bad", Faults(permanent_rate=1.0))
    assert len(await failed_ids(sim, clock, 5, tag="bad")) == 5
    assert await failed_ids(sim, clock, 5, tag="good") == []
    sim.clear_batch_faults("bad")
    assert await failed_ids(sim, clock, 5, tag="bad") == []


async def test_per_batch_override_matches_the_anthropic_custom_id_prefix(
    sim: Simulator, ant: anthropic.AsyncAnthropic, clock: FakeClock
) -> None:
    """On Anthropic the tag is the custom_id prefix before the first "-"."""
    sim.set_batch_faults("k3f9a2c1", Faults(retryable_rate=1.0, retryable_kinds=("overloaded",)))
    bad = await ant.messages.batches.create(requests=anthropic_requests(3, tag="k3f9a2c1"))
    good = await ant.messages.batches.create(requests=anthropic_requests(3, tag="other"))
    clock.advance(3600)
    assert (await ant.messages.batches.retrieve(bad.id)).request_counts.errored == 3
    assert (await ant.messages.batches.retrieve(good.id)).request_counts.succeeded == 3
    results = [r.result async for r in await ant.messages.batches.results(bad.id)]
    assert {r.error.error.type for r in results if r.type == "errored"} == {"overloaded_error"}


async def test_per_batch_override_by_predicate(sim: Simulator, clock: FakeClock) -> None:
    """A callable matcher sees the vendor, tag and metadata of the batch being created."""

    def match(batch: BatchMatch) -> bool:
        return batch.vendor == "openai" and batch.metadata.get("kiln_tag", "").startswith("x")

    sim.set_batch_faults(match, Faults(permanent_rate=1.0))
    assert len(await failed_ids(sim, clock, 2, tag="xy")) == 2
    assert await failed_ids(sim, clock, 2, tag="yx") == []


async def test_anthropic_rejections_and_rate_limits_happen_at_create(
    sim: Simulator, ant: anthropic.AsyncAnthropic
) -> None:
    """Anthropic has no failed state: rejection is a 400, a full queue a 429."""
    sim.faults = Faults(reject_batch="invalid_json_line")
    with pytest.raises(anthropic.BadRequestError):
        await ant.messages.batches.create(requests=anthropic_requests(1))
    sim.faults = Faults(enqueued_token_limit=10, retry_after_seconds=3)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ant.messages.batches.create(requests=anthropic_requests(5))
    assert caught.value.response.headers["retry-after"] == "3"
    sim.faults = Faults(rate_limit_create=1)
    with pytest.raises(anthropic.RateLimitError):
        await ant.messages.batches.create(requests=anthropic_requests(1))
    assert sim.counters.batches_created == 0
