"""Letting an `httpx.AsyncClient` carry the anthropic SDK's requests.

anthropic 2.10.0 accepts only `httpx2` clients, but the rest of batchkiln (the CLI
runtime, the tests' in-process ASGI transport) hands adapters an `httpx.AsyncClient`.
`httpx2_client_over(client)` is an `httpx2.AsyncClient` whose transport sends every
request through that client, streaming the response body and translating transport
errors so the SDK still sees timeouts as timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2

# The body is handed over decoded, so the headers describing its encoding go.
_DECODED = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


class _Body(httpx2.AsyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():  # decoded; works if already read
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that sends through an `httpx.AsyncClient` (not owned)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        content = await request.aread()
        extensions: dict[str, Any] = {}
        if "timeout" in request.extensions:
            extensions["timeout"] = request.extensions["timeout"]
        outgoing = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=content,
            extensions=extensions,
        )
        try:
            response = await self._client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            raise httpx2.ReadTimeout(str(exc), request=request) from exc
        except httpx.TransportError as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _DECODED]
        return httpx2.Response(
            response.status_code, headers=headers, stream=_Body(response), request=request
        )


def httpx2_client_over(client: httpx.AsyncClient) -> httpx2.AsyncClient:
    """An httpx2 client that sends everything through `client` (the SDK's own
    timeouts still apply: they travel with each request)."""
    return httpx2.AsyncClient(transport=HttpxTransport(client))
