"""The Anthropic adapter through the official `anthropic` SDK against the simulator."""

from __future__ import annotations

import httpx
import orjson
import pytest

from batchkiln.clock import FakeClock
from batchkiln.lifecycle import State
from batchkiln.providers import (
    AmbiguousOutcome,
    AnthropicProvider,
    CreateSpec,
    FailureClass,
    Outcome,
    VendorError,
    WireRequest,
)
from batchkiln.simulator import Faults, Simulator

from .helpers import ANTHROPIC_MODEL, anthropic_spec, calls, collect, first_attempts, run_to_end

R, P = FailureClass.RETRYABLE, FailureClass.PERMANENT
BATCHES = "/v1/messages/batches"


async def test_create_poll_and_stream_results(
    ant: AnthropicProvider, sim: Simulator, clock: FakeClock
) -> None:
    """A batch goes in_progress -> ended/completed and streams billed results with usage."""
    spec = anthropic_spec("aa1", n=5)
    created = await ant.create(spec)
    assert (created.state, created.total, created.vendor_status) == (
        State.IN_PROGRESS,
        5,
        "in_progress",
    )
    assert created.created_at == clock.now() and created.tag is None
    assert created.expires_at == clock.now() + 86400
    ended = await run_to_end(ant, created.vendor_id, clock)
    assert (ended.state, ended.total, ended.succeeded, ended.failed) == (State.COMPLETED, 5, 5, 0)
    assert ended.ended_at is not None and ended.ended_at > created.created_at
    results = await collect(ant, ended)
    assert set(results) == {r.wire_id for r in spec.requests}
    for wire_id, line in results.items():
        assert line.outcome == Outcome.SUCCEEDED and line.billed and line.failure is None
        assert line.usage.input_tokens > 0 and line.usage.output_tokens > 0
        assert line.response is not None and line.response["type"] == "message"
        assert line.response["model"] == ANTHROPIC_MODEL
        assert orjson.loads(line.raw)["custom_id"] == wire_id


async def test_partial_batch_failure_classes(
    ant: AnthropicProvider, sim: Simulator, clock: FakeClock
) -> None:
    """Errored requests end the batch PARTIAL, classified by error type and unbilled."""
    sim.set_batch_faults(
        "pp1",
        Faults(
            fail_ids={
                "1": "invalid_request",
                "2": "server_error",
                "3": "timeout",
                "4": "overloaded",
            }
        ),
    )
    created = await ant.create(anthropic_spec("pp1", n=6))
    ended = await run_to_end(ant, created.vendor_id, clock)
    assert (ended.state, ended.succeeded, ended.failed) == (State.PARTIAL, 2, 4)
    results = await collect(ant, ended)
    got = {
        wid: (r.outcome, r.failure, r.billed, (r.error or {}).get("code"))
        for wid, r in results.items()
    }
    assert got == {
        "pp1-0": (Outcome.SUCCEEDED, None, True, None),
        "pp1-1": (Outcome.ERRORED, P, False, "invalid_request_error"),
        "pp1-2": (Outcome.ERRORED, R, False, "api_error"),
        "pp1-3": (Outcome.ERRORED, R, False, "timeout_error"),
        "pp1-4": (Outcome.ERRORED, R, False, "overloaded_error"),
        "pp1-5": (Outcome.SUCCEEDED, None, True, None),
    }


async def test_all_errored_batch_is_partial(
    ant: AnthropicProvider, sim: Simulator, clock: FakeClock
) -> None:
    """An ended batch in which every request errored ran: PARTIAL with 0 succeeded."""
    sim.set_batch_faults("ff1", Faults(permanent_rate=1.0))
    created = await ant.create(anthropic_spec("ff1", n=3))
    ended = await run_to_end(ant, created.vendor_id, clock)
    assert (ended.vendor_status, ended.state, ended.failed) == ("ended", State.PARTIAL, 3)


async def test_expired_batch(ant: AnthropicProvider, sim: Simulator, clock: FakeClock) -> None:
    """A batch past its 24 h window maps to EXPIRED; unfinished requests are EXPIRED, unbilled."""
    sim.set_batch_faults("ex1", Faults(expire=True, expire_finished_share=0.5))
    created = await ant.create(anthropic_spec("ex1", n=6))
    ended = await run_to_end(ant, created.vendor_id, clock, step=3600)
    assert (ended.state, ended.succeeded, ended.failed) == (State.EXPIRED, 3, 3)
    results = (await collect(ant, ended)).values()
    expired = [r for r in results if r.outcome == Outcome.EXPIRED]
    assert len(expired) == 3 and all(r.failure == R and not r.billed for r in expired)


async def test_cancel(ant: AnthropicProvider, clock: FakeClock) -> None:
    """Cancel moves the batch to CANCELLING, then CANCELLED with unrun requests CANCELLED."""
    created = await ant.create(anthropic_spec("cc1", n=4))
    clock.advance(10)
    assert (await ant.cancel(created.vendor_id)).state == State.CANCELLING
    ended = await run_to_end(ant, created.vendor_id, clock)
    assert ended.state == State.CANCELLED
    results = await collect(ant, ended)
    assert {r.outcome for r in results.values()} == {Outcome.CANCELLED}
    assert all(r.failure == R and not r.billed for r in results.values())


async def test_list_recent_paginates_newest_first(
    ant: AnthropicProvider, sim: Simulator, clock: FakeClock
) -> None:
    """list_recent walks pages newest first and stops at the first page past `since`."""
    ids = []
    for i in range(7):
        ids.append((await ant.create(anthropic_spec(f"ls{i}", n=1))).vendor_id)
        clock.advance(1)
    since = clock.now() - 5
    before = calls(sim, "GET", BATCHES)
    assert [b.vendor_id async for b in ant.list_recent(since=since)] == ids[::-1][:5]
    assert calls(sim, "GET", BATCHES) - before == 2
    assert [b.vendor_id async for b in ant.list_recent(since=0)] == ids[::-1]


@pytest.mark.parametrize("drop", ["cut", "500"])
async def test_ambiguous_create_is_found_by_window_and_count(
    ant: AnthropicProvider, sim: Simulator, clock: FakeClock, drop: str
) -> None:
    """A create committed before the reply was lost is AmbiguousOutcome; find_candidates
    returns the batches of the window with the same request count, and nothing older."""
    await ant.create(anthropic_spec("old1", n=4))  # same size, before the window
    clock.advance(300)
    since = clock.now()
    await ant.create(anthropic_spec("oth1", n=3))  # in the window, another size
    sim.set_batch_faults("am1", Faults(drop_create=drop))  # type: ignore[arg-type]
    spec = anthropic_spec("am1", n=4)
    with pytest.raises(AmbiguousOutcome):
        await ant.create(spec)
    assert sim.counters.created_by_tag["am1"] == 1
    assert calls(sim, "POST", BATCHES) == first_attempts(sim, "POST", BATCHES) == 3
    found = await ant.find_candidates(spec, since=since)
    assert len(found) == 1 and found[0].total == 4
    ended = await run_to_end(ant, found[0].vendor_id, clock)
    assert {line.wire_id async for line in ant.results(ended)} == {
        r.wire_id for r in spec.requests
    }  # the engine's confirmation by tag prefix


async def test_permanent_400_on_create(ant: AnthropicProvider, sim: Simulator) -> None:
    """A 400 on create is a definite, non-retryable VendorError carrying the vendor's message."""
    spec = CreateSpec(
        batch_key="k",
        tag="bad1",
        model=ANTHROPIC_MODEL,
        endpoint="/v1/messages",
        requests=[WireRequest("bad1.0", {"max_tokens": 8, "messages": []})],
    )
    with pytest.raises(VendorError) as caught:
        await ant.create(spec)
    err = caught.value
    assert not isinstance(err, AmbiguousOutcome)
    assert (err.retryable, err.status, err.code) == (False, 400, "invalid_request_error")
    assert err.message.startswith("requests.0.custom_id: String should match pattern")
    assert sim.counters.batches_created == 0


async def test_429_is_retryable_with_retry_after(ant: AnthropicProvider, sim: Simulator) -> None:
    """A 429 on create is retryable with the server's retry-after, after a single attempt."""
    sim.set_batch_faults("rl1", Faults(rate_limit_create=1, retry_after_seconds=2.5))
    with pytest.raises(VendorError) as caught:
        await ant.create(anthropic_spec("rl1"))
    err = caught.value
    assert (err.retryable, err.status, err.retry_after) == (True, 429, 2.5)
    assert not isinstance(err, AmbiguousOutcome)
    assert calls(sim, "POST", BATCHES) == first_attempts(sim, "POST", BATCHES) == 1
    assert sim.counters.batches_created == 0


async def test_reads_are_single_attempts(ant: AnthropicProvider, sim: Simulator) -> None:
    """A 5xx/529 on a read is one attempt and a retryable VendorError (not ambiguous)."""
    created = await ant.create(anthropic_spec("rd1"))
    sim.set_batch_faults("rd1", Faults(read_5xx_count=1))
    route = "/v1/messages/batches/{batch_id}"
    with pytest.raises(VendorError) as caught:
        await ant.retrieve(created.vendor_id)
    assert caught.value.retryable and caught.value.status in (500, 529)
    assert not isinstance(caught.value, AmbiguousOutcome)
    assert calls(sim, "GET", route) == first_attempts(sim, "GET", route) == 1


async def test_results_before_the_end_are_refused(ant: AnthropicProvider) -> None:
    """Asking for the results of a batch still processing is a retryable VendorError."""
    created = await ant.create(anthropic_spec("rr1"))
    with pytest.raises(VendorError) as caught:
        [line async for line in ant.results(created)]
    assert caught.value.retryable


async def test_aclose_leaves_the_callers_client_open(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    """Closing an adapter built on the caller's httpx client does not close that client."""
    provider = AnthropicProvider(http_client=http, base_url=sim.anthropic_base_url, api_key="k")
    await provider.create(anthropic_spec("ac1", n=1))
    await provider.aclose()
    assert not http.is_closed
    assert (await http.get("/v1/messages/batches", headers={"x-api-key": "k"})).status_code == 200
