"""The adapters' pure parts: status tables, failure classes, result lines, SDK errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic.types.messages import MessageBatch
from openai.types import Batch

from batchkiln.lifecycle import State
from batchkiln.providers import (
    AmbiguousOutcome,
    FailureClass,
    Outcome,
    Usage,
    VendorBatch,
    VendorError,
    make_provider,
)
from batchkiln.providers import anthropic as anth
from batchkiln.providers import openai as oai
from batchkiln.providers._shared import jsonl_lines, within_window
from batchkiln.providers.failures import (
    classify_anthropic,
    classify_openai,
    parse_retry_after,
)

R, P = FailureClass.RETRYABLE, FailureClass.PERMANENT


def openai_batch(
    status: str, total: int = 0, completed: int = 0, failed: int = 0, **extra: Any
) -> Batch:
    return Batch.model_validate(
        {
            "id": "batch_1",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-1",
            "completion_window": "24h",
            "status": status,
            "created_at": 1000,
            "expires_at": 87400,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            **extra,
        }
    )


def anthropic_batch(
    status: str,
    *,
    processing: int = 0,
    succeeded: int = 0,
    errored: int = 0,
    canceled: int = 0,
    expired: int = 0,
    cancelled_at: str | None = None,
    ended_at: str | None = None,
) -> MessageBatch:
    return MessageBatch.model_validate(
        {
            "id": "msgbatch_1",
            "type": "message_batch",
            "processing_status": status,
            "created_at": "2026-01-01T00:00:00.250000Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": ended_at,
            "cancel_initiated_at": cancelled_at,
            "archived_at": None,
            "results_url": None,
            "request_counts": {
                "processing": processing,
                "succeeded": succeeded,
                "errored": errored,
                "canceled": canceled,
                "expired": expired,
            },
        }
    )


@pytest.mark.parametrize(
    ("status", "counts", "state"),
    [
        ("validating", (0, 0, 0), State.PENDING),
        ("in_progress", (5, 2, 1), State.IN_PROGRESS),
        ("finalizing", (5, 4, 1), State.IN_PROGRESS),
        ("cancelling", (5, 1, 0), State.CANCELLING),
        ("completed", (5, 5, 0), State.COMPLETED),
        ("completed", (5, 3, 2), State.PARTIAL),
        ("completed", (9, 0, 9), State.PARTIAL),  # it ran: 0 succeeded is partial
        ("completed", (0, 0, 0), State.COMPLETED),
        ("failed", (0, 0, 0), State.FAILED),
        ("expired", (5, 3, 0), State.EXPIRED),
        ("cancelled", (5, 2, 0), State.CANCELLED),
    ],
)
def test_openai_status_table(status: str, counts: tuple[int, int, int], state: State) -> None:
    """Every OpenAI status (and each `completed` count case) maps to one state."""
    vb = oai.to_vendor_batch(openai_batch(status, *counts))
    assert vb.state == state
    assert (vb.total, vb.succeeded, vb.failed) == counts


def test_openai_table_covers_every_sdk_status() -> None:
    """The status table has a row for every status the SDK's Batch type allows."""
    literal = Batch.model_fields["status"].annotation
    assert set(oai.STATUS_TABLE) == set(literal.__args__)  # type: ignore[union-attr]


def test_openai_batch_fields() -> None:
    """Tag, timestamps and validation errors come through from the Batch object."""
    vb = oai.to_vendor_batch(
        openai_batch(
            "failed",
            failed_at=1200,
            metadata={"kiln_tag": "abc", "kiln_key": "k"},
            errors={
                "object": "list",
                "data": [
                    {"code": "invalid_json_line", "message": "bad line", "line": 3, "param": None}
                ],
            },
        )
    )
    assert vb.tag == "abc" and vb.ended_at == 1200.0 and vb.expires_at == 87400.0
    assert vb.created_at == 1000.0 and vb.input_file_id == "file-1"
    errors = [(e.code, e.message, e.line) for e in vb.errors]
    assert errors == [("invalid_json_line", "bad line", 3)]


T_END = "2026-01-01T01:00:00Z"


@pytest.mark.parametrize(
    ("status", "counts", "cancelled", "state"),
    [
        # (succeeded, errored, canceled, expired); processing is 0 once ended
        ("in_progress", (0, 0, 0, 0), False, State.IN_PROGRESS),
        ("canceling", (0, 0, 0, 0), True, State.CANCELLING),
        ("ended", (3, 1, 2, 0), True, State.CANCELLED),  # row 1: cancel took effect
        ("ended", (6, 0, 0, 0), True, State.CANCELLED),  # row 1: cancel came too late
        ("ended", (2, 1, 0, 3), False, State.EXPIRED),  # row 2: window closed
        ("ended", (6, 0, 0, 0), False, State.COMPLETED),  # row 3: all succeeded
        ("ended", (0, 0, 0, 0), False, State.COMPLETED),  # row 3: empty
        ("ended", (4, 2, 0, 0), False, State.PARTIAL),  # row 4: some errored
        ("ended", (4, 0, 2, 0), False, State.PARTIAL),  # row 4: vendor-side cancel
        ("ended", (0, 6, 0, 0), False, State.PARTIAL),  # row 4: all errored, 0 succeeded
    ],
)
def test_anthropic_status_table(
    status: str, counts: tuple[int, int, int, int], cancelled: bool, state: State
) -> None:
    """Every Anthropic processing status and ended-table row maps to one state."""
    s, e, c, x = counts
    batch = anthropic_batch(
        status,
        processing=6 if status != "ended" else 0,
        succeeded=s,
        errored=e,
        canceled=c,
        expired=x,
        cancelled_at="2026-01-01T00:30:00Z" if cancelled else None,
        ended_at=T_END if status == "ended" else None,
    )
    vb = anth.to_vendor_batch(batch)
    assert vb.state == state
    assert vb.succeeded == s and vb.failed == e + c + x
    assert vb.total == (6 if status != "ended" else s + e + c + x)


def test_anthropic_batch_fields() -> None:
    """RFC 3339 timestamps become Unix seconds; there is no tag."""
    vb = anth.to_vendor_batch(anthropic_batch("ended", succeeded=1, ended_at=T_END))
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert vb.created_at == start + 0.25 and vb.ended_at == start + 3600
    assert vb.expires_at == start + 86400 and vb.tag is None


@pytest.mark.parametrize(
    ("code", "type_", "status", "cls"),
    [
        ("rate_limit_exceeded", "requests", 429, R),
        (None, "server_error", 500, R),
        (None, "server_error", 503, R),
        ("request_timeout", None, None, R),
        ("batch_expired", None, None, R),
        ("context_length_exceeded", "invalid_request_error", 400, P),
        ("content_policy_violation", "invalid_request_error", 400, P),
        ("content_filter", None, 400, P),
        ("insufficient_quota", "insufficient_quota", 429, FailureClass.ACCOUNT),
        (None, None, 0, R),  # status 0: no HTTP response at all
        (None, None, 402, FailureClass.ACCOUNT),
        ("something_new", "invalid_request_error", 400, P),
        ("something_new", None, 502, R),
        ("something_new", None, 418, P),
        (None, None, 401, P),
        (None, None, 404, P),
        ("something_new", None, None, P),
    ],
)
def test_openai_failure_classes(
    code: str | None, type_: str | None, status: int | None, cls: FailureClass
) -> None:
    """OpenAI codes, then types, then statuses decide retryable vs permanent."""
    assert classify_openai(code, type_, status) == cls


@pytest.mark.parametrize(
    ("type_", "cls"),
    [
        ("overloaded_error", R),
        ("rate_limit_error", R),
        ("api_error", R),
        ("timeout_error", R),
        ("invalid_request_error", P),
        ("not_found_error", P),
        ("authentication_error", P),
        ("permission_error", P),
        ("request_too_large", P),
        ("billing_error", FailureClass.ACCOUNT),
        ("brand_new_error", P),
        (None, P),
    ],
)
def test_anthropic_failure_classes(type_: str | None, cls: FailureClass) -> None:
    """Anthropic error types decide retryable vs permanent; unknown types are permanent."""
    assert classify_anthropic(type_) == cls


def line(**fields: Any) -> bytes:
    return orjson.dumps({"id": "batch_req_1", "custom_id": "t-1", **fields})


def test_openai_result_lines() -> None:
    """Output/error file lines map to outcomes, failure classes, usage and billing."""
    chat = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 6},
        }
    }
    ok = oai.parse_line(line(response={"status_code": 200, "body": chat}, error=None))
    assert (ok.outcome, ok.billed, ok.wire_id) == (Outcome.SUCCEEDED, True, "t-1")
    assert (ok.usage.input_tokens, ok.usage.cached_input_tokens, ok.usage.output_tokens) == (
        10,
        6,
        4,
    )
    assert ok.response == chat and ok.raw == line(
        response={"status_code": 200, "body": chat}, error=None
    )
    bad = oai.parse_line(
        line(
            response={
                "status_code": 400,
                "body": {
                    "error": {
                        "message": "too long",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                },
            },
            error=None,
        )
    )
    assert (bad.outcome, bad.failure, bad.billed) == (Outcome.ERRORED, P, False)
    assert bad.error == {
        "code": "context_length_exceeded",
        "message": "too long",
        "status": 400,
        "type": "invalid_request_error",
    }
    boom = oai.parse_line(
        line(
            response={
                "status_code": 500,
                "body": {"error": {"message": "oops", "type": "server_error", "code": None}},
            },
            error=None,
        )
    )
    assert (boom.outcome, boom.failure) == (Outcome.ERRORED, R)
    expired = oai.parse_line(line(response=None, error={"code": "batch_expired", "message": "x"}))
    assert (expired.outcome, expired.failure, expired.billed) == (Outcome.EXPIRED, R, False)
    cancelled = oai.parse_line(
        line(response=None, error={"code": "batch_cancelled", "message": "x"})
    )
    assert (cancelled.outcome, cancelled.failure) == (Outcome.CANCELLED, R)
    junk = oai.parse_line(b"{not json")
    assert (junk.wire_id, junk.outcome, junk.failure) == ("", Outcome.ERRORED, P)


def test_openai_usage_shapes() -> None:
    """Usage is read from chat, responses and embeddings bodies."""
    responses = {
        "usage": {
            "input_tokens": 20,
            "output_tokens": 7,
            "input_tokens_details": {"cached_tokens": 5},
        }
    }
    assert oai.usage_of(responses) == Usage(20, 5, 7)
    embeddings = {"usage": {"prompt_tokens": 9, "total_tokens": 9}}
    assert oai.usage_of(embeddings) == Usage(9, 0, 0)
    assert oai.usage_of({}) == Usage()


def anthropic_line(result: dict[str, Any]) -> bytes:
    return orjson.dumps({"custom_id": "t-2", "result": result})


def test_anthropic_result_lines() -> None:
    """Result types map to outcomes; only succeeded is billed; cache reads are cached input."""
    message = {
        "id": "msg_1",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 5,
        },
    }
    ok = anth.parse_line(anthropic_line({"type": "succeeded", "message": message}))
    assert (ok.outcome, ok.billed, ok.response) == (Outcome.SUCCEEDED, True, message)
    assert ok.usage == Usage(
        input_tokens=45, cached_input_tokens=30, output_tokens=3, cache_write_5m_tokens=5
    )
    err = anth.parse_line(
        anthropic_line(
            {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": "Overloaded"},
                },
            }
        )
    )
    assert (err.outcome, err.failure, err.billed) == (Outcome.ERRORED, R, False)
    assert err.error is not None and err.error["code"] == "overloaded_error"
    bad = anth.parse_line(
        anthropic_line(
            {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "no"},
                },
            }
        )
    )
    assert (bad.failure, bad.error and bad.error["message"]) == (P, "no")
    for kind, outcome in (("expired", Outcome.EXPIRED), ("canceled", Outcome.CANCELLED)):
        got = anth.parse_line(anthropic_line({"type": kind}))
        assert (got.outcome, got.failure, got.billed) == (outcome, R, False)


def test_parse_retry_after() -> None:
    """retry-after-ms wins; seconds and HTTP dates (against the Date header) are read."""
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert (
        parse_retry_after(
            {
                "retry-after": "Wed, 21 Oct 2026 07:28:30 GMT",
                "date": "Wed, 21 Oct 2026 07:28:00 GMT",
            }
        )
        == 30.0
    )
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(
        status, headers=headers or {}, request=httpx2.Request("POST", "http://sim/v1/batches")
    )


def test_vendor_error_classification() -> None:
    """SDK exceptions become ambiguous (create only), retryable, or permanent errors."""

    def vendor_error(exc: Exception, *, creating: bool = False) -> VendorError:
        sdk = anth if isinstance(exc, anthropic.APIError) else oai
        return sdk.vendor_error(exc, creating=creating)

    request = httpx2.Request("POST", "http://sim/v1/batches")
    assert isinstance(
        vendor_error(openai.APITimeoutError(request), creating=True), AmbiguousOutcome
    )
    read = vendor_error(openai.APIConnectionError(request=request))
    assert read.retryable and not isinstance(read, AmbiguousOutcome)
    overloaded = anthropic.InternalServerError(
        "529",
        response=_response(529),
        body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert isinstance(vendor_error(overloaded, creating=True), AmbiguousOutcome)
    assert vendor_error(overloaded).retryable
    limited = vendor_error(
        openai.RateLimitError(
            "429",
            response=_response(429, {"retry-after-ms": "2500"}),
            body={"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
        ),
        creating=True,
    )
    assert not isinstance(limited, AmbiguousOutcome)
    assert (limited.retryable, limited.status, limited.retry_after) == (True, 429, 2.5)
    refused = vendor_error(
        anthropic.BadRequestError(
            "400",
            response=_response(400),
            body={
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "custom_id is invalid"},
            },
        ),
        creating=True,
    )
    assert (refused.retryable, refused.status, refused.code, refused.message) == (
        False,
        400,
        "invalid_request_error",
        "custom_id is invalid",
    )


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_jsonl_lines_across_chunks() -> None:
    """Lines split across chunks are joined; blank lines and CRs are dropped."""
    got = [x async for x in jsonl_lines(_chunks(b'{"a":', b'1}\r\n\n{"b"', b":2}\n", b'{"c":3}'))]
    assert got == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


async def test_jsonl_lines_a_line_over_several_chunks_and_a_chunk_of_many_lines() -> None:
    """A line spread over chunks with no line end in them comes out whole; a chunk
    holding many lines, a CR before its last newline and a blank line gives each line."""
    parts = (b'{"long":"', b"x" * 10, b"y" * 10, b'"}\n{"d":4}\n   \n{"e":5}\r\n{"f"', b":6}\r")
    got = [x async for x in jsonl_lines(_chunks(*parts))]
    assert got == [b'{"long":"' + b"x" * 10 + b"y" * 10 + b'"}', b'{"d":4}', b'{"e":5}', b'{"f":6}']


def _vb(vid: str, created: float) -> VendorBatch:
    return VendorBatch(
        vendor_id=vid,
        vendor_status="in_progress",
        state=State.IN_PROGRESS,
        total=1,
        succeeded=0,
        failed=0,
        created_at=created,
    )


async def _listing(*batches: VendorBatch, read: list[str]) -> AsyncIterator[VendorBatch]:
    for b in batches:
        read.append(b.vendor_id)
        yield b


async def test_window_newest_first_stops_early() -> None:
    """A newest-first listing is cut at the first batch older than `since`."""
    read: list[str] = []
    listing = _listing(_vb("a", 50), _vb("b", 40), _vb("c", 30), _vb("d", 20), read=read)
    got = [b.vendor_id async for b in within_window(listing, since=35)]
    assert got == ["a", "b"] and read == ["a", "b", "c"]


async def test_window_oldest_first_reads_all_and_sorts() -> None:
    """An oldest-first listing is read to the end and the window is given newest first."""
    read: list[str] = []
    listing = _listing(_vb("d", 20), _vb("c", 30), _vb("b", 40), _vb("a", 50), read=read)
    got = [b.vendor_id async for b in within_window(listing, since=35)]
    assert got == ["a", "b"] and read == ["d", "c", "b", "a"]


async def test_make_provider() -> None:
    """The factory builds the adapters with SDK retries off and refuses unknown names."""
    for name in ("openai", "anthropic"):
        provider = make_provider(name, base_url="http://sim/v1", api_key="k")
        assert provider.name == name
        assert provider.client.max_retries == 0  # type: ignore[attr-defined]
        await provider.aclose()
    gemini = make_provider("gemini", base_url="http://sim", api_key="k")
    options = gemini.client._api_client._http_options  # type: ignore[attr-defined]
    assert gemini.name == "gemini" and options.retry_options.attempts == 1
    assert options.api_version == "v1beta"
    await gemini.aclose()
    with pytest.raises(ValueError, match="unknown provider"):
        make_provider("cohere")


def test_unknown_status_reads_as_in_progress() -> None:
    """A status neither table knows keeps the batch live (polled again), raw value kept."""
    assert oai.map_status("paused", 3, 0, 0) == State.IN_PROGRESS
    counts = anth.EndedCounts(0, 0, 0, 0, cancel_initiated=False)
    assert anth.map_status("paused", counts) == State.IN_PROGRESS
