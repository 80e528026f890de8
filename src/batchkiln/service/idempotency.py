"""The Idempotency-Key protocol of the API's POSTs (IETF
draft-ietf-httpapi-idempotency-key-header-06; -07 unread, so UNCONFIRMED where it
may differ), on the durable records of `store.api_keys`.

- The header is an RFC 8941 sf-string (`"..."`) or, as Stripe-style clients send
  it, a bare value; either way 1-255 printable ASCII characters.
- Keys are scoped to the caller (its token), so two callers never share one.
- First use: the key is claimed *before* the body is read (so a concurrent
  request with the key gets 409 at once, with `Retry-After`), then the payload's
  fingerprint is recorded and the request runs. A 2xx response is stored and
  replayed, status and body, with `Idempotent-Replayed: true`, to any later request
  with the same key and the same payload (after a restart too). The same key with
  another payload (or another route) is 422.
- A request that fails (4xx, 5xx, a crash) stores nothing: the claim is released
  and the client may fix the request and send it again with the same key.
  (Stripe stores errors too; we do not, so a corrected retry is not refused as
  "different payload".) A claim whose request died is taken over after the lock
  timeout (90 s, kept fresh by a heartbeat while a long upload runs).
- Retention: KILN_IDEMPOTENCY_RETENTION_HOURS (24 h minimum) from first use; then
  the reaper deletes the key and the key may be used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from starlette.responses import Response

from batchkiln.clock import Clock
from batchkiln.errors import InvalidKey
from batchkiln.intake.keys import check_user_key
from batchkiln.service.problems import ProblemError
from batchkiln.store import Store
from batchkiln.store.api_keys import ClaimState

LOCK_TIMEOUT_SECONDS = 90.0
HEARTBEAT_SECONDS = 20.0
IN_FLIGHT_RETRY_AFTER = 2
HEADER = "Idempotency-Key"


def parse_key(raw: str | None) -> str | None:
    """The key of an Idempotency-Key header (quoted or not); None when absent."""
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            raise InvalidKey("Idempotency-Key: an opening quote without a closing one")
        inner, out, escaped = value[1:-1], [], False
        for char in inner:
            if escaped:
                if char not in '"\\':
                    raise InvalidKey(f"Idempotency-Key: invalid escape \\{char}")
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise InvalidKey("Idempotency-Key: an unescaped quote inside the string")
            else:
                out.append(char)
        if escaped:
            raise InvalidKey("Idempotency-Key: a trailing backslash")
        value = "".join(out)
    return check_user_key(value)


def derived_job_key(scope: str, key: str) -> str:
    """The Job's idempotency key for an API submission: `api-` and 40 hex of
    sha256(scope, newline, Idempotency-Key). Same caller and key: same Job, even
    after the API record is reaped; another caller's same key: another Job."""
    return "api-" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:40]


class Fingerprinted(Protocol):
    @property
    def fingerprint(self) -> str: ...


T = TypeVar("T", bound=Fingerprinted)


@dataclass(frozen=True)
class Outcome:
    status: int
    body: bytes
    job_id: str | None = None
    media_type: str = "application/json"


class Idempotency:
    def __init__(self, store: Store, clock: Clock, *, retention_seconds: float) -> None:
        self.store = store
        self.clock = clock
        self.retention = retention_seconds

    async def run(
        self,
        *,
        scope: str,
        key: str,
        method: str,
        path: str,
        read: Callable[[], Awaitable[T]],
        handle: Callable[[T], Awaitable[Outcome]],
        cleanup: Callable[[T], None] | None = None,
    ) -> Response:
        claim = await self.store.api_keys.claim(
            scope,
            key,
            method=method,
            path=path,
            clock=self.clock,
            retention=self.retention,
            lock_timeout=LOCK_TIMEOUT_SECONDS,
        )
        if claim.state == ClaimState.IN_FLIGHT:
            raise ProblemError(
                409,
                "idempotency_in_flight",
                f"a request with Idempotency-Key {key!r} is still being processed;"
                " retry after it finished",
                headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER)},
            )
        fresh = claim.state in (ClaimState.NEW, ClaimState.RESUMED)
        try:
            async with self._heartbeat(scope, key, enabled=fresh):
                payload = await read()
        except BaseException:
            if fresh:
                await self.store.api_keys.release(scope, key)
            raise
        try:
            if claim.state == ClaimState.FINISHED:
                row = claim.row
                assert row is not None and row.response_status is not None
                if (row.method, row.path, row.fingerprint) != (method, path, payload.fingerprint):
                    raise _mismatch(key)
                return Response(
                    row.body or b"",
                    status_code=row.response_status,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
            stored = await self.store.api_keys.set_fingerprint(scope, key, payload.fingerprint)
            if stored != payload.fingerprint:  # a dead request's claim, taken over
                raise _mismatch(key)
            try:
                async with self._heartbeat(scope, key, enabled=True):
                    outcome = await handle(payload)
            except BaseException:
                await self.store.api_keys.release(scope, key)
                raise
            if 200 <= outcome.status < 300:
                await self.store.api_keys.finish(
                    scope, key, status=outcome.status, body=outcome.body, job_id=outcome.job_id
                )
            else:
                await self.store.api_keys.release(scope, key)
            return Response(outcome.body, status_code=outcome.status, media_type=outcome.media_type)
        finally:
            if cleanup is not None:
                cleanup(payload)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, scope: str, key: str, *, enabled: bool) -> AsyncIterator[None]:
        """Keep the claim's lock fresh while a long request runs (real seconds)."""
        if not enabled:
            yield
            return

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                await self.store.api_keys.heartbeat(scope, key, now=self.clock.now())

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _mismatch(key: str) -> ProblemError:
    return ProblemError(
        422,
        "key_conflict",
        f"Idempotency-Key {key!r} was first used with a different payload (or route);"
        " use a new key for a new request",
    )
