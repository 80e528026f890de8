"""The Gemini adapter's pure parts: its one status table, result lines, failure classes,
usage, timestamps and SDK errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from google.genai import errors as genai_errors
from google.genai import types

from batchkiln.lifecycle import State
from batchkiln.providers import AmbiguousOutcome, FailureClass, Outcome, Usage
from batchkiln.providers import gemini_wire as gem
from batchkiln.providers.failures import GEMINI_STATUSES, classify_gemini

R, P = FailureClass.RETRYABLE, FailureClass.PERMANENT


def operation(state: str, stats: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "batches/b1",
        "displayName": "kiln-abc",
        "model": "models/gemini-2.5-flash",
        "inputConfig": {"fileName": "files/in1"},
        "createTime": "2026-01-01T00:00:00.123456789Z",
        "state": state,
        "batchStats": stats or {},
    }
    metadata.update(extra.pop("metadata", {}))
    return {"name": "batches/b1", "metadata": metadata, **extra}


OUT = {"metadata": {"output": {"responsesFile": "files/out1"}}}


@pytest.mark.parametrize(
    ("state", "stats", "extra", "expected"),
    [
        ("BATCH_STATE_UNSPECIFIED", {}, {}, State.PENDING),
        (
            "BATCH_STATE_PENDING",
            {"requestCount": "4", "pendingRequestCount": "4"},
            {},
            State.PENDING,
        ),
        (
            "BATCH_STATE_RUNNING",
            {"requestCount": "4", "successfulRequestCount": "1"},
            {},
            State.IN_PROGRESS,
        ),
        (
            "BATCH_STATE_SUCCEEDED",
            {"requestCount": "4", "successfulRequestCount": "4"},
            OUT,
            State.COMPLETED,
        ),
        (
            "BATCH_STATE_SUCCEEDED",
            {"requestCount": "4", "successfulRequestCount": "3", "failedRequestCount": "1"},
            OUT,
            State.PARTIAL,
        ),
        (
            "BATCH_STATE_SUCCEEDED",
            {"requestCount": "4", "failedRequestCount": "4"},
            OUT,
            State.PARTIAL,
        ),
        (
            "BATCH_STATE_SUCCEEDED",
            {"requestCount": "4", "successfulRequestCount": "4"},
            {},
            State.IN_PROGRESS,
        ),
        ("BATCH_STATE_FAILED", {}, {"error": {"code": 400, "message": "bad file"}}, State.FAILED),
        ("BATCH_STATE_CANCELLED", {"requestCount": "4"}, {}, State.CANCELLED),
        ("BATCH_STATE_EXPIRED", {"requestCount": "4"}, {}, State.EXPIRED),
        ("BATCH_STATE_SOMETHING_NEW", {}, {}, State.IN_PROGRESS),
        (
            "JOB_STATE_SUCCEEDED",
            {"requestCount": "1", "successfulRequestCount": "1"},
            OUT,
            State.COMPLETED,
        ),
    ],
)
def test_gemini_status_table(
    state: str, stats: dict[str, str], extra: dict[str, Any], expected: State
) -> None:
    """Every wire state (SUCCEEDED by its counts and whether its output is listed yet)
    maps to one of ours; an unknown state reads as in progress."""
    assert gem.to_vendor_batch(operation(state, stats, **extra)).state == expected


def test_gemini_table_covers_every_state_the_sdk_knows_for_the_developer_api() -> None:
    """The table has a row for every BATCH_STATE_* (as the SDK's t_job_state renames them)."""
    names = {s.value for s in types.JobState}
    developer = {"UNSPECIFIED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"}
    assert {f"JOB_STATE_{n}" for n in developer} <= names
    assert {f"BATCH_STATE_{n}" for n in developer} <= set(gem.STATUS_TABLE)


def test_batch_fields_come_from_the_raw_json() -> None:
    """Counters are int64 strings (zeros left out), times RFC 3339 with nanoseconds, the
    tag from our displayName, the input file from inputConfig, 48 h to expiry."""
    vb = gem.to_vendor_batch(
        operation(
            "BATCH_STATE_FAILED",
            {"requestCount": "7", "failedRequestCount": "2"},
            error={"code": 400, "message": "bad line 3"},
            metadata={"endTime": "2026-01-01T01:00:00Z"},
        )
    )
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert (vb.total, vb.succeeded, vb.failed) == (7, 0, 2)
    assert vb.created_at == pytest.approx(start + 0.123456)
    assert vb.ended_at == start + 3600 and vb.expires_at == pytest.approx(start + 0.123456 + 172800)
    assert (vb.tag, vb.input_file_id, vb.vendor_id) == ("abc", "files/in1", "batches/b1")
    assert [(e.code, e.message) for e in vb.errors] == [("400", "bad line 3")]


def ok_line(key: str | None, **response: Any) -> bytes:
    body = {
        "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5},
        **response,
    }
    line: dict[str, Any] = {"response": body}
    if key is not None:
        line["key"] = key
    return orjson.dumps(line)


def test_a_response_line_is_billed_with_its_usage() -> None:
    """usageMetadata: prompt (cached included) plus tool-use prompt in, candidates plus
    thoughts out."""
    line = gem.parse_line(
        ok_line(
            "t-1",
            usageMetadata={
                "promptTokenCount": 100,
                "cachedContentTokenCount": 40,
                "candidatesTokenCount": 20,
                "thoughtsTokenCount": 7,
                "toolUsePromptTokenCount": 3,
            },
        )
    )
    assert line.wire_id == "t-1" and line.outcome == Outcome.SUCCEEDED and line.billed
    assert line.usage == Usage(input_tokens=103, cached_input_tokens=40, output_tokens=27)


@pytest.mark.parametrize(
    ("response", "code"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}, "candidates": []}, "SAFETY"),
        ({"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]}, "PROHIBITED_CONTENT"),
        ({"candidates": [{"finishReason": "RECITATION"}]}, "RECITATION"),
    ],
)
def test_safety_blocks_are_permanent_failures(response: dict[str, Any], code: str) -> None:
    """A refusal on safety grounds will refuse again: errored, permanent."""
    line = gem.parse_line(ok_line("t-2", **response))
    assert line.outcome == Outcome.ERRORED and line.failure == P
    assert line.error is not None and line.error["code"] == code


@pytest.mark.parametrize(
    ("error", "code", "cls"),
    [
        (
            {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"},
            "RESOURCE_EXHAUSTED",
            R,
        ),
        ({"code": 500, "message": "x", "status": "INTERNAL"}, "INTERNAL", R),
        ({"code": 503, "message": "x", "status": "UNAVAILABLE"}, "UNAVAILABLE", R),
        ({"code": 504, "message": "x", "status": "DEADLINE_EXCEEDED"}, "DEADLINE_EXCEEDED", R),
        ({"code": 400, "message": "x", "status": "INVALID_ARGUMENT"}, "INVALID_ARGUMENT", P),
        ({"code": 403, "message": "x", "status": "PERMISSION_DENIED"}, "PERMISSION_DENIED", P),
        ({"code": 502, "message": "no status"}, "502", R),  # unknown: by HTTP code
        ({"code": 418, "message": "no status"}, "418", P),
    ],
)
def test_error_lines_are_classified_by_status_then_code(
    error: dict[str, Any], code: str, cls: FailureClass
) -> None:
    """A failed line's google.rpc status decides; without one, its HTTP code."""
    line = gem.parse_line(orjson.dumps({"key": "t-3", "error": error}))
    assert line.wire_id == "t-3" and line.outcome == Outcome.ERRORED and not line.billed
    assert line.failure == cls and line.error is not None and line.error["code"] == code


def test_the_status_table_names_the_issue_classes() -> None:
    """The classes the issue names: 429/500/503/504 retryable; 400/403/safety permanent."""
    for status in ("RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
        assert GEMINI_STATUSES[status] == R
    for status in ("INVALID_ARGUMENT", "PERMISSION_DENIED", "SAFETY"):
        assert GEMINI_STATUSES[status] == P
    assert classify_gemini(None, None) == P


def test_lines_without_our_key_have_no_wire_id() -> None:
    """No key (or an unreadable line) gives an empty wire id: reported, never guessed."""
    assert gem.parse_line(ok_line(None)).wire_id == ""
    bad = gem.parse_line(b"not json")
    assert bad.wire_id == "" and bad.error is not None
    assert bad.error["code"] == "unreadable_result_line"
    assert gem.parse_inline({"response": {"candidates": [{}]}}).wire_id == ""
    keyed = gem.parse_inline({"response": {"candidates": [{}]}, "metadata": {"key": "t-9"}})
    assert keyed.wire_id == "t-9"


def test_the_input_file_lines_drop_our_model_field() -> None:
    """`{"key", "request"}` per request; the model rides on the batch, not the line."""
    from batchkiln.providers import CreateSpec, WireRequest

    spec = CreateSpec(
        "k",
        "abc",
        "gemini-2.5-flash",
        "generateContent",
        [
            WireRequest(
                "abc-0", {"model": "gemini-2.5-flash", "contents": [{"parts": [{"text": "q"}]}]}
            )
        ],
    )
    assert orjson.loads(gem.build_input(spec)) == {
        "key": "abc-0",
        "request": {"contents": [{"parts": [{"text": "q"}]}]},
    }
    inline = gem.inline_body(spec)["batch"]["inputConfig"]["requests"]["requests"][0]
    assert inline["metadata"] == {"key": "abc-0"}
    assert inline["request"]["model"] == "models/gemini-2.5-flash"


def api_error(code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    response = httpx.Response(code, json=body, headers=headers or {})
    cls = genai_errors.ServerError if code >= 500 else genai_errors.ClientError
    return cls(code, body, response)


@pytest.mark.parametrize(
    ("exc", "creating", "ambiguous", "retryable"),
    [
        (api_error(500, {"error": {"code": 500, "status": "INTERNAL"}}), True, True, True),
        (api_error(503, {"error": {"code": 503}}), False, False, True),
        (
            api_error(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}),
            True,
            False,
            False,
        ),
        (api_error(429, {"error": {"code": 429}}), True, False, True),
        (httpx.ReadTimeout("slow"), True, True, True),
        (httpx.ConnectError("down"), False, False, True),
    ],
)
def test_sdk_errors_become_ours(
    exc: Exception, creating: bool, ambiguous: bool, retryable: bool
) -> None:
    """A create that may have happened is ambiguous; a definite refusal is not."""
    err = gem.vendor_error(exc, creating=creating)
    assert isinstance(err, AmbiguousOutcome) == ambiguous
    assert err.retryable == retryable


def test_retry_delay_prefers_retry_info_then_the_header() -> None:
    """google.rpc.RetryInfo `retryDelay` wins; the retry-after header is the fallback."""
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
    with_info = api_error(429, {"error": {"code": 429, "details": [info]}}, {"retry-after": "3"})
    assert gem.retry_delay(with_info) == 17.0
    header_only = api_error(429, {"error": {"code": 429}}, {"retry-after": "3"})
    assert gem.retry_delay(header_only) == 3.0
