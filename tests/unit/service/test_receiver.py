"""The receiver's construction and serving it inside the worker's own event loop."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from batchkiln.service.serve import serving
from batchkiln.service.webhooks import webhook_app


def test_a_receiver_without_a_secret_is_refused() -> None:
    """Without a secret nothing could be verified: refuse to start."""
    with pytest.raises(ValueError, match="at least one secret"):
        webhook_app(None, [])  # type: ignore[arg-type]


def test_a_malformed_secret_is_refused_at_start() -> None:
    """A secret that is not base64 fails when the app is built, not on the first delivery."""
    with pytest.raises(ValueError, match="not a valid whsec_ key"):
        webhook_app(None, ["whsec_%%%not-base64"])  # type: ignore[arg-type]


async def test_serving_runs_an_app_on_a_free_loopback_port_and_stops() -> None:
    """Port 0 picks a free port; the app answers there until the block ends."""

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pong": True})

    app: Any = Starlette(routes=[Route("/ping", ping)])
    async with serving(app, port=0) as url, httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/ping")).json() == {"pong": True}
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/ping")
