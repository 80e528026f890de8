"""The Gemini adapter through the official `google-genai` SDK against the simulator."""

from __future__ import annotations

import httpx
import orjson
import pytest

from batchkiln.clock import FakeClock
from batchkiln.lifecycle import State
from batchkiln.providers import (
    AmbiguousOutcome,
    FailureClass,
    GeminiProvider,
    Outcome,
    VendorError,
)
from batchkiln.simulator import Faults, Simulator

from .helpers import calls, collect, gemini_spec, run_to_end

R, P = FailureClass.RETRYABLE, FailureClass.PERMANENT
CREATE = "/v1beta/models/{model}:batchGenerateContent"


class Recorder:
    """Stands in for the engine's store: the input file names recorded before create."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.names: list[str] = []
        self.batches_when_recorded: list[int] = []

    async def __call__(self, name: str) -> None:
        self.names.append(name)
        self.batches_when_recorded.append(len(self.sim.gemini_batches))


async def test_create_poll_and_stream_results(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """File mode: pending -> in_progress -> completed, results by key with usage, and
    the input file recorded before the create call."""
    recorder = Recorder(sim)
    spec = gemini_spec("ga1", n=5, record_input=recorder)
    created = await gem.create(spec)
    assert recorder.names == [created.input_file_id] and recorder.batches_when_recorded == [0]
    assert (created.state, created.total, created.tag) == (State.PENDING, 5, "ga1")
    assert created.vendor_id.startswith("batches/")
    assert created.expires_at == clock.now() + 48 * 3600
    clock.advance(60)
    running = await gem.retrieve(created.vendor_id)
    assert (running.state, running.vendor_status, running.total) == (
        State.IN_PROGRESS,
        "BATCH_STATE_RUNNING",
        5,
    )
    ended = await run_to_end(gem, created.vendor_id, clock)
    assert (ended.state, ended.succeeded, ended.failed) == (State.COMPLETED, 5, 0)
    assert ended.input_file_id == created.input_file_id and ended.ended_at is not None
    results = await collect(gem, ended)
    assert set(results) == {r.wire_id for r in spec.requests}
    for wire_id, line in results.items():
        assert line.outcome == Outcome.SUCCEEDED and line.billed
        assert line.usage.input_tokens > 0 and line.usage.output_tokens > 0
        assert orjson.loads(line.raw)["key"] == wire_id


async def test_the_input_file_uploaded_once_is_reused_on_a_resend(
    gem: GeminiProvider, sim: Simulator
) -> None:
    """A resend names the recorded file again instead of uploading another."""
    first = await gem.create(gemini_spec("ga2"))
    again = await gem.create(gemini_spec("ga2", input_file=first.input_file_id))
    assert again.input_file_id == first.input_file_id
    assert calls(sim, "POST", "/upload/v1beta/files") == 1


async def test_partial_failures_are_classified_by_google_status(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """Failed lines end the batch PARTIAL: 503/504/500 retryable, 400 permanent, unbilled."""
    sim.set_batch_faults(
        "gp1",
        Faults(
            fail_ids={
                "0": "overloaded",
                "1": "timeout",
                "2": "server_error",
                "3": "invalid_request",
            }
        ),
    )
    created = await gem.create(gemini_spec("gp1", n=5))
    ended = await run_to_end(gem, created.vendor_id, clock)
    assert (ended.state, ended.succeeded, ended.failed) == (State.PARTIAL, 1, 4)
    results = await collect(gem, ended)
    assert {k: (v.error or {}).get("code") for k, v in results.items() if v.error} == {
        "gp1-0": "UNAVAILABLE",
        "gp1-1": "DEADLINE_EXCEEDED",
        "gp1-2": "INTERNAL",
        "gp1-3": "INVALID_ARGUMENT",
    }
    assert [results[f"gp1-{i}"].failure for i in range(4)] == [R, R, R, P]
    assert not any(results[f"gp1-{i}"].billed for i in range(4))


async def test_results_out_of_order_still_land_by_key(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """With the out_of_order fault the lines come shuffled; every one keeps its key."""
    sim.faults = Faults(out_of_order=True)
    spec = gemini_spec("go1", n=12)
    ended = await run_to_end(gem, (await gem.create(spec)).vendor_id, clock)
    order = [line.wire_id async for line in gem.results(ended)]
    assert order != [r.wire_id for r in spec.requests]
    assert sorted(order) == sorted(r.wire_id for r in spec.requests)


async def test_inline_mode_with_dropped_keys_reports_never_guesses(
    sim: Simulator, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Inline responses whose echoed key is missing come back with an empty wire id (the
    engine reports them); none is matched by position."""
    gem = GeminiProvider(http_client=http, base_url=sim.gemini_base_url, api_key="k", mode="inline")
    sim.faults = Faults(drop_inline_keys=0.5)
    spec = gemini_spec("gi1", n=10)
    created = await gem.create(spec)
    assert created.input_file_id is None
    ended = await run_to_end(gem, created.vendor_id, clock)
    lines = [line async for line in gem.results(ended)]
    keyed = [line.wire_id for line in lines if line.wire_id]
    assert len(lines) == 10 and 0 < len(keyed) < 10
    assert set(keyed) <= {r.wire_id for r in spec.requests}
    assert all(line.outcome == Outcome.SUCCEEDED for line in lines)


async def test_expired_batch_has_no_results(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """EXPIRED after 48 h; no results to download."""
    sim.faults = Faults(expire=True)
    created = await gem.create(gemini_spec("ge1"))
    ended = await run_to_end(gem, created.vendor_id, clock, step=3600)
    assert ended.state == State.EXPIRED
    assert ended.ended_at is not None and ended.ended_at - created.created_at >= 48 * 3600
    assert [line async for line in gem.results(ended)] == []


async def test_a_bad_input_file_fails_the_batch_with_its_reason(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """reject=invalid_json_line: FAILED, with Google's message kept as the batch error."""
    sim.set_batch_faults("gf1", Faults(reject_batch="invalid_json_line"))
    created = await gem.create(gemini_spec("gf1"))
    ended = await run_to_end(gem, created.vendor_id, clock)
    assert ended.state == State.FAILED and ended.errors
    assert "Invalid JSON" in ended.errors[0].message


async def test_cancel(gem: GeminiProvider, clock: FakeClock) -> None:
    """Cancel: RUNNING while it is applied, then CANCELLED."""
    created = await gem.create(gemini_spec("gc1", n=3))
    clock.advance(60)
    assert (await gem.cancel(created.vendor_id)).state == State.IN_PROGRESS
    ended = await run_to_end(gem, created.vendor_id, clock)
    assert ended.state == State.CANCELLED


async def test_a_dropped_create_is_ambiguous_and_found_by_its_recorded_file(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """Accept-then-drop: AmbiguousOutcome; the batch made from our recorded file is
    found and tagged (certain), while a foreign batch with our displayName is not."""
    recorder = Recorder(sim)
    sim.faults = Faults(drop_create="cut")
    since = clock.now()
    with pytest.raises(AmbiguousOutcome):
        await gem.create(gemini_spec("gd1", record_input=recorder))
    sim.faults = Faults()
    other = await gem.create(gemini_spec("zz9"))  # someone else's batch, same window
    found = await gem.find_candidates(gemini_spec("gd1", input_file=recorder.names[0]), since=since)
    assert [(b.tag, b.input_file_id) for b in found] == [("gd1", recorder.names[0])]
    assert other.vendor_id not in {b.vendor_id for b in found}


async def test_display_name_alone_makes_an_unconfirmed_candidate(
    sim: Simulator, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Inline mode has no file: a batch with our displayName and size is a candidate
    without a tag, to be confirmed by its result keys."""
    gem = GeminiProvider(http_client=http, base_url=sim.gemini_base_url, api_key="k", mode="inline")
    since = clock.now()
    sim.faults = Faults(drop_create="500")
    with pytest.raises(AmbiguousOutcome):
        await gem.create(gemini_spec("gu1"))
    found = await gem.find_candidates(gemini_spec("gu1"), since=since)
    assert len(found) == 1 and found[0].tag is None


async def test_listing_stops_at_batches_older_than_the_intent(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """The unfiltered list is paged newest first and cut at the first older batch."""
    for i in range(4):
        await gem.create(gemini_spec(f"old{i}", n=1))
        clock.advance(10)
    clock.advance(1000)
    since = clock.now()
    new = [await gem.create(gemini_spec(f"new{i}", n=1)) for i in range(2)]
    before = calls(sim, "GET", "/v1beta/batches")
    listed = [b.vendor_id async for b in gem.list_recent(since=since)]
    assert listed == [b.vendor_id for b in reversed(new)]
    assert calls(sim, "GET", "/v1beta/batches") - before == 1  # page size 3: one page


async def test_permanent_400_and_retryable_429_on_create(
    gem: GeminiProvider, sim: Simulator
) -> None:
    """A 400 is a definite refusal; a 429 is retryable with Google's RetryInfo delay."""
    sim.faults = Faults(reject_create="model not allowed")
    with pytest.raises(VendorError) as refused:
        await gem.create(gemini_spec("gr1"))
    assert not refused.value.retryable and refused.value.status == 400
    assert not isinstance(refused.value, AmbiguousOutcome)
    sim.faults = Faults(rate_limit_create=1, retry_after_seconds=42)
    with pytest.raises(VendorError) as limited:
        await gem.create(gemini_spec("gr2"))
    assert limited.value.retryable and limited.value.retry_after == 42.0
    assert limited.value.code == "RESOURCE_EXHAUSTED"


async def test_reads_are_single_attempts(gem: GeminiProvider, sim: Simulator) -> None:
    """A 5xx on a read is one call and a retryable VendorError (SDK retries off)."""
    created = await gem.create(gemini_spec("gs1"))
    sim.faults = Faults(read_5xx_count=1)
    before = calls(sim, "GET", "/v1beta/batches/{batch_id}")
    with pytest.raises(VendorError) as caught:
        await gem.retrieve(created.vendor_id)
    assert caught.value.retryable and not isinstance(caught.value, AmbiguousOutcome)
    assert calls(sim, "GET", "/v1beta/batches/{batch_id}") - before == 1
    assert calls(sim, "POST", CREATE) == 1


async def test_cleanup_deletes_input_and_responses(
    gem: GeminiProvider, sim: Simulator, clock: FakeClock
) -> None:
    """cleanup removes both files; a second cleanup is a no-op."""
    created = await gem.create(gemini_spec("gx1", n=2))
    ended = await run_to_end(gem, created.vendor_id, clock)
    await gem.cleanup(ended)
    now = clock.now()
    assert all(f.gone(now) for f in sim.gemini_files.values())
    await gem.cleanup(ended)
