"""The webhook receiver for OpenAI batch events, as an ASGI app.

Fetch, don't trust (invariant 5): a delivery is verified, deduplicated on
`webhook-id`, and then only marks the batch due; the worker then asks the
vendor for its state. The payload's event type is never applied. Unknown
batch ids are acknowledged and recorded. Order does not matter, since each
event only says "look again".
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from batchkiln.service.signatures import SignatureError, verify
from batchkiln.store import Store

DEDUPE_SECONDS = 80 * 3600  # longer than OpenAI's and Standard Webhooks' ~75 h retry horizon
BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")


def webhook_app(
    store: Store, secrets: Sequence[str], *, path: str = "/webhooks/openai"
) -> Starlette:
    """An ASGI app receiving signed deliveries at `path`."""
    if not secrets:
        raise ValueError("a webhook receiver needs at least one secret (OPENAI_WEBHOOK_SECRET)")

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            webhook_id = verify(body, request.headers, secrets, now=store.clock.now())
        except SignatureError as exc:
            await store.audit.record("webhook.rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            event = orjson.loads(body)
            event_type = str(event["type"])
            vendor_id = str(event["data"]["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await store.audit.record("webhook.rejected", reason="signed, but not an event")
            return JSONResponse({"error": "not an event payload"}, status_code=400)
        batch = await store.batches.by_vendor_id(vendor_id) if event_type in BATCH_EVENTS else None
        fresh = await store.webhooks.record(
            webhook_id,
            event_type=event_type,
            vendor_batch_id=vendor_id,
            batch_id=batch.id if batch else None,
            job_id=batch.job_id if batch else None,
            keep_seconds=DEDUPE_SECONDS,
        )
        if fresh and batch is not None:
            await store.batches.mark_due(batch.id)
        return JSONResponse({"ok": True, "duplicate": not fresh, "known": batch is not None})

    return Starlette(routes=[Route(path, receive, methods=["POST"])])
