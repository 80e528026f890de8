"""The Gemini surface (v1beta) as the official google-genai SDK sees it: the resumable
upload, batches from a file and inline, states on the virtual clock, paging, cancel,
delete, download, and the seeded faults."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from batchkiln.clock import FakeClock
from batchkiln.simulator import ConnectionCut, Faults, Simulator

MODEL = "gemini-2.5-flash"


def gemini_client(sim: Simulator, *, attempts: int = 1) -> genai.Client:
    """google-genai on the simulator over an in-process httpx ASGI transport (v1beta)."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app))
    return genai.Client(
        api_key="g-test",
        vertexai=False,
        http_options=types.HttpOptions(
            base_url=sim.gemini_base_url,
            api_version="v1beta",
            httpx_async_client=http,
            retry_options=types.HttpRetryOptions(attempts=attempts, initial_delay=0.0),
        ),
    )


@pytest.fixture
async def gem(sim: Simulator) -> AsyncIterator[genai.Client]:
    client = gemini_client(sim)
    yield client
    await client.aio.aclose()


def lines(n: int, tag: str = "t1", *, max_tokens: int | None = None) -> bytes:
    out = []
    for i in range(n):
        request: dict[str, Any] = {
            "contents": [{"role": "user", "parts": [{"text": f"question {i} " + "x " * i}]}]
        }
        if max_tokens:
            request["generationConfig"] = {"maxOutputTokens": max_tokens}
        out.append(orjson.dumps({"key": f"{tag}-{i}", "request": request}))
    return b"\n".join(out) + b"\n"


async def upload(gem: genai.Client, data: bytes, name: str = "kiln-t1.jsonl") -> str:
    file = await gem.aio.files.upload(
        file=io.BytesIO(data),
        config=types.UploadFileConfig(display_name=name, mime_type="application/jsonl"),
    )
    assert file.name is not None
    return file.name


async def raw(gem: genai.Client, path: str) -> dict[str, Any]:
    reply = await gem.aio._api_client.async_request("get", path, {})
    data: dict[str, Any] = orjson.loads(reply.body)
    return data


async def file_batch(gem: genai.Client, n: int = 4, tag: str = "t1") -> types.BatchJob:
    name = await upload(gem, lines(n, tag), f"kiln-{tag}.jsonl")
    return await gem.aio.batches.create(
        model=MODEL, src=name, config=types.CreateBatchJobConfig(display_name=f"kiln-{tag}")
    )


async def test_a_file_batch_runs_pending_running_succeeded_with_string_counters(
    sim: Simulator, gem: genai.Client, clock: FakeClock
) -> None:
    """Upload, create, then PENDING -> RUNNING -> SUCCEEDED on the clock; batchStats are
    int64 strings and inputConfig names our file."""
    job = await file_batch(gem)
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "kiln-t1"
    assert job.name is not None and job.name.startswith("batches/")
    first = await raw(gem, job.name)
    assert first["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert first["metadata"]["batchStats"]["requestCount"] == "4"
    assert first["metadata"]["inputConfig"]["fileName"].startswith("files/")
    clock.advance(60)
    assert (await raw(gem, job.name))["metadata"]["state"] == "BATCH_STATE_RUNNING"
    clock.advance(3600)
    done = await gem.aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    stats = (await raw(gem, job.name))["metadata"]["batchStats"]
    assert stats == {"requestCount": "4", "successfulRequestCount": "4"}  # zeros left out
    assert done.dest is not None and done.dest.file_name is not None
    body = await gem.aio.files.download(file=done.dest.file_name)
    results = [orjson.loads(line) for line in body.splitlines()]
    assert [r["key"] for r in results] == ["t1-0", "t1-1", "t1-2", "t1-3"]  # input order
    usage = results[0]["response"]["usageMetadata"]
    assert usage["promptTokenCount"] > 0 and usage["candidatesTokenCount"] > 0
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]


async def test_inline_requests_come_back_inline_with_their_keys(
    gem: genai.Client, clock: FakeClock
) -> None:
    """Inline requests (the SDK's InlinedRequest) come back as inlinedResponses with the
    echoed metadata."""
    job = await gem.aio.batches.create(
        model=MODEL,
        src=[
            types.InlinedRequest(contents=f"hello {i}", metadata={"key": f"t2-{i}"})
            for i in range(3)
        ],
    )
    assert job.name is not None
    clock.advance(3600)
    done = await gem.aio.batches.get(name=job.name)
    assert done.dest is not None and done.dest.inlined_responses is not None
    keys = [r.metadata["key"] for r in done.dest.inlined_responses if r.metadata]
    assert keys == ["t2-0", "t2-1", "t2-2"]
    first = done.dest.inlined_responses[0].response
    assert first is not None and first.usage_metadata is not None
    assert (first.usage_metadata.prompt_token_count or 0) > 0


async def test_listing_pages_with_operations_and_a_page_token(gem: genai.Client) -> None:
    """GET batches pages newest first under `operations`; the SDK's pager follows the token."""
    names = [(await file_batch(gem, 1, tag=f"p{i}")).name for i in range(5)]
    page = await raw(gem, "batches?pageSize=2")
    assert len(page["operations"]) == 2 and page["nextPageToken"]
    pager = await gem.aio.batches.list(config=types.ListBatchJobsConfig(page_size=2))
    listed = [b.name async for b in pager]
    assert listed == list(reversed(names))


async def test_cancel_then_cancelled_and_delete_then_404(
    gem: genai.Client, clock: FakeClock
) -> None:
    """Cancel moves a running batch to CANCELLED after the cancel delay; a deleted batch is
    NOT_FOUND."""
    job = await file_batch(gem, 3)
    assert job.name is not None
    clock.advance(60)
    await gem.aio.batches.cancel(name=job.name)
    clock.advance(601)
    assert (await gem.aio.batches.get(name=job.name)).state == types.JobState.JOB_STATE_CANCELLED
    await gem.aio.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as caught:
        await gem.aio.batches.get(name=job.name)
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


async def test_a_batch_expires_after_48_hours_with_no_results(
    sim: Simulator, gem: genai.Client, clock: FakeClock
) -> None:
    """Too slow for the window: EXPIRED at 48 h (not 24 h), with no output."""
    sim.faults = Faults(expire=True)
    job = await file_batch(gem, 4)
    assert job.name is not None
    clock.advance(25 * 3600)
    assert (await raw(gem, job.name))["metadata"]["state"] == "BATCH_STATE_RUNNING"
    clock.advance(24 * 3600)
    done = await raw(gem, job.name)
    assert done["metadata"]["state"] == "BATCH_STATE_EXPIRED" and done["done"] is True
    assert "output" not in done["metadata"]


async def test_per_line_failures_carry_a_google_status(
    sim: Simulator, gem: genai.Client, clock: FakeClock
) -> None:
    """Listed failures come back as `error {code, message, status}` lines by key."""
    sim.faults = Faults(fail_ids={"0": "overloaded", "1": "invalid_request", "2": "timeout"})
    job = await file_batch(gem, 4)
    assert job.name is not None
    clock.advance(3600)
    done = await gem.aio.batches.get(name=job.name)
    assert done.dest is not None and done.dest.file_name is not None
    body = await gem.aio.files.download(file=done.dest.file_name)
    by_key = {r["key"]: r for r in map(orjson.loads, body.splitlines())}
    assert by_key["t1-0"]["error"]["status"] == "UNAVAILABLE"
    assert by_key["t1-1"]["error"] == {
        "code": 400,
        "message": "Request contains an invalid argument.",
        "status": "INVALID_ARGUMENT",
    }
    assert by_key["t1-2"]["error"]["code"] == 504
    assert "response" in by_key["t1-3"]


async def test_out_of_order_returns_finish_order(
    sim: Simulator, gem: genai.Client, clock: FakeClock
) -> None:
    """The out_of_order fault gives results in finish order, not input order."""
    sim.faults = Faults(out_of_order=True)
    job = await file_batch(gem, 12)
    assert job.name is not None
    clock.advance(3600)
    done = await gem.aio.batches.get(name=job.name)
    assert done.dest is not None and done.dest.file_name is not None
    body = await gem.aio.files.download(file=done.dest.file_name)
    keys = [orjson.loads(line)["key"] for line in body.splitlines()]
    assert sorted(keys) == sorted(f"t1-{i}" for i in range(12))
    assert keys != [f"t1-{i}" for i in range(12)]


async def test_drop_inline_keys_loses_some_echoed_metadata(
    sim: Simulator, gem: genai.Client, clock: FakeClock
) -> None:
    """drop_inline_keys: some inline responses come back without their metadata."""
    sim.faults = Faults(drop_inline_keys=0.5)
    job = await gem.aio.batches.create(
        model=MODEL,
        src=[types.InlinedRequest(contents="q", metadata={"key": f"t3-{i}"}) for i in range(20)],
    )
    assert job.name is not None
    clock.advance(3600)
    done = await gem.aio.batches.get(name=job.name)
    assert done.dest is not None and done.dest.inlined_responses is not None
    missing = [r for r in done.dest.inlined_responses if not r.metadata]
    assert len(done.dest.inlined_responses) == 20 and 0 < len(missing) < 20


async def test_accept_then_drop_commits_the_batch_and_cuts_the_connection(
    sim: Simulator, gem: genai.Client
) -> None:
    """drop_create=cut: the caller sees a transport error, yet the batch exists."""
    name = await upload(gem, lines(2))
    sim.faults = Faults(drop_create="cut")
    with pytest.raises(ConnectionCut):
        await gem.aio.batches.create(model=MODEL, src=name)
    listed = await raw(gem, "batches")
    assert len(listed["operations"]) == 1
    assert listed["operations"][0]["metadata"]["inputConfig"]["fileName"] == name
    assert sim.counters.created_by_vendor["gemini"] == 1


async def test_sdk_retries_when_enabled_resend_create_after_a_500(sim: Simulator) -> None:
    """With HttpRetryOptions the SDK retries create too: a 500 after commit makes two
    batches (why the adapter keeps SDK retries off)."""
    client = gemini_client(sim, attempts=2)
    name = await upload(client, lines(2))
    sim.faults = Faults(drop_create="500")
    await client.aio.batches.create(model=MODEL, src=name)
    assert sim.counters.created_by_vendor["gemini"] == 2


async def test_rate_limited_create_carries_retry_info_and_retry_after(
    sim: Simulator, gem: genai.Client
) -> None:
    """429 RESOURCE_EXHAUSTED with a RetryInfo detail and a retry-after header."""
    name = await upload(gem, lines(2))
    sim.faults = Faults(rate_limit_create=1, retry_after_seconds=30)
    with pytest.raises(errors.ClientError) as caught:
        await gem.aio.batches.create(model=MODEL, src=name)
    err = caught.value
    assert err.code == 429 and err.status == "RESOURCE_EXHAUSTED"
    assert err.details["error"]["details"][0]["retryDelay"] == "30s"
    assert err.response.headers["retry-after"] == "30"


async def test_reads_get_5xx_when_asked(sim: Simulator, gem: genai.Client) -> None:
    """read_5xx_count: the next read is a 500 or 503 ServerError."""
    job = await file_batch(gem, 1)
    assert job.name is not None
    sim.faults = Faults(read_5xx_count=1)
    with pytest.raises(errors.ServerError) as caught:
        await gem.aio.batches.get(name=job.name)
    assert caught.value.code in (500, 503)
    assert (await gem.aio.batches.get(name=job.name)).name == job.name


async def test_a_malformed_input_file_fails_the_batch(gem: genai.Client, clock: FakeClock) -> None:
    """An input file with a bad line: the batch ends FAILED with an error, no output."""
    name = await upload(gem, b'{"key": "t1-0", "request": {"contents": []}}\nnot json\n')
    job = await gem.aio.batches.create(model=MODEL, src=name)
    assert job.name is not None
    clock.advance(120)
    done = await raw(gem, job.name)
    assert done["metadata"]["state"] == "BATCH_STATE_FAILED"
    assert "line 2" in done["error"]["message"]


async def test_no_api_key_is_refused(sim: Simulator) -> None:
    """A call without x-goog-api-key gets a 403 google.rpc.Status."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)) as http:
        reply = await http.get(f"{sim.gemini_base_url}/v1beta/batches")
    assert reply.status_code == 403
    assert reply.json()["error"]["status"] == "PERMISSION_DENIED"
