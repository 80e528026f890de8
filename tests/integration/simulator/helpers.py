"""Helpers for the simulator tests: request files, the SDK calls every test repeats,
raw-JSON validation against the SDKs' own types, and a webhook receiver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx
import httpx2
import openai
import orjson
import pydantic
from anthropic.types.messages.batch_create_params import Request as BatchRequest
from openai.types import Batch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SIM_URL = "http://sim.test"
M = TypeVar("M", bound=pydantic.BaseModel)


def openai_client(
    app: Any, base_url: str, *, max_retries: int = 2, transport: str = "httpx"
) -> openai.AsyncOpenAI:
    """The official OpenAI SDK on an in-process ASGI app, over an `httpx` client (as the
    project does) or an `httpx2` one (the SDK's own HTTP stack)."""
    if transport == "httpx2":
        http2 = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
        return openai.AsyncOpenAI(
            base_url=base_url, api_key="sk-test", http_client=http2, max_retries=max_retries
        )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    # openai 3.51 types http_client as httpx2.AsyncClient but still accepts httpx clients.
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key="sk-test",
        http_client=http,  # type: ignore[arg-type]
        max_retries=max_retries,
    )


def strict(model: type[M], raw: bytes | str) -> M:
    """Validate raw JSON against an SDK type, strictly (no coercion, no construct)."""
    return model.model_validate_json(raw, strict=True)


def chat_lines(
    n: int,
    *,
    tag: str = "t1",
    model: str = "gpt-4o-mini",
    words: int = 5,
    max_tokens: int | None = 64,
) -> bytes:
    """An OpenAI batch input file of `n` chat requests, custom_ids "<tag>-r<i>"."""
    lines = []
    for i in range(n):
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "word " * (words + i)}],
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        lines.append(
            orjson.dumps(
                {
                    "custom_id": f"{tag}-r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return b"\n".join(lines) + b"\n"


def anthropic_requests(n: int, *, tag: str = "t2", words: int = 5) -> list[BatchRequest]:
    """Anthropic batch requests, custom_ids "<tag>-r<i>"."""
    requests = [
        {
            "custom_id": f"{tag}-r{i}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "word " * (words + i)}],
            },
        }
        for i in range(n)
    ]
    return cast(list[BatchRequest], requests)


async def submit(
    client: openai.AsyncOpenAI,
    content: bytes,
    *,
    tag: str | None = "t1",
    endpoint: str = "/v1/chat/completions",
    metadata: dict[str, str] | None = None,
) -> Batch:
    """Upload `content` and create a batch on it, as a client would."""
    file = await client.files.create(file=("input.jsonl", content), purpose="batch")
    meta = dict(metadata or {})
    if tag is not None:
        meta["kiln_tag"] = tag
    return await client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata=meta or None,
    )


async def raw_batch(client: openai.AsyncOpenAI, batch_id: str) -> Batch:
    """GET the batch and validate its raw JSON strictly against `openai.types.Batch`."""
    raw = await client.batches.with_raw_response.retrieve(batch_id)
    return strict(Batch, raw.http_response.content)


async def file_lines(client: openai.AsyncOpenAI, file_id: str) -> list[dict[str, Any]]:
    content = await client.files.content(file_id)
    assert b"\n\n" not in content.content
    return [orjson.loads(line) for line in content.content.splitlines()]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """Answers each POST with the next status of `statuses` (then 200) and keeps it."""

    url: str = "http://hooks.test/openai"
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append(Received(dict(request.headers), await request.body()))
            status = self.statuses.pop(0) if self.statuses else 200
            return Response(status_code=status)

        return Starlette(routes=[Route("/openai", hook, methods=["POST"])])

    def types(self) -> list[str]:
        return [orjson.loads(r.body)["type"] for r in self.received]
