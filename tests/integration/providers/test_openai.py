"""The OpenAI adapter through the official `openai` SDK against the simulator."""

from __future__ import annotations

import orjson
import pytest

from batchkiln.clock import FakeClock
from batchkiln.lifecycle import State
from batchkiln.providers import (
    AmbiguousOutcome,
    FailureClass,
    OpenAIProvider,
    Outcome,
    VendorError,
)
from batchkiln.simulator import Faults, Simulator

from .helpers import calls, collect, first_attempts, openai_spec, run_to_end

R, P = FailureClass.RETRYABLE, FailureClass.PERMANENT
BATCHES = "/v1/batches"
FILES = "/v1/files"


async def test_create_poll_and_stream_results(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """A batch goes pending -> in_progress -> completed and streams billed results with usage."""
    spec = openai_spec("aa1", n=5)
    created = await oai.create(spec)
    assert (created.state, created.tag, created.vendor_status) == (
        State.PENDING,
        "aa1",
        "validating",
    )
    assert created.created_at == clock.now() // 1 and created.input_file_id
    clock.advance(40)
    assert (await oai.retrieve(created.vendor_id)).state == State.IN_PROGRESS
    ended = await run_to_end(oai, created.vendor_id, clock)
    assert (ended.state, ended.total, ended.succeeded, ended.failed) == (State.COMPLETED, 5, 5, 0)
    assert ended.ended_at is not None and ended.ended_at >= created.created_at
    results = await collect(oai, ended)
    assert set(results) == {r.wire_id for r in spec.requests}
    for wire_id, line in results.items():
        assert line.outcome == Outcome.SUCCEEDED and line.billed and line.failure is None
        assert line.usage.input_tokens > 0 and line.usage.output_tokens > 0
        assert line.response is not None and line.response["object"] == "chat.completion"
        assert orjson.loads(line.raw)["custom_id"] == wire_id
    assert sim.counters.created_by_tag["aa1"] == 1


async def test_partial_batch_failure_classes(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """Per-request failures end the batch PARTIAL with each failure classified and unbilled."""
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
    created = await oai.create(openai_spec("pp1", n=6))
    ended = await run_to_end(oai, created.vendor_id, clock)
    assert (ended.state, ended.succeeded, ended.failed) == (State.PARTIAL, 2, 4)
    results = await collect(oai, ended)
    got = {wid: (r.outcome, r.failure, r.billed) for wid, r in results.items()}
    assert got == {
        "pp1-0": (Outcome.SUCCEEDED, None, True),
        "pp1-1": (Outcome.ERRORED, P, False),
        "pp1-2": (Outcome.ERRORED, R, False),
        "pp1-3": (Outcome.ERRORED, R, False),
        "pp1-4": (Outcome.ERRORED, R, False),
        "pp1-5": (Outcome.SUCCEEDED, None, True),
    }
    error = results["pp1-1"].error
    assert error is not None and error["code"] == "context_length_exceeded"
    assert error["status"] == 400 and results["pp1-1"].usage.input_tokens == 0


async def test_all_failed_batch_is_partial(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """A `completed` batch in which every request failed ran: PARTIAL with 0 succeeded."""
    sim.set_batch_faults("ff1", Faults(permanent_rate=1.0))
    created = await oai.create(openai_spec("ff1", n=3))
    ended = await run_to_end(oai, created.vendor_id, clock)
    assert (ended.vendor_status, ended.state, ended.failed) == ("completed", State.PARTIAL, 3)
    assert {r.outcome for r in (await collect(oai, ended)).values()} == {Outcome.ERRORED}


async def test_rejected_input_is_failed_with_errors(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """A batch failing validation maps to FAILED with the vendor's errors, and has no results."""
    sim.set_batch_faults("rj1", Faults(reject_batch="invalid_json_line"))
    created = await oai.create(openai_spec("rj1"))
    ended = await run_to_end(oai, created.vendor_id, clock)
    assert ended.state == State.FAILED and ended.vendor_status == "failed"
    assert [e.code for e in ended.errors] == ["invalid_json_line"]
    assert ended.errors[0].line is not None
    assert await collect(oai, ended) == {}


async def test_expired_batch(oai: OpenAIProvider, sim: Simulator, clock: FakeClock) -> None:
    """An expired batch maps to EXPIRED; finished requests are billed, the rest EXPIRED."""
    sim.set_batch_faults("ex1", Faults(expire=True, expire_finished_share=0.5))
    created = await oai.create(openai_spec("ex1", n=6))
    ended = await run_to_end(oai, created.vendor_id, clock, step=3600)
    assert ended.state == State.EXPIRED
    outcomes = [r.outcome for r in (await collect(oai, ended)).values()]
    assert outcomes.count(Outcome.EXPIRED) == 3 and outcomes.count(Outcome.SUCCEEDED) == 3
    expired = [r for r in (await collect(oai, ended)).values() if r.outcome == Outcome.EXPIRED]
    assert all(r.failure == R and not r.billed for r in expired)


async def test_cancel(oai: OpenAIProvider, clock: FakeClock) -> None:
    """Cancel moves the batch to CANCELLING, then CANCELLED with unrun requests CANCELLED."""
    created = await oai.create(openai_spec("cc1", n=4))
    clock.advance(40)
    cancelling = await oai.cancel(created.vendor_id)
    assert cancelling.state == State.CANCELLING
    ended = await run_to_end(oai, created.vendor_id, clock)
    assert ended.state == State.CANCELLED
    results = await collect(oai, ended)
    assert {r.outcome for r in results.values()} == {Outcome.CANCELLED}
    assert all(r.failure == R and not r.billed for r in results.values())


async def test_list_recent_paginates_newest_first(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """list_recent walks pages newest first and stops at the first page past `since`."""
    ids = []
    for i in range(7):
        ids.append((await oai.create(openai_spec(f"ls{i}", n=1))).vendor_id)
        clock.advance(1)
    since = clock.now() - 5  # the newest five
    before = calls(sim, "GET", BATCHES)
    recent = [b.vendor_id async for b in oai.list_recent(since=since)]
    assert recent == ids[::-1][:5]
    assert calls(sim, "GET", BATCHES) - before == 2  # pages of 3: [6,5,4], [3,2,1] -> stop
    everything = [b.vendor_id async for b in oai.list_recent(since=0)]
    assert everything == ids[::-1]


@pytest.mark.parametrize("drop", ["cut", "500"])
async def test_ambiguous_create_is_found_by_tag(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock, drop: str
) -> None:
    """A create the vendor committed before the reply was lost is AmbiguousOutcome, and
    find_candidates then finds exactly that batch by its tag."""
    since = clock.now()
    await oai.create(openai_spec("other1"))  # same window, someone else's tag
    sim.set_batch_faults("am1", Faults(drop_create=drop))  # type: ignore[arg-type]
    spec = openai_spec("am1")
    with pytest.raises(AmbiguousOutcome) as caught:
        await oai.create(spec)
    assert caught.value.retryable
    assert sim.counters.created_by_tag["am1"] == 1
    assert calls(sim, "POST", BATCHES) == first_attempts(sim, "POST", BATCHES) == 2
    found = await oai.find_candidates(spec, since=since)
    assert [(b.tag, b.total) for b in found] == [("am1", 0)]


async def test_candidates_by_input_file_when_untagged(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """A batch without our metadata is still a candidate if it was made from our input file."""
    since = clock.now()
    spec = openai_spec("nf1")
    uploaded = await oai.client.files.create(
        file=("kiln-nf1.jsonl", b'{"custom_id":"x"}\n'), purpose="batch"
    )
    await oai.client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await oai.create(openai_spec("zz9"))  # tagged, not ours
    found = await oai.find_candidates(spec, since=since)
    assert [(b.tag, b.input_file_id) for b in found] == [(None, uploaded.id)]


async def test_permanent_400_on_create(oai: OpenAIProvider, sim: Simulator) -> None:
    """A 400 on create is a definite, non-retryable VendorError carrying the vendor's message."""
    with pytest.raises(VendorError) as caught:
        await oai.create(openai_spec("bad1", endpoint="/v1/nope"))
    err = caught.value
    assert not isinstance(err, AmbiguousOutcome)
    assert (err.retryable, err.status) == (False, 400)
    assert err.message == "Invalid 'endpoint': '/v1/nope' is not supported."
    assert sim.counters.batches_created == 0


async def test_429_is_retryable_and_upload_is_reused(oai: OpenAIProvider, sim: Simulator) -> None:
    """A 429 on create is retryable with the server's retry-after, was tried once, and the
    next create reuses the uploaded input file instead of uploading it again."""
    sim.set_batch_faults("rl1", Faults(rate_limit_create=1, retry_after_seconds=7))
    spec = openai_spec("rl1")
    with pytest.raises(VendorError) as caught:
        await oai.create(spec)
    err = caught.value
    assert (err.retryable, err.status, err.retry_after) == (True, 429, 7.0)
    assert not isinstance(err, AmbiguousOutcome)
    assert calls(sim, "POST", BATCHES) == first_attempts(sim, "POST", BATCHES) == 1
    created = await oai.create(spec)
    assert calls(sim, "POST", FILES) == 1
    uploads = [f for f in sim.files.live(sim.now(), "batch") if f.filename == "kiln-rl1.jsonl"]
    assert [f.id for f in uploads] == [created.input_file_id]


async def test_changed_input_is_uploaded_again(oai: OpenAIProvider, sim: Simulator) -> None:
    """An uploaded file of the same name but another size is not reused."""
    await oai.client.files.create(file=("kiln-sz1.jsonl", b"{}\n"), purpose="batch")
    created = await oai.create(openai_spec("sz1"))
    assert calls(sim, "POST", FILES) == 2
    assert sim.files.get(created.input_file_id or "", sim.now()) is not None


async def test_reads_are_single_attempts(oai: OpenAIProvider, sim: Simulator) -> None:
    """A 5xx on a read is one attempt and a retryable VendorError (not ambiguous)."""
    created = await oai.create(openai_spec("rd1"))
    sim.set_batch_faults("rd1", Faults(read_5xx_count=1))
    route = "/v1/batches/{batch_id}"
    with pytest.raises(VendorError) as caught:
        await oai.retrieve(created.vendor_id)
    assert caught.value.retryable and caught.value.status in (500, 503)
    assert not isinstance(caught.value, AmbiguousOutcome)
    assert calls(sim, "GET", route) == first_attempts(sim, "GET", route) == 1
    assert (await oai.retrieve(created.vendor_id)).vendor_id == created.vendor_id


async def test_cleanup_deletes_the_files(
    oai: OpenAIProvider, sim: Simulator, clock: FakeClock
) -> None:
    """cleanup deletes the input, output and error files, and a second cleanup is harmless."""
    sim.set_batch_faults("cl1", Faults(fail_ids={"0": "server_error"}))
    created = await oai.create(openai_spec("cl1", n=3))
    ended = await run_to_end(oai, created.vendor_id, clock)
    raw = await oai.client.batches.retrieve(created.vendor_id)
    file_ids = [raw.input_file_id, raw.output_file_id, raw.error_file_id]
    assert all(file_ids)
    await oai.cleanup(ended)
    assert [sim.files.get(f or "", sim.now()) for f in file_ids] == [None, None, None]
    await oai.cleanup(ended)
