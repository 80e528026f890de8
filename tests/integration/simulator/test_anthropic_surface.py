"""The Anthropic surface through the official `anthropic` SDK: create, retrieve, list,
cancel, delete, results, auth headers and error shapes."""

from __future__ import annotations

from datetime import datetime

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchIndividualResponse,
)

from batchkiln.clock import FakeClock
from batchkiln.simulator import Faults, Simulator

from .helpers import SIM_URL, anthropic_requests, strict


async def raw_message_batch(client: anthropic.AsyncAnthropic, batch_id: str) -> MessageBatch:
    raw = await client.messages.batches.with_raw_response.retrieve(batch_id)
    return strict(MessageBatch, raw.http_response.content)


async def test_only_processing_counts_until_the_batch_ends(
    ant: anthropic.AsyncAnthropic, clock: FakeClock, sim: Simulator
) -> None:
    """request_counts show only `processing` until ended, then the four outcomes."""
    sim.faults = Faults(fail_ids={"r1": "overloaded", "r2": "invalid_request"})
    raw = await ant.messages.batches.with_raw_response.create(requests=anthropic_requests(6))
    batch = strict(MessageBatch, raw.http_response.content)
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 86400
    clock.advance(30 + 100)  # most requests have finished, not all
    mid = await raw_message_batch(ant, batch.id)
    assert mid.processing_status == "in_progress"
    assert mid.request_counts.processing == 6
    assert mid.request_counts.succeeded == mid.request_counts.errored == 0
    clock.advance(30)
    done = await raw_message_batch(ant, batch.id)
    assert done.processing_status == "ended" and done.ended_at is not None
    assert (
        done.request_counts.succeeded,
        done.request_counts.errored,
        done.request_counts.processing,
    ) == (4, 2, 0)
    assert done.results_url == f"{SIM_URL}/v1/messages/batches/{batch.id}/results"


async def test_timestamps_are_rfc3339(ant: anthropic.AsyncAnthropic) -> None:
    """created_at and expires_at are RFC 3339 strings 24 h apart."""
    raw = await ant.messages.batches.with_raw_response.create(requests=anthropic_requests(1))
    body = orjson.loads(raw.http_response.content)
    created = datetime.fromisoformat(body["created_at"])
    expires = datetime.fromisoformat(body["expires_at"])
    assert body["created_at"].endswith("Z") and (expires - created).total_seconds() == 86400


async def test_results_stream_all_four_result_types(
    ant: anthropic.AsyncAnthropic, clock: FakeClock, sim: Simulator
) -> None:
    """results() follows the absolute results_url; lines are succeeded/errored/canceled."""
    sim.faults = Faults(fail_ids={"r0": "timeout"})
    batch = await ant.messages.batches.create(requests=anthropic_requests(10))
    clock.advance(30 + 60)
    await ant.messages.batches.cancel(batch.id)
    clock.advance(600)
    results = [r async for r in await ant.messages.batches.results(batch.id)]
    kinds = sorted(r.result.type for r in results)
    assert len(results) == 10 and kinds.count("canceled") == 5
    assert "errored" in kinds and "succeeded" in kinds
    for r in results:
        if r.result.type == "succeeded":
            assert r.result.message.usage.input_tokens > 0
        if r.result.type == "errored":
            assert r.result.error.error.type == "timeout_error"
    counts = (await ant.messages.batches.retrieve(batch.id)).request_counts
    assert counts.canceled == 5 and counts.processing == 0


async def test_results_lines_validate_and_have_no_blank_lines(
    ant: anthropic.AsyncAnthropic, clock: FakeClock, sim: Simulator
) -> None:
    """Each results line validates strictly; expired requests say `expired`."""
    sim.faults = Faults(expire=True, expire_finished_share=0.5)
    batch = await ant.messages.batches.create(requests=anthropic_requests(4))
    clock.advance(86400)
    done = await ant.messages.batches.retrieve(batch.id)
    assert done.request_counts.expired == 2 and done.request_counts.succeeded == 2
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sim.app))
    assert done.results_url is not None
    response = await http.get(done.results_url, headers={"x-api-key": "k"})
    await http.aclose()
    assert b"\n\n" not in response.content and response.content.endswith(b"}\n")
    lines = [strict(MessageBatchIndividualResponse, line) for line in response.content.splitlines()]
    assert sorted(line.result.type for line in lines) == [
        "expired",
        "expired",
        "succeeded",
        "succeeded",
    ]
    message = next(line.result.message for line in lines if line.result.type == "succeeded")
    strict(Message, message.model_dump_json())


async def test_list_is_newest_first_with_after_and_before(
    ant: anthropic.AsyncAnthropic,
) -> None:
    """Lists page newest first; after_id goes older, before_id newer."""
    ids = [
        (await ant.messages.batches.create(requests=anthropic_requests(1, tag=f"l{i}"))).id
        for i in range(5)
    ]
    newest_first = list(reversed(ids))
    assert [b.id async for b in ant.messages.batches.list(limit=2)] == newest_first
    page = await ant.messages.batches.list(limit=2)
    assert page.has_more and (page.first_id, page.last_id) == tuple(newest_first[:2])
    older = await ant.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in older.data] == newest_first[2:4] and older.has_more
    newer = await ant.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in newer.data] == newest_first[1:3] and newer.has_more
    walked = [b.id async for b in ant.messages.batches.list(limit=2, before_id=newest_first[4])]
    assert sorted(walked) == sorted(newest_first[:4])


async def test_delete_only_after_the_batch_ended(
    ant: anthropic.AsyncAnthropic, clock: FakeClock
) -> None:
    """Deleting a live batch is refused; an ended one is deleted and then 404s."""
    batch = await ant.messages.batches.create(requests=anthropic_requests(2))
    with pytest.raises(anthropic.BadRequestError):
        await ant.messages.batches.delete(batch.id)
    clock.advance(3600)
    raw = await ant.messages.batches.with_raw_response.delete(batch.id)
    assert strict(DeletedMessageBatch, raw.http_response.content).id == batch.id
    with pytest.raises(anthropic.NotFoundError) as caught:
        await ant.messages.batches.retrieve(batch.id)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error" and body["request_id"]


async def test_results_are_archived_after_29_days(
    ant: anthropic.AsyncAnthropic, clock: FakeClock
) -> None:
    """29 days after creation archived_at is set and results are no longer served."""
    batch = await ant.messages.batches.create(requests=anthropic_requests(1))
    clock.advance(29 * 86400)
    archived = await raw_message_batch(ant, batch.id)
    assert archived.archived_at is not None
    with pytest.raises(anthropic.NotFoundError):
        await ant.messages.batches.results(batch.id)


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_either_auth_header_and_any_version_is_accepted(sim: Simulator, header: str) -> None:
    """`x-api-key` or `Authorization: Bearer`, with any anthropic-version, is accepted."""
    value = "k" if header == "x-api-key" else "Bearer k"
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sim.app))
    response = await http.get(
        f"{SIM_URL}/v1/messages/batches", headers={header: value, "anthropic-version": "1999-01-01"}
    )
    missing = await http.get(f"{SIM_URL}/v1/messages/batches")
    await http.aclose()
    assert response.status_code == 200
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"


async def test_create_refuses_bad_custom_ids(ant: anthropic.AsyncAnthropic) -> None:
    """Duplicate or malformed custom_ids are a 400 invalid_request_error at create."""
    requests = anthropic_requests(2)
    requests[1]["custom_id"] = requests[0]["custom_id"]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await ant.messages.batches.create(requests=requests)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    bad = anthropic_requests(1)
    bad[0]["custom_id"] = "has space"
    with pytest.raises(anthropic.BadRequestError):
        await ant.messages.batches.create(requests=bad)


async def test_invalid_params_become_errored_results(
    ant: anthropic.AsyncAnthropic, clock: FakeClock
) -> None:
    """Params are validated asynchronously: a bad request is an `errored` result."""
    requests = anthropic_requests(2)
    requests[1]["params"]["max_tokens"] = 0
    batch = await ant.messages.batches.create(requests=requests)
    clock.advance(3600)
    results = {r.custom_id: r.result async for r in await ant.messages.batches.results(batch.id)}
    errored = results["t2-r1"]
    assert errored.type == "errored"
    assert errored.error.error.type == "invalid_request_error"
    assert "max_tokens" in errored.error.error.message
    assert results["t2-r0"].type == "succeeded"
