"""Browser fixtures: Debian's Chromium driven by Playwright (Python), headless, and
a served batchkiln (service + dashboard + worker) on a scaled clock.

`playwright install` cannot download a browser here, so the tests use the system
Chromium at /usr/bin/chromium (KILN_CHROMIUM overrides; `.ci/run` installs it with
apt-get when missing). Without it the tests skip with the reason, and fail
instead when CI=true, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchkiln.settings import Settings

from .server import LiveServer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("KILN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
AXE = Path(__file__).parent / "data" / "axe.min.js"


def _need_browser() -> None:
    reason = None
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        reason = (
            f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set KILN_CHROMIUM)"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            reason = f"the playwright package is not installed: {exc}"
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: browser tests must run, not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One served batchkiln per test module, tracking in hybrid mode (webhooks the
    fast path, so the page opens on the webhook view)."""
    _need_browser()
    settings = Settings.load().model_copy(update={"tracking": "hybrid", "api_tokens": []})
    with LiveServer(tmp_path_factory.mktemp("served"), settings=settings) as server:
        # One launch first: the engine's first submission loads the tokenizer (seconds
        # on a busy machine), which no test below should wait for.
        warm = httpx.post(
            f"{server.url}/dashboard/api/scenarios/1",
            headers={"Idempotency-Key": "warm-up"},
            timeout=120,
        )
        assert warm.status_code == 201, warm.text
        yield server


class Console:
    """Every console message and page error of a page, to assert none were errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console.{m.type}: {m.text} @ {page.url}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e} @ {page.url}"))


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Any, served: LiveServer, console: Console) -> Iterator[Any]:
    """A fresh page on the served dashboard; the test fails if any console error or
    uncaught exception happened on it."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, base_url=served.url)
    context.set_default_timeout(45_000)
    pg = context.new_page()
    console.attach(pg)
    yield pg
    context.close()
    assert console.errors == [], "\n".join(console.errors)
