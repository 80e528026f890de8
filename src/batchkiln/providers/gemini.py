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
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Literal

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from batchkiln.lifecycle import State
from batchkiln.providers._shared import jsonl_lines, within_window
from batchkiln.providers.base import (
    CREATE_TIMEOUT_SECONDS,
    CreateSpec,
    ResultLine,
    VendorBatch,
    VendorError,
)
from batchkiln.providers.gemini_wire import (
    API_VERSION,
    SDK_ERRORS,
    STATUS_TABLE,
    WINDOW_SECONDS,
    as_map,
    build_input,
    display_name,
    inline_body,
    inlined,
    input_display_name,
    map_status,
    model_name,
    output_of,
    parse_inline,
    parse_line,
    succeeded_state,
    to_vendor_batch,
    usage_of,
    vendor_error,
)


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
                path = f"{model_name(spec.model)}:batchGenerateContent"
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
                model=model_name(spec.model),
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
                yield to_vendor_batch(as_map(raw))
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
        """Every result of an ended batch: the responses file the snapshot `batch` names,
        streamed line by line (no second GET), or the inline responses, which live in the
        batch itself and need one. A FAILED or EXPIRED batch has none."""
        file_name = batch.output_file_id
        if file_name is None and batch.state not in (State.FAILED, State.EXPIRED):
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
        # The SDK hands over 1 MiB chunks; one waiting chunk keeps memory flat (bench/).
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=1)

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
        """Delete the input and responses files the ended snapshot `batch` names (already
        gone is fine)."""
        for name in (batch.input_file_id, batch.output_file_id):
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
