"""Gemini Batch Mode (Developer API) through the official SDK (`google-genai`), retries off.

A batch is a JSONL input file uploaded with the Files API's resumable protocol (display
name `kiln-<tag>.jsonl`), one line `{"key": "<tag>-<seq>", "request": {...}}` per request,
and a `batchGenerateContent` naming it, with `kiln-<tag>` as the batch's displayName.
Create is not idempotent and a batch carries no metadata, so the uploaded file's name is
handed to the engine (`CreateSpec.record_input`) and stored BEFORE create: after an unknown
outcome, a listed batch whose `inputConfig.fileName` is that file is ours, exactly.

Raw JSON. The SDK's `BatchJob` drops `batchStats` and `inputConfig`
(`batches._BatchJob_from_mldev` maps only name, displayName, state, times, model and
output), so `retrieve` and `list` go through the SDK's own API client,
`client.aio._api_client.async_request("get", "batches/...", {})`, which builds the same
URL, auth header and timeout as the typed call and returns the body as text; we parse it
ourselves. Inline creates (small jobs, `mode="inline"`) use the same call so the
GenerateContentRequest goes on the wire exactly as the user wrote it.

Results are streamed: `files.download(file=..., destination=sink)` writes each chunk the
SDK's httpx client receives into `sink`, which hands it to our line splitter through a
small bounded queue (the plain `files.download` returns the whole file in memory). Lines
are joined only by key; a line without one of our keys comes back with an empty wire id
and is reported by the engine, never matched by position.

We pin `api_version="v1beta"`: google-genai 3.3.0 defaults to `v1`, while the batch
documentation (and spec section 5) use `v1beta`.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import httpx2
import orjson
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from batchkiln.lifecycle import State
from batchkiln.providers._shared import jsonl_lines, within_window
from batchkiln.providers.base import (
    CREATE_TIMEOUT_SECONDS,
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


def _map(value: Any) -> Mapping[str, Any]:
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
    output = _map(_map(raw.get("metadata")).get("output"))
    return output or _map(raw.get("response"))


def inlined(output: Mapping[str, Any]) -> list[Any] | None:
    entries = _map(output.get("inlinedResponses")).get("inlinedResponses")
    return entries if isinstance(entries, list) else None


def to_vendor_batch(raw: Mapping[str, Any]) -> VendorBatch:
    """A batch Operation (raw JSON) as our VendorBatch. `tag` is read from our displayName;
    it is a claim, not proof (see `GeminiProvider.find_candidates`)."""
    meta = _map(raw.get("metadata"))
    stats = _map(meta.get("batchStats"))
    total = _count(stats.get("requestCount"))
    succeeded = _count(stats.get("successfulRequestCount"))
    failed = _count(stats.get("failedRequestCount"))
    output = output_of(raw)
    has_output = bool(output.get("responsesFile")) or inlined(output) is not None
    state = str(meta.get("state") or "BATCH_STATE_UNSPECIFIED")
    created = parse_time(meta.get("createTime")) or 0.0
    error = _map(raw.get("error"))
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
        input_file_id=_map(meta.get("inputConfig")).get("fileName"),
        errors=errors,
    )


def usage_of(response: Mapping[str, Any]) -> Usage:
    """`usageMetadata` of a GenerateContentResponse. `promptTokenCount` already includes
    the cached tokens; thinking tokens are billed as output, tool-use prompts as input."""
    usage = _map(response.get("usageMetadata"))
    return Usage(
        input_tokens=_count(usage.get("promptTokenCount"))
        + _count(usage.get("toolUsePromptTokenCount")),
        cached_input_tokens=_count(usage.get("cachedContentTokenCount")),
        output_tokens=_count(usage.get("candidatesTokenCount"))
        + _count(usage.get("thoughtsTokenCount")),
    )


def _blocked(response: Mapping[str, Any]) -> str | None:
    """The reason a response carries no answer because of a safety block, if it does."""
    reason = _map(response.get("promptFeedback")).get("blockReason")
    if reason:
        return str(reason)
    candidates = response.get("candidates")
    if isinstance(candidates, list) and candidates:
        finish = _map(candidates[0]).get("finishReason")
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
    error = _map(entry.get("error")) or _map(entry.get("status"))
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
    """One line of a responses file: `{"key", "response" | "error"}`."""
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
    return parse_entry(data.get("key"), data, raw)


def parse_inline(entry: Any) -> ResultLine:
    """One `InlinedResponse`: our key is in the echoed `metadata`, which real users have
    seen missing (python-genai#2008); then the wire id is empty and the line reported."""
    data = entry if isinstance(entry, Mapping) else {}
    return parse_entry(_map(data.get("metadata")).get("key"), data, orjson.dumps(data))


def _model(model: str) -> str:
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
    model = _model(spec.model)
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
    details = _map(exc.details).get("error", exc.details)
    for item in _map(details).get("details") or []:
        delay = _map(item).get("retryDelay")
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


class _Sink:
    """A `files.download` destination that hands each chunk to a bounded queue."""

    def __init__(self, queue: asyncio.Queue[bytes | Exception | None]) -> None:
        self.queue = queue

    async def write(self, chunk: bytes) -> None:
        await self.queue.put(chunk)


class GeminiProvider:
    """Gemini Batch Mode. Credentials and base URL default to the SDK's own variables
    (`GEMINI_API_KEY` / `GOOGLE_API_KEY`) and endpoint."""

    name = "gemini"
    supports_webhooks = True  # static project webhooks, received at /webhooks/gemini

    def __init__(
        self,
        client: genai.Client | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        list_page_size: int = 100,
        mode: Literal["file", "inline"] = "file",
    ) -> None:
        self._owns_client = client is None
        if client is None:
            options = types.HttpOptions(
                base_url=base_url,
                api_version=API_VERSION,
                retry_options=types.HttpRetryOptions(attempts=1),  # SDK retries off
                httpx_async_client=http_client,
            )
            client = genai.Client(api_key=api_key, vertexai=False, http_options=options)
        self._client = client
        self.list_page_size = list_page_size
        self.mode = mode

    @property
    def client(self) -> genai.Client:
        return self._client

    async def _raw(
        self, method: str, path: str, body: dict[str, Any] | None = None, **options: Any
    ) -> dict[str, Any]:
        """A call through the SDK's own API client, answered as parsed JSON."""
        http = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1), **options)
        reply = await self._client.aio._api_client.async_request(method, path, body or {}, http)
        data = json.loads(reply.body) if reply.body else {}
        return data if isinstance(data, dict) else {}

    # ---- create ------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> VendorBatch:
        timeout = {"timeout": int(CREATE_TIMEOUT_SECONDS * 1000)}  # milliseconds
        if self.mode == "inline":
            try:
                path = f"{_model(spec.model)}:batchGenerateContent"
                raw = await self._raw("post", path, inline_body(spec), **timeout)
            except SDK_ERRORS as exc:
                raise vendor_error(exc, creating=True, what="create batch") from exc
            return to_vendor_batch(raw)
        file_name = spec.input_file
        if file_name is None or not await self._file_alive(file_name):
            file_name = await self._upload(spec)
            if spec.record_input is not None:
                await spec.record_input(file_name)  # stored before the create call
        try:
            job = await self._client.aio.batches.create(
                model=_model(spec.model),
                src=file_name,
                config=types.CreateBatchJobConfig(
                    display_name=display_name(spec.tag),
                    http_options=types.HttpOptions(
                        retry_options=types.HttpRetryOptions(attempts=1), **timeout
                    ),
                ),
            )
        except SDK_ERRORS as exc:
            raise vendor_error(exc, creating=True, what="create batch") from exc
        created = job.create_time.timestamp() if job.create_time else 0.0
        state = job.state.value if job.state else "JOB_STATE_PENDING"
        return VendorBatch(
            vendor_id=job.name or "",
            vendor_status=state.replace("JOB_", "BATCH_"),
            state=map_status(state, failed=0, has_output=False),
            total=len(spec.requests),
            succeeded=0,
            failed=0,
            created_at=created,
            expires_at=created + WINDOW_SECONDS if created else None,
            tag=spec.tag,
            input_file_id=file_name,
        )

    async def _upload(self, spec: CreateSpec) -> str:
        data = build_input(spec)  # held in memory, as the OpenAI adapter does
        try:
            uploaded = await self._client.aio.files.upload(
                file=io.BytesIO(data),
                config=types.UploadFileConfig(
                    display_name=input_display_name(spec.tag), mime_type="application/jsonl"
                ),
            )
        except SDK_ERRORS as exc:  # never ambiguous: no batch exists yet
            raise vendor_error(exc, what="upload input file") from exc
        if not uploaded.name:
            raise VendorError("upload input file: the reply named no file", retryable=True)
        return uploaded.name

    async def _file_alive(self, name: str) -> bool:
        try:
            await self._client.aio.files.get(name=name)
        except genai_errors.ClientError as exc:
            if exc.code in (403, 404):
                return False
            raise vendor_error(exc, what=f"get {name}") from exc
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what=f"get {name}") from exc
        return True

    # ---- reads -------------------------------------------------------------------------

    async def _get(self, vendor_id: str) -> dict[str, Any]:
        try:
            return await self._raw("get", vendor_id)
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what=f"retrieve {vendor_id}") from exc

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        return to_vendor_batch(await self._get(vendor_id))

    async def _listed(self) -> AsyncIterator[VendorBatch]:
        token = ""
        while True:
            path = f"batches?pageSize={self.list_page_size}"
            if token:
                path += f"&pageToken={token}"
            try:
                page = await self._raw("get", path)
            except SDK_ERRORS as exc:
                raise vendor_error(exc, what="list batches") from exc
            for raw in page.get("operations") or []:
                yield to_vendor_batch(_map(raw))
            token = str(page.get("nextPageToken") or "")
            if not token:
                return

    def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        """Batches created at or after `since`, newest first; the unfiltered listing (the
        Developer API takes no filter) stops at the first batch older than our intent once
        it has shown itself newest-first (see `within_window`)."""
        return within_window(self._listed(), since=since)

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        """A batch made from our recorded input file is ours (tagged: certain). One that
        only carries our displayName, with our request count, is a candidate to confirm
        by its result keys (untagged: handled like Anthropic's, ambiguity and all)."""
        found: list[VendorBatch] = []
        async for batch in self.list_recent(since=since):
            if spec.input_file is not None and batch.input_file_id == spec.input_file:
                found.append(replace(batch, tag=spec.tag))
            elif batch.tag == spec.tag and batch.total in (0, len(spec.requests)):
                found.append(replace(batch, tag=None))
        return found

    async def cancel(self, vendor_id: str) -> VendorBatch:
        try:
            await self._client.aio.batches.cancel(name=vendor_id)
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what=f"cancel {vendor_id}") from exc
        return await self.retrieve(vendor_id)

    # ---- results -----------------------------------------------------------------------

    async def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        """Every result of an ended batch: the responses file streamed line by line, or
        the inline responses. A FAILED or EXPIRED batch has none."""
        output = output_of(await self._get(batch.vendor_id))
        entries = inlined(output)
        if entries is not None:
            for entry in entries:
                yield parse_inline(entry)
            return
        file_name = output.get("responsesFile")
        if not isinstance(file_name, str) or not file_name:
            return
        async for raw in jsonl_lines(self._download(file_name)):
            yield parse_line(raw)

    async def _download(self, name: str) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=8)

        async def run() -> None:
            try:
                sink: Any = _Sink(queue)  # the SDK types destination as a blocking IOBase
                await self._client.aio.files.download(file=name, destination=sink)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed to the reader, which raises it
                await queue.put(exc)
                return
            await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, SDK_ERRORS):
                    raise vendor_error(item, what=f"download {name}") from item
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cleanup(self, batch: VendorBatch) -> None:
        """Delete the input and responses files (already gone is fine)."""
        raw = await self._get(batch.vendor_id)
        names = [
            _map(_map(raw.get("metadata")).get("inputConfig")).get("fileName"),
            output_of(raw).get("responsesFile"),
        ]
        for name in names:
            if not isinstance(name, str) or not name:
                continue
            try:
                await self._client.aio.files.delete(name=name)
            except genai_errors.ClientError as exc:
                if exc.code not in (403, 404):
                    raise vendor_error(exc, what=f"delete {name}") from exc
            except SDK_ERRORS as exc:
                raise vendor_error(exc, what=f"delete {name}") from exc

    async def aclose(self) -> None:
        """Close the SDK client's own connections (a caller's httpx client stays open)."""
        if self._owns_client:
            await self._client.aio.aclose()
            self._client.close()


__all__ = [
    "STATUS_TABLE",
    "GeminiProvider",
    "build_input",
    "map_status",
    "parse_inline",
    "parse_line",
    "succeeded_state",
    "to_vendor_batch",
    "usage_of",
]
