"""The dashboard behind KILN_API_TOKENS: the page asks for the token once, keeps it in
sessionStorage, sends it as a bearer header (also on the event stream), and never
puts it in a URL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from batchkiln.settings import Settings

from .conftest import _need_browser
from .server import LiveServer

TOKEN = "tok-Q2xhaXJ2b3lhbnQ"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A served batchkiln that wants a token (this module's own)."""
    _need_browser()
    settings = Settings.load().model_copy(
        update={"tracking": "hybrid", "api_tokens": [SecretStr(f"dashboard:{TOKEN}")]}
    )
    with LiveServer(tmp_path_factory.mktemp("served-token"), settings=settings) as server:
        yield server


def test_token_is_asked_once_and_never_in_a_url(page: Any, served: LiveServer) -> None:
    """The first visit asks; later pages of the tab do not; every data request and the
    stream carry `Authorization: Bearer`; no URL ever holds the token."""
    seen: list[tuple[str, str | None]] = []
    page.on("request", lambda r: seen.append((r.url, r.headers.get("authorization"))))
    page.goto("/")
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", TOKEN)
    page.click("#token-dialog button[type=submit]")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("sessionStorage.getItem('kiln.token')") == TOKEN
    deadline = time.monotonic() + 60
    while page.inner_text("#live-status") != "live":
        assert time.monotonic() < deadline, page.inner_text("#live-status")
        time.sleep(0.1)
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#token-dialog").count() == 0
    assert all(TOKEN not in url for url, _ in seen)
    data = [(u, a) for u, a in seen if "/dashboard/api/" in u and "/auth" not in u]
    stream = [(u, a) for u, a in seen if "/v1/events/stream" in u]
    assert data and stream
    assert all(a == f"Bearer {TOKEN}" for _, a in data + stream)
