"""The webhook receiver for OpenAI batch events and Gemini's static project webhooks
(at `/webhooks/gemini`), as an ASGI app.

Fetch, don't trust (invariant 5): a delivery is verified (Standard Webhooks
signature against any of the configured secrets, timestamp within 5 minutes
of our clock), deduplicated on `webhook-id` for 80 hours, and then only marks
the batch due; the worker then asks the vendor for its state. The payload's
event type is never applied, so the order deliveries arrive in does not
matter: each one only says "look again". Unknown batch ids are acknowledged
and recorded, so the sender does not retry them for days.

Mount it in any ASGI server, or run it inside the worker with
`kiln worker --webhook-port 8090` (see `service.serve`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from batchkiln.service.signatures import SignatureError, verify
from batchkiln.store import Store

DEDUPE_SECONDS = 80 * 3600  # longer than OpenAI's and Standard Webhooks' ~75 h retry horizon
BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")
DEFAULT_PATH = "/webhooks/openai"
# Gemini static webhooks (Standard Webhooks headers, whsec_ HMAC): batch.succeeded,
# batch.failed, batch.expired. The payload is thin and its shape UNCONFIRMED: the batch
# name is read from `data.id` or `data.name`, and, as for OpenAI, only marks it due.
GEMINI_PATH = "/webhooks/gemini"
GEMINI_EVENTS = ("batch.succeeded", "batch.failed", "batch.expired", "batch.cancelled")


def webhook_app(
    store: Store,
    secrets: Sequence[str],
    *,
    path: str = DEFAULT_PATH,
    on_due: Callable[[], None] | None = None,
) -> Starlette:
    """An ASGI app receiving signed deliveries at `path`. `on_due` is called when a
    delivery made a batch due (the worker passes its `wake`)."""
    if not secrets:
        raise ValueError("a webhook receiver needs at least one secret (OPENAI_WEBHOOK_SECRET)")
    for secret in secrets:
        try:
            Webhook(secret)
        except Exception as exc:  # the library raises several types on a bad secret
            raise ValueError(
                f"a configured webhook secret is not a valid whsec_ key: {exc}"
            ) from None
    accepted = list(secrets)

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            webhook_id = verify(body, request.headers, accepted, now=store.clock.now())
        except SignatureError as exc:
            await store.audit.record("webhook.rejected", reason=str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            event = orjson.loads(body)
            event_type = str(event["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await store.audit.record("webhook.rejected", reason="signed, but not an event")
            return JSONResponse({"error": "not an event payload"}, status_code=400)
        data = event.get("data")
        vendor_id = data.get("id") or data.get("name") if isinstance(data, dict) else None
        vendor_id = str(vendor_id) if vendor_id is not None else None
        batch = None
        if vendor_id is not None and event_type in (*BATCH_EVENTS, *GEMINI_EVENTS):
            batch = await store.batches.by_vendor_id(vendor_id)
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
            if on_due is not None:
                on_due()
        return JSONResponse({"ok": True, "duplicate": not fresh, "known": batch is not None})

    paths = dict.fromkeys((path, GEMINI_PATH))
    return Starlette(routes=[Route(p, receive, methods=["POST"]) for p in paths])
