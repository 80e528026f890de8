"""OpenAI batch webhooks: thin events, signed per Standard Webhooks, retried with backoff.

An event (`{id, object, created_at, type, data: {id}}`) is queued for every configured
URL when a batch ends. `deliver_due()` POSTs the deliveries whose virtual time has come;
a non-2xx answer (or a failed POST) reschedules the delivery on the Standard Webhooks
example schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h), keeping the same
`webhook-id`. Faults can deliver an event twice, drop it, or deliver newest first.

The `webhook-timestamp` is taken from `signing_clock` (wall-clock time by default),
because receivers, the SDK's `webhooks.unwrap()` included, check it against their own
wall clock with a 300 s tolerance; the event's `created_at` is virtual time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import orjson

from batchkiln.clock import Clock
from batchkiln.simulator.counters import Counters, WebhookAttempt
from batchkiln.simulator.faults import Faults, unit
from batchkiln.simulator.model import short_id

RETRY_DELAYS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
DELIVERY_TIMEOUT = 15.0


def new_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,` + base64(HMAC-SHA256(key, id.ts.body)),
    the key being the base64-decoded part of a `whsec_` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass
class Delivery:
    """One event on its way to one URL."""

    webhook_id: str
    event_id: str
    event_type: str
    batch_id: str
    event_time: float
    body: bytes
    url: str
    due_at: float
    attempt: int = 0
    duplicate: bool = False
    newest_first: bool = False


class WebhookDispatcher:
    """Queues, signs and POSTs webhook events on the simulator's virtual clock."""

    def __init__(
        self,
        *,
        clock: Clock,
        counters: Counters,
        urls: Sequence[str],
        secret: str,
        client: httpx.AsyncClient | None,
        signing_clock: Clock,
        seed: int,
    ) -> None:
        self.clock = clock
        self.counters = counters
        self.urls = list(urls)
        self.secret = secret
        self.signing_clock = signing_clock
        self.seed = seed
        self._client = client
        self._owns_client = client is None
        self.pending: list[Delivery] = []
        self._n = 0

    def schedule(
        self,
        event_type: str,
        batch_id: str,
        event_time: float,
        faults: Faults,
        seed: int,
        urls: Sequence[str] | None = None,
    ) -> None:
        """Queue an event for every URL (dropped, doubled or delayed as `faults` say);
        `urls` overrides the dispatcher's own (Gemini's project webhooks)."""
        self._n += 1
        event_id = f"evt_{short_id(self.seed, 'event', self._n)}"
        body = orjson.dumps(
            {
                "id": event_id,
                "object": "event",
                "created_at": int(event_time),
                "type": event_type,
                "data": {"id": batch_id},
            }
        )
        self.counters.webhook_events += 1
        for url in self.urls if urls is None else urls:
            if unit(seed, event_id, url, "drop") < faults.webhook_drop:
                self.counters.webhook_dropped += 1
                self.counters.faults["webhook_drop"] += 1
                continue
            copies = 2 if unit(seed, event_id, url, "dup") < faults.webhook_duplicate else 1
            for copy in range(copies):
                self.pending.append(
                    Delivery(
                        webhook_id=f"wh_{short_id(self.seed, event_id, url)}",
                        event_id=event_id,
                        event_type=event_type,
                        batch_id=batch_id,
                        event_time=event_time,
                        body=body,
                        url=url,
                        due_at=event_time + faults.webhook_delay_seconds,
                        duplicate=copy > 0,
                        newest_first=faults.webhook_out_of_order,
                    )
                )
                if copy:
                    self.counters.faults["webhook_duplicate"] += 1

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def deliver_due(self) -> int:
        """POST every delivery whose time has come; returns how many were attempted."""
        now = self.clock.now()
        due = [d for d in self.pending if d.due_at <= now]
        if not due:
            return 0
        self.pending = [d for d in self.pending if d.due_at > now]
        due.sort(key=lambda d: (d.event_time, d.duplicate))
        if any(d.newest_first for d in due):
            due.reverse()
        for delivery in due:
            await self._attempt(delivery, now)
        return len(due)

    async def _attempt(self, d: Delivery, now: float) -> None:
        timestamp = int(self.signing_clock.now())
        headers = {
            "content-type": "application/json",
            "user-agent": "batchkiln-simulator/1",
            "webhook-id": d.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, d.webhook_id, timestamp, d.body),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await self._http().post(
                d.url, content=d.body, headers=headers, timeout=DELIVERY_TIMEOUT
            )
            status = response.status_code
        except Exception as exc:  # any failure to deliver is retried, like a real sender
            error = f"{type(exc).__name__}: {exc}"
        record = WebhookAttempt(
            webhook_id=d.webhook_id,
            event_id=d.event_id,
            event_type=d.event_type,
            batch_id=d.batch_id,
            url=d.url,
            attempt=d.attempt,
            at=now,
            status_code=status,
            error=error,
            duplicate=d.duplicate,
        )
        self.counters.webhook_attempts.append(record)
        if record.ok:
            self.counters.webhook_deliveries += 1
        elif d.attempt < len(RETRY_DELAYS):
            d.due_at = now + RETRY_DELAYS[d.attempt]
            d.attempt += 1
            self.pending.append(d)

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None
