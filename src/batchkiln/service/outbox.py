"""Webhooks out: deliver the outbox, signed per Standard Webhooks.

Each outbox row is one event with one `webhook-id` (reused on every retry); each
attempt gets a fresh `webhook-timestamp` and a `v1` signature computed by the
`standardwebhooks` library over `id.timestamp.body`, with the job's own
`callback_secret` or else KILN_CALLBACK_SECRET. The signature timestamp is wall
time (receivers compare it with theirs), while the retry schedule runs on the
injected clock (tests give up after 27 h on a fake clock).

Schedule (Svix's, Standard Webhooks' recommendation): the first attempt at once,
then retries 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after each failure: 8
attempts over about 27.6 h, then the delivery is marked failed (gave up). A
failure is any non-2xx status (3xx included: redirects are not followed), a
timeout (15 s) or a connection error. A `Retry-After` on the answer (seconds or
an HTTP date) pushes the next attempt out if it asks for longer. `410 Gone`
disables the endpoint: no more deliveries to that URL. Every attempt is an audit
event (`webhook.delivery`) with its result; no secret is ever in it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Callable

import httpx
from standardwebhooks import Webhook

from batchkiln.clock import Clock, SystemClock
from batchkiln.service.callbacks import CallbackRefused, CallbackRules
from batchkiln.store import Store
from batchkiln.store.outbox import OutboxRow

SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
TIMEOUT_SECONDS = 15.0
LEASE_SECONDS = 60.0
MAX_RETRY_AFTER = 86400.0


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """A Retry-After header (delay-seconds or HTTP-date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def sign(secret: str, message_id: str, at: float, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    stamp = int(at)
    signature = Webhook(secret).sign(
        message_id, dt.datetime.fromtimestamp(stamp, dt.UTC), body.decode("utf-8")
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }


class Sender:
    """Delivers due outbox rows; `run()` loops until stopped."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        worker: str,
        default_secret: str | None,
        rules: CallbackRules,
        client: httpx.AsyncClient | None = None,
        signing_clock: Clock | None = None,
        schedule: tuple[float, ...] = SCHEDULE,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.default_secret = default_secret
        self.rules = rules
        self.schedule = schedule
        self.signing_clock = signing_clock or SystemClock()
        self.on_result = on_result
        self._client = client
        self._own_client = client is None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()

    async def run_once(self) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        rows = await self.store.outbox.claim_due(
            worker=self.worker, now=self.clock.now(), lease_seconds=LEASE_SECONDS
        )
        for row in rows:
            await self.deliver(row)
        return len(rows)

    async def run(self, *, poll_seconds: float = 1.0) -> None:
        while not self._stop.is_set():
            try:
                sent = await self.run_once()
            except Exception:  # a database hiccup must not kill the sender
                sent = 0
            if sent:
                continue
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=poll_seconds)
            waiter.cancel()
            stopper.cancel()

    async def deliver(self, row: OutboxRow) -> str:
        """One attempt at one delivery; records it and returns its result word."""
        callback = await self.store.outbox.callback(row.job_id)
        url = callback.url if callback else ""
        if callback is None or callback.disabled_at is not None:
            return await self._record(row, "endpoint disabled", "disabled", None, None, url)
        secret = callback.secret or self.default_secret
        if not secret:
            return await self._record(row, "no signing secret", "failed", None, None, url)
        try:
            await self.rules.check_resolved(url)
        except CallbackRefused as exc:
            return await self._record(row, "refused", "failed", None, str(exc), url)
        headers = sign(secret, row.id, self.signing_clock.now(), row.payload)
        headers["content-type"] = "application/json"
        headers["user-agent"] = "batchkiln-webhooks/1"
        try:
            answer = await self.client.post(
                url, content=row.payload, headers=headers, timeout=TIMEOUT_SECONDS
            )
        except httpx.TimeoutException:
            return await self._retry(row, url, None, "timeout", None)
        except httpx.HTTPError as exc:
            return await self._retry(
                row, url, None, f"connection error: {type(exc).__name__}", None
            )
        if 200 <= answer.status_code < 300:
            return await self._record(row, "delivered", "delivered", answer.status_code, None, url)
        if answer.status_code == 410:
            return await self._record(
                row, "gone: endpoint disabled", "disabled", 410, "410 Gone", url
            )
        wait = retry_after_seconds(answer.headers.get("retry-after"), now=self.clock.now())
        return await self._retry(row, url, answer.status_code, f"HTTP {answer.status_code}", wait)

    async def _retry(
        self,
        row: OutboxRow,
        url: str,
        status: int | None,
        error: str,
        retry_after: float | None,
    ) -> str:
        attempt = row.attempts + 1  # the one that just failed
        if attempt > len(self.schedule):
            return await self._record(
                row, f"gave up after {attempt} attempts", "failed", status, error, url
            )
        delay = self.schedule[attempt - 1]
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return await self._record(
            row, "retry", "pending", status, error, url, next_at=self.clock.now() + delay
        )

    async def _record(
        self,
        row: OutboxRow,
        result: str,
        state: str,
        status: int | None,
        error: str | None,
        url: str,
        *,
        next_at: float | None = None,
    ) -> str:
        await self.store.outbox.record_attempt(
            row,
            worker=self.worker,
            now=self.clock.now(),
            result=result,
            state=state,
            status=status,
            error=error,
            next_attempt_at=next_at,
            url=url,
        )
        if self.on_result is not None:
            self.on_result(state if state != "pending" else "retry")
        return result
