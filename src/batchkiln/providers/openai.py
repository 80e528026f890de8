"""OpenAI Batch API through the official async SDK (`openai`), SDK retries off.

A batch is a JSONL file uploaded as `kiln-<tag>.jsonl` (purpose `batch`) and a
`POST /batches` naming it, with our tag in `metadata`. Results are two files,
output then errors, streamed line by line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import httpx
import httpx2
import openai
import orjson
from openai.types import Batch

from batchkiln.lifecycle import State
from batchkiln.providers._shared import jsonl_lines, within_window
from batchkiln.providers.base import (
    CREATE_TIMEOUT_SECONDS,
    BatchError,
    CreateSpec,
    FailureClass,
    Outcome,
    ResultLine,
    Usage,
    VendorBatch,
)
from batchkiln.providers.failures import SdkErrors, StatusDetail, classify_openai


def _status_detail(exc: Exception) -> StatusDetail:
    """The status, message and code of an `openai.APIStatusError`."""
    exc = cast(openai.APIStatusError, exc)  # SdkErrors calls this for its status class only
    body: Any = exc.body
    message = body.get("message") if isinstance(body, Mapping) else None
    return StatusDetail(
        exc.status_code,
        str(message) if message else str(exc),
        (exc.code or exc.type) if isinstance(body, Mapping) else exc.code,
        exc.response.headers,
    )


ERRORS = SdkErrors(
    openai.APIConnectionError, openai.APIStatusError, openai.APIError, _status_detail
)
SDK_ERRORS = ERRORS.caught
vendor_error = ERRORS.vendor_error

TAG_KEY = "kiln_tag"
KEY_KEY = "kiln_key"

# Batch.status -> our state. None: decided by the request counts (`completed_state`).
STATUS_TABLE: dict[str, State | None] = {
    "validating": State.PENDING,  # input being checked; queued
    "in_progress": State.IN_PROGRESS,
    "finalizing": State.IN_PROGRESS,  # results being written
    "cancelling": State.CANCELLING,  # up to 10 minutes
    "completed": None,  # every request ran; the counts say how it went
    "failed": State.FAILED,  # input rejected at validation (errors.data says why)
    "expired": State.EXPIRED,  # the 24 h window closed first
    "cancelled": State.CANCELLED,
}


def completed_state(total: int, completed: int, failed: int) -> State:
    """A `completed` batch by its counts. It ran, so it is never `failed` (the vendor's
    rejection of the whole batch): one in which nothing succeeded is `partial` with 0
    succeeded (real payload tr-001), and its retryable failures go to a child."""
    if total == 0 or (failed == 0 and completed > 0):
        return State.COMPLETED
    return State.PARTIAL


def map_status(status: str, total: int, completed: int, failed: int) -> State:
    """A status missing from the table (a new vendor status) reads as still in progress,
    so the batch keeps being polled; `vendor_status` keeps the raw value for the log."""
    state = STATUS_TABLE.get(status, State.IN_PROGRESS)
    return completed_state(total, completed, failed) if state is None else state


def to_vendor_batch(batch: Batch) -> VendorBatch:
    counts = batch.request_counts
    total, completed, failed = (
        (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)
    )
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    errors = tuple(
        BatchError(code=e.code or "error", message=e.message or "", line=e.line)
        for e in (batch.errors.data or [] if batch.errors else [])
    )
    return VendorBatch(
        vendor_id=batch.id,
        vendor_status=batch.status,
        state=map_status(batch.status, total, completed, failed),
        total=total,
        succeeded=completed,
        failed=failed,
        created_at=float(batch.created_at),
        ended_at=float(ended) if ended is not None else None,
        expires_at=float(batch.expires_at) if batch.expires_at is not None else None,
        tag=(batch.metadata or {}).get(TAG_KEY),
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors=errors,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


# orjson gives plain dicts: `isinstance(x, dict)` is a C check, `Mapping` an ABC one
# (a fifth of the line parser's time at 50,000 lines).
def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def usage_of(body: Mapping[str, Any]) -> Usage:
    """Token usage of a chat, responses, completions or embeddings body."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    if "input_tokens" in usage:  # responses API
        details = _map(usage.get("input_tokens_details"))
        return Usage(
            input_tokens=_int(usage.get("input_tokens")),
            cached_input_tokens=_int(details.get("cached_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
        )
    # chat, completions, embeddings: once per result line, so the checks are inline
    prompt_details = usage.get("prompt_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        prompt if isinstance(prompt, int) else 0,
        cached if isinstance(cached, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def parse_line(raw: bytes) -> ResultLine:
    """One line of an output or error file."""
    try:
        data = orjson.loads(raw)
        custom_id = str(data["custom_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ResultLine(
            wire_id="",
            outcome=Outcome.ERRORED,
            failure=FailureClass.PERMANENT,
            raw=raw,
            error={"code": "unreadable_result_line", "message": raw[:200].decode(errors="replace")},
        )
    response = data.get("response")
    if isinstance(response, dict):
        status = _int(response.get("status_code"))
        body = response.get("body")
        body = body if isinstance(body, dict) else {}
        if 200 <= status < 300:
            return ResultLine(
                custom_id,
                Outcome.SUCCEEDED,
                response=body,
                usage=usage_of(body),
                billed=True,
                raw=raw,
            )
        err = _map(body.get("error"))
        code, type_ = err.get("code"), err.get("type")
        message = err.get("message") or ""
        if status == 0 and not code:  # no HTTP response at all (tr-016): transient
            code, message = "no_response", message or "the request got no HTTP response"
        return ResultLine(
            custom_id,
            Outcome.ERRORED,
            raw=raw,
            error={
                "code": code or type_ or f"http_{status}",
                "message": message,
                "status": status,
                "type": type_,
            },
            failure=classify_openai(code, type_, status, message),
        )
    err = _map(data.get("error"))
    code = err.get("code")
    error = {"code": code or "unknown_error", "message": err.get("message") or ""}
    if code == "batch_expired":
        return ResultLine(
            custom_id, Outcome.EXPIRED, error=error, failure=FailureClass.RETRYABLE, raw=raw
        )
    if code == "batch_cancelled":
        return ResultLine(
            custom_id, Outcome.CANCELLED, error=error, failure=FailureClass.RETRYABLE, raw=raw
        )
    failure = classify_openai(code, None, None, error["message"])
    return ResultLine(custom_id, Outcome.ERRORED, error=error, failure=failure, raw=raw)


def input_filename(tag: str) -> str:
    return f"kiln-{tag}.jsonl"


def build_input(spec: CreateSpec) -> bytes:
    """The batch input file: one request line per wire request."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": r.wire_id,
                "method": "POST",
                "url": spec.endpoint,
                "body": r.body if "model" in r.body else {"model": spec.model, **r.body},
            }
        )
        + b"\n"
        for r in spec.requests
    )


class OpenAIProvider:
    """The OpenAI Batch API. Credentials and base URL default to the SDK's own
    `OPENAI_API_KEY` / `OPENAI_BASE_URL`."""

    name = "openai"
    supports_webhooks = True

    def __init__(
        self,
        client: openai.AsyncOpenAI | None = None,
        *,
        http_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        list_page_size: int = 100,
    ) -> None:
        self._owns_http = client is None and http_client is None
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                http_client=cast(Any, http_client),  # the SDK accepts an httpx client too
            )
        self._client = client.with_options(max_retries=0)
        self.list_page_size = list_page_size

    def warm_up(self) -> None:
        """Import now what the SDK imports on first use (its `files` and `batches`
        resources, anyio's asyncio backend): a worker calls this at start, so the
        imports do not block its event loop (and the heartbeat) inside a first step."""
        import anyio._backends._asyncio  # noqa: F401

        _ = (self._client.files, self._client.batches)

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK client every call goes through (max_retries=0)."""
        return self._client

    async def create(self, spec: CreateSpec) -> VendorBatch:
        data = build_input(spec)
        filename = input_filename(spec.tag)
        file_id = await self._uploaded(filename, len(data))
        if file_id is None:
            try:
                uploaded = await self._client.files.create(
                    file=(filename, data, "application/jsonl"), purpose="batch"
                )
            except SDK_ERRORS as exc:  # never ambiguous: no batch exists yet
                raise vendor_error(exc, what="upload input file") from exc
            file_id = uploaded.id
        try:
            batch = await self._client.batches.create(
                input_file_id=file_id,
                endpoint=cast(Any, spec.endpoint),
                completion_window="24h",
                metadata={TAG_KEY: spec.tag, KEY_KEY: spec.batch_key[:512]},
                timeout=CREATE_TIMEOUT_SECONDS,
            )
        except SDK_ERRORS as exc:
            raise vendor_error(exc, creating=True, what="create batch") from exc
        return to_vendor_batch(batch)

    async def _uploaded(self, filename: str, size: int | None) -> str | None:
        """The newest uploaded batch file named `filename` (of `size` bytes, if given)."""
        return next(iter(await self._uploaded_ids(filename, size)), None)

    async def _uploaded_ids(self, filename: str, size: int | None) -> list[str]:
        found: list[tuple[int, str]] = []
        try:
            async for f in self._client.files.list(purpose="batch"):
                if f.filename == filename and f.status != "error" and size in (None, f.bytes):
                    found.append((f.created_at, f.id))
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="list files") from exc
        return [file_id for _, file_id in sorted(found, reverse=True)]

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        try:
            return to_vendor_batch(await self._client.batches.retrieve(vendor_id))
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="retrieve batch") from exc

    async def _listed(self) -> AsyncIterator[VendorBatch]:
        try:
            async for batch in self._client.batches.list(limit=self.list_page_size):
                yield to_vendor_batch(batch)
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="list batches") from exc

    def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        """Batches created at or after `since`, newest first (the listing is cut early
        only once it has shown itself newest-first; see `within_window`)."""
        return within_window(self._listed(), since=since)

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        """Batches tagged `spec.tag`, or untagged ones made from our uploaded input file."""
        found: list[VendorBatch] = []
        our_files: set[str] | None = None
        async for batch in self.list_recent(since=since):
            if batch.tag is not None:
                if batch.tag == spec.tag:
                    found.append(batch)
                continue
            if our_files is None:
                our_files = set(await self._uploaded_ids(input_filename(spec.tag), None))
            if batch.input_file_id in our_files:
                found.append(batch)
        return found

    async def cancel(self, vendor_id: str) -> VendorBatch:
        try:
            return to_vendor_batch(await self._client.batches.cancel(vendor_id))
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="cancel batch") from exc

    async def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        """The output file's lines, then the error file's, streamed (the files named by
        `batch`, an ended snapshot: no second retrieve)."""
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                async with self._client.files.with_streaming_response.content(file_id) as resp:
                    async for raw in jsonl_lines(resp.iter_bytes()):
                        yield parse_line(raw)
            except SDK_ERRORS as exc:
                raise vendor_error(exc, what=f"download {file_id}") from exc

    async def cleanup(self, batch: VendorBatch) -> None:
        """Delete the input, output and error files named by the ended snapshot `batch`
        (already gone is fine)."""
        for file_id in (batch.input_file_id, batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                await self._client.files.delete(file_id)
            except openai.NotFoundError:
                continue
            except SDK_ERRORS as exc:
                raise vendor_error(exc, what=f"delete {file_id}") from exc

    async def aclose(self) -> None:
        """Close the SDK client's connections if this adapter made them."""
        if self._owns_http:
            await self._client.close()


__all__ = [
    "STATUS_TABLE",
    "OpenAIProvider",
    "completed_state",
    "map_status",
    "parse_line",
    "to_vendor_batch",
    "usage_of",
]
