"""The OpenAI surface through the official `openai` SDK: files, batches, lifecycle,
output and error files, pagination, cancel, expiry and error shapes."""

from __future__ import annotations

import anthropic
import openai
import orjson
import pytest
from openai.types import Batch, FileDeleted, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from batchkiln.clock import FakeClock
from batchkiln.simulator import Faults, Simulator

from .helpers import chat_lines, file_lines, raw_batch, strict, submit


async def test_file_upload_retrieve_list_delete(oai: openai.AsyncOpenAI) -> None:
    """A batch file round-trips through upload, metadata, content, list and delete."""
    content = chat_lines(3)
    raw = await oai.files.with_raw_response.create(file=("in.jsonl", content), purpose="batch")
    uploaded = strict(FileObject, raw.http_response.content)
    assert (uploaded.purpose, uploaded.bytes, uploaded.filename) == (
        "batch",
        len(content),
        "in.jsonl",
    )
    assert uploaded.expires_at == uploaded.created_at + 30 * 24 * 3600
    fetched = await oai.files.with_raw_response.retrieve(uploaded.id)
    assert strict(FileObject, fetched.http_response.content).id == uploaded.id
    assert (await oai.files.content(uploaded.id)).content == content
    listed = [f.id async for f in oai.files.list(purpose="batch")]
    assert listed == [uploaded.id]
    deleted = await oai.files.with_raw_response.delete(uploaded.id)
    assert strict(FileDeleted, deleted.http_response.content).deleted is True
    with pytest.raises(openai.NotFoundError):
        await oai.files.retrieve(uploaded.id)


async def test_batch_walks_validating_in_progress_finalizing_completed(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Statuses follow the documented path and request_counts move while processing."""
    batch = await submit(oai, chat_lines(10))
    assert batch.status == "validating"
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.expires_at == batch.created_at + 86400
    seen = []
    for _ in range(20):
        clock.advance(10)
        current = await raw_batch(oai, batch.id)
        assert current.request_counts is not None
        seen.append((current.status, current.request_counts.completed))
    statuses = [s for s, _ in seen]
    assert (
        statuses.index("in_progress") < statuses.index("finalizing") < statuses.index("completed")
    )
    progress = [c for s, c in seen if s == "in_progress"]
    assert 0 < max(progress) < 10 and progress == sorted(progress)
    done = await raw_batch(oai, batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (10, 10)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.output_file_id and done.error_file_id is None


async def test_output_lines_are_chat_completions_with_usage(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Success lines carry a 200 and a ChatCompletion whose usage grows with the input."""
    batch = await submit(oai, chat_lines(4, words=10, max_tokens=None))
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.output_file_id is not None
    lines = {line["custom_id"]: line for line in await file_lines(oai, done.output_file_id)}
    assert set(lines) == {f"t1-r{i}" for i in range(4)}
    usages = []
    for i in range(4):
        line = lines[f"t1-r{i}"]
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_")
        completion = strict(ChatCompletion, orjson.dumps(line["response"]["body"]))
        assert completion.usage is not None
        usages.append(completion.usage.prompt_tokens)
    assert usages == sorted(usages) and usages[0] < usages[-1]
    assert done.usage is not None and done.usage.input_tokens == sum(usages)


async def test_responses_endpoint_returns_response_objects(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """A /v1/responses batch produces Response objects the SDK type accepts."""
    lines = b"\n".join(
        orjson.dumps(
            {
                "custom_id": f"t1-{i}",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": "gpt-5-mini", "input": f"question {i}", "max_output_tokens": 500},
            }
        )
        for i in range(3)
    )
    batch = await submit(oai, lines, endpoint="/v1/responses")
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.output_file_id is not None
    for line in await file_lines(oai, done.output_file_id):
        response = strict(Response, orjson.dumps(line["response"]["body"]))
        assert response.usage is not None and response.usage.input_tokens > 0


async def test_all_failed_batch_completes_with_only_an_error_file(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """When every request fails the batch still ends completed, output_file_id null."""
    sim.faults = Faults(permanent_rate=1.0)
    batch = await submit(oai, chat_lines(9))
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (
        done.request_counts.completed,
        done.request_counts.failed,
        done.request_counts.total,
    ) == (0, 9, 9)
    assert done.output_file_id is None and done.error_file_id is not None
    lines = await file_lines(oai, done.error_file_id)
    assert len(lines) == 9
    assert all(line["response"]["status_code"] == 400 and line["error"] is None for line in lines)
    assert lines[0]["response"]["body"]["error"]["code"] == "context_length_exceeded"


async def test_list_batches_paginates_with_cursor(oai: openai.AsyncOpenAI) -> None:
    """GET /v1/batches pages by `after`/`limit` with has_more, first_id and last_id."""
    created = [(await submit(oai, chat_lines(1), tag=f"p{i}")).id for i in range(5)]
    raw = await oai.batches.with_raw_response.list(limit=2)
    page = orjson.loads(raw.http_response.content)
    assert page["object"] == "list" and page["has_more"] is True
    assert page["first_id"] == created[-1] and page["last_id"] == created[-2]
    for item in page["data"]:
        strict(Batch, orjson.dumps(item))
    walked = [b.id async for b in oai.batches.list(limit=2)]
    assert walked == list(reversed(created))
    last = await oai.batches.list(limit=2, after=created[1])
    assert [b.id for b in last.data] == [created[0]] and last.has_more is False


async def test_cancel_goes_cancelling_then_cancelled_keeping_partial_results(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Cancel moves to cancelling for 10 virtual minutes; finished requests are kept."""
    batch = await submit(oai, chat_lines(10))
    clock.advance(30 + 60)  # queue delay, then half of the 120 s of processing
    cancelling = await oai.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    clock.advance(599)
    assert (await raw_batch(oai, batch.id)).status == "cancelling"
    clock.advance(1)
    done = await raw_batch(oai, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.output_file_id is not None and done.error_file_id is not None
    kept = await file_lines(oai, done.output_file_id)
    dropped = await file_lines(oai, done.error_file_id)
    assert len(kept) == 5 and len(dropped) == 5
    assert {line["error"]["code"] for line in dropped} == {"batch_cancelled"}


async def test_cancel_during_validation_leaves_no_files(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """A batch cancelled before it started ends cancelled with zero counts and no files."""
    batch = await submit(oai, chat_lines(3))
    await oai.batches.cancel(batch.id)
    clock.advance(600)
    done = await raw_batch(oai, batch.id)
    assert done.status == "cancelled" and done.in_progress_at is None
    assert done.output_file_id is None and done.error_file_id is None


async def test_cancelling_a_completed_batch_is_refused(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Cancel on a finished batch is a 400 (UNCONFIRMED vendor behaviour)."""
    batch = await submit(oai, chat_lines(1))
    clock.advance(3600)
    with pytest.raises(openai.BadRequestError):
        await oai.batches.cancel(batch.id)


async def test_expiry_keeps_finished_part_on_the_virtual_clock(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """A too-slow batch passes its 24 h window and expires, finished results kept,
    the rest as `batch_expired` lines; the 24 h pass on the fake clock, not in real time."""
    sim.faults = Faults(expire=True, expire_finished_share=0.3)
    batch = await submit(oai, chat_lines(10))
    clock.advance(23 * 3600)
    assert (await raw_batch(oai, batch.id)).status == "in_progress"
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.status == "expired" and done.expired_at == done.expires_at
    assert done.output_file_id is not None and done.error_file_id is not None
    assert len(await file_lines(oai, done.output_file_id)) == 3
    expired = await file_lines(oai, done.error_file_id)
    assert len(expired) == 7
    assert all(
        line["response"] is None and line["error"]["code"] == "batch_expired" for line in expired
    )


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({f"k{i}": "v" for i in range(17)}, "at most 16"),
        ({"k" * 65: "v"}, "longer than 64"),
        ({"k": "v" * 513}, "maximum length 512"),
    ],
)
async def test_metadata_limits_are_enforced(
    oai: openai.AsyncOpenAI, metadata: dict[str, str], fragment: str
) -> None:
    """More than 16 pairs, a key over 64 or a value over 512 characters is a 400."""
    file = await oai.files.create(file=("in.jsonl", chat_lines(1)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )
    assert fragment in caught.value.message
    assert caught.value.param == "metadata"
    assert caught.value.response.headers["x-should-retry"] == "false"


async def test_metadata_at_the_limits_is_accepted(oai: openai.AsyncOpenAI) -> None:
    """Exactly 16 pairs with a 64-character key and a 512-character value pass."""
    metadata = {f"k{i}": "v" for i in range(15)} | {"k" * 64: "v" * 512}
    batch = await submit(oai, chat_lines(1), tag=None, metadata=metadata)
    assert batch.metadata == metadata


async def test_errors_use_openais_shape(oai: openai.AsyncOpenAI) -> None:
    """Unknown ids are 404s with {"error": {message, type, param, code}}."""
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.batches.retrieve("batch_nope")
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    assert caught.value.request_id is not None


async def test_missing_api_key_is_401(oai: openai.AsyncOpenAI) -> None:
    """A call without Authorization is refused with 401."""
    with pytest.raises(openai.AuthenticationError):
        await oai.batches.list(extra_headers={"Authorization": openai.Omit()})


async def test_output_files_expire_after_retention(
    oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Output files disappear 30 days after the batch completes (or output_expires_after)."""
    file = await oai.files.create(file=("in.jsonl", chat_lines(2)), purpose="batch")
    batch = await oai.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    clock.advance(3600)
    done = await raw_batch(oai, batch.id)
    assert done.output_file_id is not None
    output = await oai.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output" and output.expires_at == output.created_at + 7200
    clock.advance(7200)
    with pytest.raises(openai.NotFoundError):
        await oai.files.content(done.output_file_id)


async def test_unknown_paths_are_404s_in_the_vendor_shape(
    oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    """Paths the simulator does not serve answer 404 with each vendor's error body."""
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.get("/fine_tuning/jobs", cast_to=object)
    assert isinstance(caught.value.body, dict) and "Unknown request URL" in caught.value.message
    with pytest.raises(anthropic.NotFoundError) as missing:
        await ant.get("/v1/messages/nope", cast_to=object)
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"
