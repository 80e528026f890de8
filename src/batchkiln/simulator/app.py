"""The `Simulator`: both vendors' batch APIs as one ASGI app, on an injected clock.

    sim = Simulator(clock=FakeClock(), seed=0, faults=Faults(), base_url="http://sim")
    openai.AsyncOpenAI(base_url=sim.openai_base_url, http_client=..., api_key="x")
    anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, http_client=..., api_key="x")

State lives in memory. Batches are lazy: each one's timeline is fixed when it is
created and read off the clock on every call; output files are written (and webhooks
queued) the first time anything looks after the batch has ended, or when
`deliver_due_webhooks()` / `settle_all()` runs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from batchkiln.clock import Clock, SystemClock
from batchkiln.simulator import admin, anthropic_routes, gemini_routes, openai_routes
from batchkiln.simulator.anthropic_batches import AnthropicBatch
from batchkiln.simulator.counters import Counters
from batchkiln.simulator.errors import SimError, anthropic_error, gemini_error, openai_error
from batchkiln.simulator.faults import BatchMatch, Budget, Faults
from batchkiln.simulator.files import SPOOL_ABOVE_BYTES, FileStore, Ids
from batchkiln.simulator.gate import CUT_HEADER
from batchkiln.simulator.gemini_batches import EVENT_TYPES as GEMINI_EVENTS
from batchkiln.simulator.gemini_batches import (
    GeminiBatch,
    GeminiFile,
    UploadSession,
    has_output,
    render_batch,
    responses_jsonl,
)
from batchkiln.simulator.openai_batches import EVENT_TYPES, OpenAIBatch, settle
from batchkiln.simulator.webhooks import WebhookDispatcher, new_secret

Matcher = Callable[[BatchMatch], bool]


class ConnectionCut(httpx.RemoteProtocolError, httpx2.RemoteProtocolError):  # type: ignore[misc]
    """Raised out of the app after a create was committed: in-process (ASGITransport) the
    SDK sees a transport error; under uvicorn the half-sent response is cut off."""


class SimClock:
    """The injected clock, plus whatever the admin API advanced it by when the injected
    clock cannot be advanced itself."""

    def __init__(self, inner: Clock) -> None:
        self.inner = inner
        self.offset = 0.0

    def now(self) -> float:
        return self.inner.now() + self.offset

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        advance = getattr(self.inner, "advance", None)
        if callable(advance):
            advance(seconds)
        else:
            self.offset += seconds


class Simulator:
    """An in-memory OpenAI Batch + Anthropic Message Batches vendor (see the package doc)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        faults: Faults | None = None,
        base_url: str = "http://sim",
        webhook_urls: Sequence[str] = (),
        webhook_secret: str | None = None,
        webhook_client: httpx.AsyncClient | None = None,
        signing_clock: Clock | None = None,
        spool_above: int | None = SPOOL_ABOVE_BYTES,
    ) -> None:
        self.clock = SimClock(clock or SystemClock())
        self.seed = seed
        self.base_url = base_url.rstrip("/")
        self.counters = Counters()
        self.ids = Ids(seed)
        self.files = FileStore(spool_above)  # bigger files go to a temporary directory
        self.openai_batches: dict[str, OpenAIBatch] = {}
        self.anthropic_batches: dict[str, AnthropicBatch] = {}
        self.gemini_batches: dict[str, GeminiBatch] = {}
        self.gemini_files: dict[str, GeminiFile] = {}
        self.gemini_uploads: dict[str, UploadSession] = {}
        # Gemini's project webhooks go here; None: to `webhook_urls`, like OpenAI's events
        self.gemini_webhook_urls: list[str] | None = None
        self._overrides: list[tuple[str | Matcher, Faults, Budget]] = []
        self.webhook_secret = webhook_secret or new_secret()
        self.webhooks = WebhookDispatcher(
            clock=self.clock,
            counters=self.counters,
            urls=webhook_urls,
            secret=self.webhook_secret,
            client=webhook_client,
            signing_clock=signing_clock or SystemClock(),
            seed=seed,
        )
        self.faults = faults or Faults()
        self.webhook_interval = 0.2  # real seconds between background deliveries (uvicorn)
        self._starlette = Starlette(
            routes=[
                *openai_routes.routes(self),
                *anthropic_routes.routes(self),
                *gemini_routes.routes(self),
                *admin.routes(self),
            ],
            exception_handlers={404: _unknown_route, 405: _unknown_route},
            lifespan=self._lifespan,
        )
        self.app = CuttingApp(self._starlette)

    # ---- addresses -----------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """google-genai's `HttpOptions(base_url=...)`: it appends `v1beta/...` itself."""
        return self.base_url

    # ---- time ----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (the injected clock's own `advance` when it has one)."""
        self.clock.advance(seconds)

    # ---- faults --------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The default faults. Assigning resets their counts and reseeds call-level draws."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        self._budget = Budget(value)
        self.call_rng = random.Random(f"{self.seed if value.seed is None else value.seed}|calls")

    def set_batch_faults(self, tag_or_match: str | Matcher, faults: Faults) -> None:
        """Override the faults of batches whose kiln tag is `tag_or_match` (OpenAI metadata
        `kiln_tag`, Anthropic custom_id prefix), or for which the callable returns True.
        The latest override that matches wins."""
        if isinstance(tag_or_match, str):
            self.clear_batch_faults(tag_or_match)
        self._overrides.append((tag_or_match, faults, Budget(faults)))

    def clear_batch_faults(self, tag: str | None = None) -> None:
        """Remove the override for `tag`, or every override when `tag` is None."""
        self._overrides = [o for o in self._overrides if tag is not None and o[0] != tag]

    def resolve_faults(self, match: BatchMatch) -> tuple[Faults, Budget]:
        """The faults (and their budget) for a batch being created."""
        for key, faults, budget in reversed(self._overrides):
            if (key == match.tag) if isinstance(key, str) else key(match):
                return faults, budget
        return self._faults, self._budget

    def faults_for_batch(self, vendor: str, batch_id: str | None) -> tuple[Faults, Budget]:
        """The faults governing calls about an existing batch (the default otherwise)."""
        batch: OpenAIBatch | AnthropicBatch | GeminiBatch | None = None
        if batch_id is not None:
            tables: dict[str, dict[str, Any]] = {
                "openai": self.openai_batches,
                "anthropic": self.anthropic_batches,
                "gemini": self.gemini_batches,
            }
            batch = tables[vendor].get(batch_id)
        if batch is None:
            return self._faults, self._budget
        metadata = (batch.metadata or {}) if isinstance(batch, OpenAIBatch) else {}
        return self.resolve_faults(BatchMatch(vendor, batch.tag, metadata))

    # ---- batches -------------------------------------------------------------------

    def commit_openai(self, batch: OpenAIBatch, api_key: str | None) -> None:
        self.openai_batches[batch.id] = batch
        self.counters.record_create("openai", api_key, batch.tag, batch.metadata or {})

    def commit_anthropic(self, batch: AnthropicBatch, api_key: str | None) -> None:
        self.anthropic_batches[batch.id] = batch
        self.counters.record_create("anthropic", api_key, batch.tag, {})

    def commit_gemini(self, batch: GeminiBatch, api_key: str | None) -> None:
        self.gemini_batches[batch.id] = batch
        self.counters.record_create("gemini", api_key, batch.tag, {})

    def gemini_batch(self, batch_id: str) -> GeminiBatch | None:
        batch = self.gemini_batches.get(batch_id)
        if batch is not None:
            self._settle_gemini(batch)
        return batch

    def render_gemini(self, batch: GeminiBatch) -> dict[str, Any]:
        """The batch Operation now (its responses file written first, once it has ended)."""
        self._settle_gemini(batch)
        return render_batch(batch, self.now(), self.gemini_base_url)

    def _settle_gemini(self, batch: GeminiBatch) -> None:
        now = self.now()
        if not batch.timeline.is_terminal(now):
            return
        phase = batch.timeline.phase(now)
        if not batch.notified:
            batch.notified = True
            if phase in GEMINI_EVENTS:
                self.webhooks.schedule(
                    GEMINI_EVENTS[phase],
                    batch.name,
                    batch.timeline.ended_at(),
                    batch.faults,
                    batch.seed,
                    urls=self.gemini_webhook_urls,
                )
        if batch.inline or batch.output_file is not None or not has_output(batch, phase):
            return
        name = f"files/batch-{batch.id}"
        self.gemini_files[name] = GeminiFile(
            name=name,
            display_name=f"{batch.name} responses",
            mime_type="application/jsonl",
            content=responses_jsonl(batch),
            created_at=batch.timeline.ended_at(),
            source="GENERATED",
        )
        batch.output_file = name

    def enqueued_gemini_tokens(self, model: str, now: float) -> int:
        return sum(
            p.input_tokens
            for b in self.gemini_batches.values()
            if b.model == model and not b.timeline.is_terminal(now)
            for p in b.timeline.plans
        )

    def openai_batch(self, batch_id: str) -> OpenAIBatch | None:
        batch = self.openai_batches.get(batch_id)
        if batch is not None:
            self._settle(batch)
        return batch

    def _settle(self, batch: OpenAIBatch) -> None:
        if settle(batch, self.files, self.now()):
            kind = batch.timeline.outcome()
            self.webhooks.schedule(
                EVENT_TYPES[kind], batch.id, batch.timeline.ended_at(), batch.faults, batch.seed
            )

    def settle_all(self) -> None:
        """Write the files of (and queue webhooks for) every OpenAI and Gemini batch that
        has ended."""
        for batch in self.openai_batches.values():
            if not batch.settled:
                self._settle(batch)
        for gemini in self.gemini_batches.values():
            if not gemini.notified:
                self._settle_gemini(gemini)

    def enqueued_openai_tokens(self, model: str | None, now: float) -> int:
        """Input tokens of unfinished OpenAI batches for `model` (the enqueued-token limit)."""
        return sum(
            p.input_tokens
            for b in self.openai_batches.values()
            if b.model == model and not b.timeline.is_terminal(now)
            for p in b.timeline.plans
        )

    def enqueued_anthropic_tokens(self, now: float) -> int:
        return sum(
            p.input_tokens
            for b in self.anthropic_batches.values()
            if not b.timeline.is_terminal(now)
            for p in b.timeline.plans
        )

    # ---- webhooks ------------------------------------------------------------------

    @property
    def webhook_urls(self) -> list[str]:
        """Where batch events are POSTed (mutable)."""
        return self.webhooks.urls

    async def deliver_due_webhooks(self) -> int:
        """Deliver the webhooks whose virtual time has come; returns the attempts made."""
        self.settle_all()
        return await self.webhooks.deliver_due()

    async def run_webhook_loop(self) -> None:
        """Deliver due webhooks forever, every `webhook_interval` real seconds."""
        while True:
            await self.deliver_due_webhooks()
            await asyncio.sleep(self.webhook_interval)

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run_webhook_loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.aclose()

    async def aclose(self) -> None:
        """Close the webhook HTTP client if the simulator created it."""
        await self.webhooks.aclose()


async def _unknown_route(request: Request, exc: Exception) -> Response:
    """404/405 for paths the simulator does not serve, in the right vendor's shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    message = f"Unknown request URL: {request.method} {request.url.path}."
    rid = "req_unknown_route"
    if request.url.path.startswith("/v1/messages"):
        return anthropic_error(SimError(status, message), rid)
    if request.url.path.startswith(("/v1beta", "/upload/v1beta", "/download/v1beta")):
        return gemini_error(SimError(status, message))
    return openai_error(SimError(status, message), rid)


class CuttingApp:
    """The outermost ASGI layer: turns a handler's cut marker into a cut connection after
    the response has begun (so uvicorn closes the socket instead of sending a 500)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cut: list[Message] = []

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start" and any(
                k == CUT_HEADER.encode() for k, _ in message.get("headers", [])
            ):
                cut.append(message)
            if not cut:
                await send(message)

        await self.app(scope, receive, guarded)
        if cut:
            start = cut[0]
            headers = [
                (k, v)
                for k, v in start.get("headers", [])
                if k not in (CUT_HEADER.encode(), b"content-length")
            ]
            await send({**start, "headers": [*headers, (b"content-length", b"4096")]})
            raise ConnectionCut("simulated: connection cut after the batch was committed")
