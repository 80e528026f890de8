"""The webhook receiver for OpenAI batch events and Gemini's static project webhooks
(at `/webhooks/gemini`), as an ASGI app.

Fetch, don't trust (invariant 5): a delivery is verified (Standard Webhooks
signature against any of the configured secrets, timestamp within 5 minutes
of our clock), deduplicated on `webhook-id` for 80 hours, and then only marks
the batch due; the worker then asks the vendor for its state. The payload's
event type is never applied, so the order deliveries arrive in does not
matter: each one only says "look again". Unknown batch ids are acknowledged
and recorded, so the sender does not retry them for days.

Nothing unverified is kept: the body is capped (`KILN_WEBHOOK_MAX_BODY_BYTES`, 1 MB by
default), refused with 413 from its `Content-Length` or as soon as the stream passes the
cap, before it is buffered; a rejected delivery is only counted (`Rejections`: a
Prometheus counter by reason, and one log line with the reason truncated and escaped),
never written to the append-only audit log, which only verified deliveries reach.

Mount it in any ASGI server, or run it inside the worker with
`kiln worker --webhook-port 8090` (see `service.serve`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

import orjson
from prometheus_client import Counter
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
DEFAULT_MAX_BODY_BYTES = 1_000_000  # OpenAI's batch events are a few hundred bytes
_REASON_CHARS = 120  # of a rejection reason in the log (it may quote attacker text)

log = logging.getLogger("batchkiln.webhooks")
REJECTED = Counter(
    "kiln_webhook_rejections_total",
    "Webhook deliveries refused before they reached the store, by reason",
    ["reason"],
)


class Rejections:
    """Refused deliveries, counted: by a fixed set of reasons (a bounded label set), in
    this process and in the Prometheus registry, plus one log line each."""

    REASONS = ("too_large", "bad_length", "signature", "not_an_event")

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def count(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        REJECTED.labels(reason=reason).inc()
        shown = detail[:_REASON_CHARS] + ("..." if len(detail) > _REASON_CHARS else "")
        log.warning("webhook rejected (%s): %r", reason, shown)


class BodyTooLarge(Exception):
    pass


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, read while it stays within `limit` bytes; BodyTooLarge as soon as the
    declared length or the bytes received pass it (nothing beyond is buffered)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ValueError(f"Content-Length is not a number: {declared[:40]!r}")
        if int(declared) > limit:
            raise BodyTooLarge(f"Content-Length {declared} > {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body passed {limit} bytes while streaming")
    return bytes(body)


def webhook_app(
    store: Store,
    secrets: Sequence[str],
    *,
    path: str = DEFAULT_PATH,
    on_due: Callable[[], None] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rejections: Rejections | None = None,
) -> Starlette:
    """An ASGI app receiving signed deliveries at `path`. `on_due` is called when a
    delivery made a batch due (the worker passes its `wake`); bodies over
    `max_body_bytes` get 413; refusals are counted in `rejections` (also `app.state`)."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    refused = rejections if rejections is not None else Rejections()
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
        try:
            body = await read_capped(request, max_body_bytes)
        except BodyTooLarge as exc:
            refused.count("too_large", str(exc))
            return JSONResponse(
                {"error": f"body larger than {max_body_bytes} bytes"}, status_code=413
            )
        except ValueError as exc:
            refused.count("bad_length", str(exc))
            return JSONResponse({"error": "bad Content-Length"}, status_code=400)
        try:
            webhook_id = verify(body, request.headers, accepted, now=store.clock.now())
        except SignatureError as exc:
            refused.count("signature", str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            event = orjson.loads(body)
            event_type = str(event["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            refused.count("not_an_event", "signed, but not an event")
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
    app = Starlette(routes=[Route(p, receive, methods=["POST"]) for p in paths])
    app.state.rejections = refused
    return app
