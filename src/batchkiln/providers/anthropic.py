"""Anthropic Message Batches through the official async SDK (`anthropic`), SDK retries off.

The requests go inline in the create call. There is no metadata, so a batch is
recognised after an unknown create by its creation window and request count,
and confirmed later by our tag prefix in the result custom_ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import anthropic
import httpx
import httpx2
import orjson
from anthropic.types.messages import MessageBatch

from batchkiln.lifecycle import State
from batchkiln.providers._bridge import httpx2_client_over
from batchkiln.providers._shared import jsonl_lines, within_window
from batchkiln.providers.base import (
    CREATE_TIMEOUT_SECONDS,
    CreateSpec,
    FailureClass,
    Outcome,
    ResultLine,
    Usage,
    VendorBatch,
    VendorError,
)
from batchkiln.providers.failures import SdkErrors, StatusDetail, classify_anthropic


def _status_detail(exc: Exception) -> StatusDetail:
    """The status, message and type of an `anthropic.APIStatusError`."""
    exc = cast(anthropic.APIStatusError, exc)  # SdkErrors calls this for its status class only
    return StatusDetail(
        exc.status_code, exc.api_message or str(exc), exc.type, exc.response.headers
    )


ERRORS = SdkErrors(
    anthropic.APIConnectionError, anthropic.APIStatusError, anthropic.APIError, _status_detail
)
SDK_ERRORS = ERRORS.caught
vendor_error = ERRORS.vendor_error


@dataclass(frozen=True)
class EndedCounts:
    """The request counts of an ended batch, and whether a cancel was asked for."""

    succeeded: int
    errored: int
    canceled: int
    expired: int
    cancel_initiated: bool

    @property
    def total(self) -> int:
        return self.succeeded + self.errored + self.canceled + self.expired


# processing_status -> state. None: `ended`, decided by ENDED_TABLE.
STATUS_TABLE: dict[str, State | None] = {
    "in_progress": State.IN_PROGRESS,  # no queued state is visible; counts stay in `processing`
    "canceling": State.CANCELLING,
    "ended": None,
}

# An ended batch: the first row whose condition holds gives the state.
ENDED_TABLE: tuple[tuple[str, Callable[[EndedCounts], bool], State], ...] = (
    # We asked to cancel (cancel_initiated_at is set), as OpenAI's `cancelled` does,
    # even when the cancel came too late to stop anything; finished work is in the results.
    ("cancel initiated", lambda c: c.cancel_initiated, State.CANCELLED),
    # No cancel, and the 24 h window closed with requests unfinished: the expired ones
    # go to a child batch; whatever succeeded or errored first is in the results.
    ("some expired", lambda c: c.expired > 0, State.EXPIRED),
    # Every request succeeded (an empty batch too).
    ("all succeeded", lambda c: c.succeeded == c.total, State.COMPLETED),
    # It ran, and some (maybe none) succeeded; the rest errored (or were canceled by the
    # vendor, not by us). Never `failed`: Anthropic has no whole-batch rejection once a
    # batch exists (a bad create is refused by the create call).
    ("some errored", lambda c: True, State.PARTIAL),
)


def ended_state(counts: EndedCounts) -> State:
    return next(state for _, holds, state in ENDED_TABLE if holds(counts))


def map_status(status: str, counts: EndedCounts) -> State:
    """A status missing from the table reads as still in progress (polled again)."""
    state = STATUS_TABLE.get(status, State.IN_PROGRESS)
    return ended_state(counts) if state is None else state


def to_vendor_batch(batch: MessageBatch) -> VendorBatch:
    rc = batch.request_counts
    counts = EndedCounts(
        rc.succeeded,
        rc.errored,
        rc.canceled,
        rc.expired,
        cancel_initiated=batch.cancel_initiated_at is not None,
    )
    return VendorBatch(
        vendor_id=batch.id,
        vendor_status=batch.processing_status,
        state=map_status(batch.processing_status, counts),
        total=counts.total + rc.processing,
        succeeded=rc.succeeded,
        failed=rc.errored + rc.canceled + rc.expired,
        created_at=batch.created_at.timestamp(),
        ended_at=batch.ended_at.timestamp() if batch.ended_at else None,
        expires_at=batch.expires_at.timestamp(),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def usage_of(message: Mapping[str, Any]) -> Usage:
    """Token usage of a Message. Anthropic counts cache reads and writes apart from
    `input_tokens`; ours includes them, and keeps the writes by cache lifetime (priced
    1.25x and 2x input, see costs/prices.json). Without the `cache_creation` split
    (older replies) a write is a 5-minute one, the API's default lifetime."""
    usage = message.get("usage")
    if not isinstance(usage, Mapping):
        return Usage()
    cached = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    split = _map(usage.get("cache_creation"))
    one_hour = min(written, _int(split.get("ephemeral_1h_input_tokens")))
    return Usage(
        input_tokens=_int(usage.get("input_tokens")) + cached + written,
        cached_input_tokens=cached,
        output_tokens=_int(usage.get("output_tokens")),
        cache_write_5m_tokens=written - one_hour,
        cache_write_1h_tokens=one_hour,
    )


def parse_line(raw: bytes) -> ResultLine:
    """One line of a results stream."""
    try:
        data = orjson.loads(raw)
        custom_id = str(data["custom_id"])
        result = data["result"]
        kind = result["type"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ResultLine(
            wire_id="",
            outcome=Outcome.ERRORED,
            failure=FailureClass.PERMANENT,
            raw=raw,
            error={"code": "unreadable_result_line", "message": raw[:200].decode(errors="replace")},
        )
    if kind == "succeeded":
        message = result.get("message")
        message = message if isinstance(message, dict) else {}
        return ResultLine(
            custom_id,
            Outcome.SUCCEEDED,
            response=message,
            usage=usage_of(message),
            billed=True,
            raw=raw,
        )
    if kind == "expired":
        return ResultLine(custom_id, Outcome.EXPIRED, failure=FailureClass.RETRYABLE, raw=raw)
    if kind == "canceled":
        return ResultLine(custom_id, Outcome.CANCELLED, failure=FailureClass.RETRYABLE, raw=raw)
    inner = _map(_map(result.get("error")).get("error"))
    type_ = inner.get("type") if kind == "errored" else f"unknown_result_{kind}"
    message = inner.get("message") or ""
    return ResultLine(
        custom_id,
        Outcome.ERRORED,
        raw=raw,
        error={"code": type_ or "unknown_error", "message": message, "type": type_},
        failure=classify_anthropic(type_, message),
    )


class AnthropicProvider:
    """Anthropic Message Batches. Credentials and base URL default to the SDK's own
    `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`."""

    name = "anthropic"
    supports_webhooks = False

    def __init__(
        self,
        client: anthropic.AsyncAnthropic | None = None,
        *,
        http_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        list_page_size: int = 1000,  # the API allows up to 1,000 a page
    ) -> None:
        self._owns_http = client is None and http_client is None
        self._bridge: httpx2.AsyncClient | None = None
        if isinstance(http_client, httpx.AsyncClient):  # the SDK takes httpx2 clients only
            http_client = self._bridge = httpx2_client_over(http_client)
        if client is None:
            client = anthropic.AsyncAnthropic(
                api_key=api_key, base_url=base_url, max_retries=0, http_client=http_client
            )
        self._client = client.with_options(max_retries=0)
        self.list_page_size = list_page_size

    def warm_up(self) -> None:
        """Import now what the SDK imports on first use (see OpenAIProvider.warm_up)."""
        import anyio._backends._asyncio  # noqa: F401

        _ = self._client.messages.batches

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The SDK client every call goes through (max_retries=0)."""
        return self._client

    async def create(self, spec: CreateSpec) -> VendorBatch:
        requests = [
            {
                "custom_id": r.wire_id,
                "params": r.body if "model" in r.body else {"model": spec.model, **r.body},
            }
            for r in spec.requests
        ]
        try:
            batch = await self._client.messages.batches.create(
                requests=cast(Any, requests), timeout=CREATE_TIMEOUT_SECONDS
            )
        except SDK_ERRORS as exc:
            raise vendor_error(exc, creating=True, what="create batch") from exc
        return to_vendor_batch(batch)

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        try:
            return to_vendor_batch(await self._client.messages.batches.retrieve(vendor_id))
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="retrieve batch") from exc

    async def _listed(self) -> AsyncIterator[VendorBatch]:
        try:
            async for batch in self._client.messages.batches.list(limit=self.list_page_size):
                yield to_vendor_batch(batch)
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="list batches") from exc

    def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        """Batches created at or after `since`, newest first."""
        return within_window(self._listed(), since=since)

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        """Batches created since `since` holding exactly as many requests as `spec`."""
        return [b async for b in self.list_recent(since=since) if b.total == len(spec.requests)]

    async def cancel(self, vendor_id: str) -> VendorBatch:
        try:
            return to_vendor_batch(await self._client.messages.batches.cancel(vendor_id))
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what="cancel batch") from exc

    async def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        """The results stream at the batch's `results_url`, line by line."""
        stream = self._client.messages.batches.with_streaming_response.results(batch.vendor_id)
        try:
            async with stream as resp:
                async for raw in jsonl_lines(resp.iter_bytes()):
                    yield parse_line(raw)
        except SDK_ERRORS as exc:
            raise vendor_error(exc, what=f"download results of {batch.vendor_id}") from exc
        except anthropic.AnthropicError as exc:  # no results_url: not ended yet
            raise VendorError(str(exc), retryable=True) from exc

    async def cleanup(self, batch: VendorBatch) -> None:
        """Nothing to delete: results expire with the batch (29 days)."""

    async def aclose(self) -> None:
        """Close the SDK client's connections if this adapter made them."""
        if self._owns_http:
            await self._client.close()
        if self._bridge is not None:  # closes only the bridge, not the caller's client
            await self._bridge.aclose()


__all__ = [
    "ENDED_TABLE",
    "STATUS_TABLE",
    "AnthropicProvider",
    "EndedCounts",
    "ended_state",
    "map_status",
    "parse_line",
    "to_vendor_batch",
    "usage_of",
]
