"""Gemini's wire format, the adapter's pure part: its one status table, the batch
Operation's raw JSON as a VendorBatch, result lines (file lines and inline responses)
joined only by key, usage from `usageMetadata`, the input file lines, and SDK errors
turned into ours. `providers.gemini` makes the calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import httpx2
import orjson
import pydantic
from google.genai import errors as genai_errors

from batchkiln.lifecycle import State
from batchkiln.providers.base import (
    AmbiguousOutcome,
    BatchError,
    CreateSpec,
    FailureClass,
    Outcome,
    ResultLine,
    Usage,
    VendorBatch,
    VendorError,
)
from batchkiln.providers.failures import classify_gemini, parse_retry_after

API_VERSION = "v1beta"
WINDOW_SECONDS = 48 * 3600.0  # EXPIRED after 48 h pending or running [DOC]
DISPLAY_PREFIX = "kiln-"
# Finish reasons that mean the model refused on safety grounds: a permanent failure.
BLOCKED = frozenset(
    {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "RECITATION"}
)

# metadata.state -> our state. None: SUCCEEDED, decided by `succeeded_state`.
# The SDK's JOB_STATE_* names are accepted too (its BatchJob after create uses them).
STATUS_TABLE: dict[str, State | None] = {
    "BATCH_STATE_UNSPECIFIED": State.PENDING,  # not documented as ever shown; poll again
    "BATCH_STATE_PENDING": State.PENDING,  # queued; users report days here (stall signal)
    "BATCH_STATE_RUNNING": State.IN_PROGRESS,  # also while a cancel is being applied
    "BATCH_STATE_SUCCEEDED": None,  # ran to the end; the counts and output decide
    "BATCH_STATE_FAILED": State.FAILED,  # the batch as a whole (bad input file, ...)
    "BATCH_STATE_CANCELLED": State.CANCELLED,
    "BATCH_STATE_EXPIRED": State.EXPIRED,  # 48 h pending/running; no results
}
STATUS_TABLE.update({k.replace("BATCH_", "JOB_"): v for k, v in list(STATUS_TABLE.items())})


def succeeded_state(failed: int, has_output: bool) -> State:
    """A SUCCEEDED batch. Without its output listed yet (seen in the wild) it is still
    in progress: we keep polling rather than download nothing."""
    if not has_output:
        return State.IN_PROGRESS
    return State.COMPLETED if failed == 0 else State.PARTIAL


def map_status(state: str, *, failed: int, has_output: bool) -> State:
    """A state missing from the table reads as still in progress (polled again)."""
    mapped = STATUS_TABLE.get(state, State.IN_PROGRESS)
    return succeeded_state(failed, has_output) if mapped is None else mapped


def _count(value: Any) -> int:
    """An int64 counter: proto3 JSON sends it as a string, and leaves zeros out."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (Google writes up to nine fractional digits)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def display_name(tag: str) -> str:
    return f"{DISPLAY_PREFIX}{tag}"


def input_display_name(tag: str) -> str:
    return f"{DISPLAY_PREFIX}{tag}.jsonl"


def tag_of_display(name: Any) -> str | None:
    if isinstance(name, str) and name.startswith(DISPLAY_PREFIX):
        return name.removeprefix(DISPLAY_PREFIX).removesuffix(".jsonl") or None
    return None


def output_of(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where the results are: `metadata.output` (what the SDK reads), else `response`."""
    output = as_map(as_map(raw.get("metadata")).get("output"))
    return output or as_map(raw.get("response"))


def inlined(output: Mapping[str, Any]) -> list[Any] | None:
    entries = as_map(output.get("inlinedResponses")).get("inlinedResponses")
    return entries if isinstance(entries, list) else None


def to_vendor_batch(raw: Mapping[str, Any]) -> VendorBatch:
    """A batch Operation (raw JSON) as our VendorBatch. `tag` is read from our displayName;
    it is a claim, not proof (see `GeminiProvider.find_candidates`)."""
    meta = as_map(raw.get("metadata"))
    stats = as_map(meta.get("batchStats"))
    total = _count(stats.get("requestCount"))
    succeeded = _count(stats.get("successfulRequestCount"))
    failed = _count(stats.get("failedRequestCount"))
    output = output_of(raw)
    has_output = bool(output.get("responsesFile")) or inlined(output) is not None
    state = str(meta.get("state") or "BATCH_STATE_UNSPECIFIED")
    created = parse_time(meta.get("createTime")) or 0.0
    error = as_map(raw.get("error"))
    errors = (
        (BatchError(code=str(error.get("code", "error")), message=str(error.get("message", ""))),)
        if error
        else ()
    )
    return VendorBatch(
        vendor_id=str(raw.get("name") or meta.get("name") or ""),
        vendor_status=state,
        state=map_status(state, failed=failed, has_output=has_output),
        total=total,
        succeeded=succeeded,
        failed=failed,
        created_at=created,
        ended_at=parse_time(meta.get("endTime")),
        expires_at=created + WINDOW_SECONDS if created else None,
        tag=tag_of_display(meta.get("displayName")),
        input_file_id=as_map(meta.get("inputConfig")).get("fileName"),
        output_file_id=output.get("responsesFile") or None,
        errors=errors,
    )


def usage_of(response: Mapping[str, Any]) -> Usage:
    """`usageMetadata` of a GenerateContentResponse. `promptTokenCount` already includes
    the cached tokens; thinking tokens are billed as output, tool-use prompts as input."""
    usage = as_map(response.get("usageMetadata"))
    return Usage(
        input_tokens=_count(usage.get("promptTokenCount"))
        + _count(usage.get("toolUsePromptTokenCount")),
        cached_input_tokens=_count(usage.get("cachedContentTokenCount")),
        output_tokens=_count(usage.get("candidatesTokenCount"))
        + _count(usage.get("thoughtsTokenCount")),
    )


def _blocked(response: Mapping[str, Any]) -> str | None:
    """The reason a response carries no answer because of a safety block, if it does."""
    reason = as_map(response.get("promptFeedback")).get("blockReason")
    if reason:
        return str(reason)
    candidates = response.get("candidates")
    if isinstance(candidates, list) and candidates:
        finish = as_map(candidates[0]).get("finishReason")
        if finish in BLOCKED:
            return str(finish)
    elif not candidates:
        return "NO_CANDIDATES"
    return None


def parse_entry(key: Any, entry: Mapping[str, Any], raw: bytes) -> ResultLine:
    """One result (a file line or an inline response) with its key."""
    wire_id = key if isinstance(key, str) else ""
    response = entry.get("response")
    if isinstance(response, Mapping):
        body = dict(response)
        blocked = _blocked(body)
        if blocked is None:
            return ResultLine(
                wire_id,
                Outcome.SUCCEEDED,
                response=body,
                usage=usage_of(body),
                billed=True,
                raw=raw,
            )
        # A refusal on safety grounds will refuse again: permanent. Whether a blocked
        # prompt is billed is UNCONFIRMED; we count what usageMetadata reports.
        usage = usage_of(body)
        return ResultLine(
            wire_id,
            Outcome.ERRORED,
            response=body,
            error={"code": blocked, "message": f"blocked: {blocked}", "status": blocked},
            failure=FailureClass.PERMANENT,
            usage=usage,
            billed=usage.input_tokens > 0,
            raw=raw,
        )
    error = as_map(entry.get("error")) or as_map(entry.get("status"))
    if not error:
        return ResultLine(
            wire_id,
            Outcome.ERRORED,
            failure=FailureClass.PERMANENT,
            raw=raw,
            error={"code": "unreadable_result_line", "message": raw[:200].decode(errors="replace")},
        )
    code = error.get("code")
    status = error.get("status")
    http = code if isinstance(code, int) and not isinstance(code, bool) else None
    return ResultLine(
        wire_id,
        Outcome.ERRORED,
        raw=raw,
        error={
            "code": str(status or code or "unknown_error"),
            "message": str(error.get("message") or ""),
            "status": http,
        },
        failure=classify_gemini(str(status) if status else None, http),
    )


def parse_line(raw: bytes) -> ResultLine:
    """One line of a responses file, `{"key", "response" | "error"}`, or a stored inline
    response (its key in the echoed `metadata`)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return ResultLine(
            wire_id="",
            outcome=Outcome.ERRORED,
            failure=FailureClass.PERMANENT,
            raw=raw,
            error={"code": "unreadable_result_line", "message": raw[:200].decode(errors="replace")},
        )
    key = data.get("key", as_map(data.get("metadata")).get("key"))
    return parse_entry(key, data, raw)


def parse_inline(entry: Any) -> ResultLine:
    """One `InlinedResponse`: our key is in the echoed `metadata`, which real users have
    seen missing (python-genai#2008); then the wire id is empty and the line reported."""
    data = entry if isinstance(entry, Mapping) else {}
    return parse_entry(as_map(data.get("metadata")).get("key"), data, orjson.dumps(data))


def model_name(model: str) -> str:
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def _request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The GenerateContentRequest without our `model` (the batch names the model)."""
    return {k: v for k, v in body.items() if k != "model"}


def build_input(spec: CreateSpec) -> bytes:
    """The batch input file: one `{"key", "request"}` line per wire request."""
    return b"".join(
        orjson.dumps({"key": r.wire_id, "request": _request(r.body)}) + b"\n" for r in spec.requests
    )


def inline_body(spec: CreateSpec) -> dict[str, Any]:
    model = model_name(spec.model)
    return {
        "batch": {
            "displayName": display_name(spec.tag),
            "inputConfig": {
                "requests": {
                    "requests": [
                        {
                            "request": {**_request(r.body), "model": model},
                            "metadata": {"key": r.wire_id},
                        }
                        for r in spec.requests
                    ]
                }
            },
        }
    }


# Everything a call through the SDK can raise: API errors, transport errors (the SDK
# does not wrap httpx's), and a reply it could not read.
SDK_ERRORS = (
    genai_errors.APIError,
    httpx.HTTPError,
    httpx2.HTTPError,
    pydantic.ValidationError,
    json.JSONDecodeError,
    KeyError,  # upload: "Upload URL was not returned"
)


def retry_delay(exc: genai_errors.APIError) -> float | None:
    """google.rpc.RetryInfo `retryDelay` ("30s") from the error details, else the
    `retry-after` header."""
    details = as_map(exc.details).get("error", exc.details)
    for item in as_map(details).get("details") or []:
        delay = as_map(item).get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                pass
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers) if headers is not None else None


def vendor_error(exc: Exception, *, creating: bool = False, what: str = "call") -> VendorError:
    """Our error for an SDK exception. With `creating`, anything after which Google may
    hold the batch (cut connection, timeout, 5xx, an unreadable reply) is AmbiguousOutcome."""
    if isinstance(exc, genai_errors.APIError):
        code = exc.code if isinstance(exc.code, int) else 0
        message = f"{what}: {exc.message or exc}"
        if creating and (code >= 500 or code == 0):
            return AmbiguousOutcome(f"{what}: {code} {exc.message}", status=code or None)
        return VendorError(
            message,
            retryable=code in (408, 409, 429) or code >= 500,
            status=code or None,
            code=exc.status,
            retry_after=retry_delay(exc),
        )
    message = f"{what}: {type(exc).__name__}: {exc}"
    if creating:
        return AmbiguousOutcome(message)
    return VendorError(message, retryable=True)
