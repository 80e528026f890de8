"""Failures the simulator does not stage (timeouts, 529 on create, HTTP-date retry-after),
through the official SDKs over an httpx MockTransport."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from batchkiln.providers import AmbiguousOutcome, AnthropicProvider, OpenAIProvider, VendorError

from .helpers import anthropic_spec, openai_spec

Handler = Callable[[httpx.Request], httpx.Response]
FILE = {
    "id": "file-1",
    "object": "file",
    "bytes": 1,
    "created_at": 1,
    "filename": "x.jsonl",
    "purpose": "batch",
    "status": "processed",
}


def openai_vendor(create: Handler, seen: Counter[str]) -> OpenAIProvider:
    def handle(request: httpx.Request) -> httpx.Response:
        seen[f"{request.method} {request.url.path}"] += 1
        if request.url.path == "/v1/files":
            if request.method == "GET":
                return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
            return httpx.Response(200, json=FILE)
        return create(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return OpenAIProvider(http_client=client, base_url="http://mock/v1", api_key="k")


def anthropic_vendor(create: Handler, seen: Counter[str]) -> AnthropicProvider:
    def handle(request: httpx.Request) -> httpx.Response:
        seen[f"{request.method} {request.url.path}"] += 1
        return create(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return AnthropicProvider(http_client=client, base_url="http://mock", api_key="k")


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no reply", request=request)


async def test_openai_create_timeout_is_ambiguous_after_one_attempt() -> None:
    """A create that times out is AmbiguousOutcome, and the SDK did not try again."""
    seen: Counter[str] = Counter()
    provider = openai_vendor(timeout, seen)
    with pytest.raises(AmbiguousOutcome, match="timed out"):
        await provider.create(openai_spec("to1"))
    assert seen["POST /v1/batches"] == 1 and seen["POST /v1/files"] == 1


async def test_anthropic_create_timeout_is_ambiguous_after_one_attempt() -> None:
    """A create that times out is AmbiguousOutcome, and the SDK did not try again."""
    seen: Counter[str] = Counter()
    provider = anthropic_vendor(timeout, seen)
    with pytest.raises(AmbiguousOutcome, match="timed out"):
        await provider.create(anthropic_spec("to1"))
    assert seen["POST /v1/messages/batches"] == 1


async def test_anthropic_529_on_create_is_ambiguous() -> None:
    """An overloaded (529) create is AmbiguousOutcome with its status, after one attempt."""
    seen: Counter[str] = Counter()
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    provider = anthropic_vendor(lambda r: httpx.Response(529, json=body), seen)
    with pytest.raises(AmbiguousOutcome) as caught:
        await provider.create(anthropic_spec("ov1"))
    assert caught.value.status == 529 and seen["POST /v1/messages/batches"] == 1


async def test_openai_upload_failure_is_never_ambiguous() -> None:
    """A cut connection while uploading is a retryable VendorError, not AmbiguousOutcome."""
    seen: Counter[str] = Counter()

    def handle(request: httpx.Request) -> httpx.Response:
        seen[request.method] += 1
        if request.method == "POST":
            raise httpx.RemoteProtocolError("cut", request=request)
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    provider = OpenAIProvider(
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        base_url="http://mock/v1",
        api_key="k",
    )
    with pytest.raises(VendorError) as caught:
        await provider.create(openai_spec("up1"))
    assert caught.value.retryable and not isinstance(caught.value, AmbiguousOutcome)
    assert seen["POST"] == 1


async def test_http_date_retry_after() -> None:
    """A retry-after HTTP date is measured from the response's Date header."""
    seen: Counter[str] = Counter()
    headers = {
        "retry-after": "Wed, 21 Oct 2026 07:28:40 GMT",
        "date": "Wed, 21 Oct 2026 07:28:00 GMT",
    }
    body = {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    provider = openai_vendor(lambda r: httpx.Response(429, json=body, headers=headers), seen)
    with pytest.raises(VendorError) as caught:
        await provider.create(openai_spec("hd1"))
    err = caught.value
    assert (err.retryable, err.retry_after, err.code, err.message) == (
        True,
        40.0,
        "rate_limit_exceeded",
        "slow down",
    )
    assert seen["POST /v1/batches"] == 1
