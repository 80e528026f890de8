"""The webhook receiver under abuse: bodies over the cap get 413 before they are
buffered (from Content-Length, or while streaming), and rejected deliveries are
counted and logged (truncated), never written to the append-only audit log."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest

from batchkiln import Settings
from batchkiln.clock import FakeClock
from batchkiln.service.webhooks import DEFAULT_PATH, REJECTED, Rejections, webhook_app
from batchkiln.simulator import sign
from batchkiln.simulator.webhooks import new_secret
from batchkiln.store import Store

CHUNK = 64 * 1024


async def call_raw(app: Any, headers: list[tuple[bytes, bytes]], total: int) -> tuple[int, int]:
    """POST `total` bytes to `app` in 64 KB chunks over raw ASGI; returns the status and
    how many body bytes the app pulled from the connection."""
    handed = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal handed
        size = min(CHUNK, total - handed)
        handed += size
        return {"type": "http.request", "body": b"x" * size, "more_body": handed < total}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": DEFAULT_PATH,
        "raw_path": DEFAULT_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8090),
        "client": ("127.0.0.1", 50000),
    }
    await app(scope, receive, send)
    return status, handed


async def audit_count(store: Store) -> int:
    return len([e async for e in store.audit.stream()])


async def test_a_declared_length_over_the_cap_is_refused_unread(store: Store) -> None:
    """Content-Length: 300 MB -> 413 without reading one byte of the body."""
    rejections = Rejections()
    app = webhook_app(store, [new_secret()], rejections=rejections)
    before = await audit_count(store)
    status, handed = await call_raw(app, [(b"content-length", b"300000000")], 300_000_000)
    assert (status, handed) == (413, 0)
    assert rejections.counts == {"too_large": 1}
    assert await audit_count(store) == before


async def test_a_streamed_body_over_the_cap_is_cut_off_while_streaming(store: Store) -> None:
    """No Content-Length (chunked): reading stops one chunk past the 1 MB default cap."""
    rejections = Rejections()
    app = webhook_app(store, [new_secret()], rejections=rejections)
    status, handed = await call_raw(app, [], 300_000_000)
    assert status == 413 and handed <= 1_000_000 + CHUNK
    assert rejections.counts == {"too_large": 1}


async def test_rejections_are_counted_and_logged_truncated_never_audited(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Forged, junk and oversized deliveries add no audit row; each is counted by reason
    (also in Prometheus) and logged in one line of bounded length."""
    secret = new_secret()
    rejections = Rejections()
    app = webhook_app(store, [secret], max_body_bytes=10_000, rejections=rejections)
    before = await audit_count(store)
    prometheus_before = REJECTED.labels(reason="signature")._value.get()
    attacker = "A" * 6000
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://kiln.test"
    ) as client:
        with caplog.at_level(logging.WARNING, logger="batchkiln.webhooks"):
            forged = await client.post(
                DEFAULT_PATH,
                content=b"{}",
                headers={
                    "webhook-id": attacker,
                    "webhook-timestamp": attacker,
                    "webhook-signature": "v1,AAAA",
                },
            )
            big = await client.post(DEFAULT_PATH, content=b"x" * 10_001)
            now = int(clock.now())
            junk = b"[1, 2]"
            unsigned_junk = await client.post(
                DEFAULT_PATH,
                content=junk,
                headers={
                    "webhook-id": "wh_junk",
                    "webhook-timestamp": str(now),
                    "webhook-signature": sign(secret, "wh_junk", now, junk),
                },
            )
    assert (forged.status_code, big.status_code, unsigned_junk.status_code) == (400, 413, 400)
    assert rejections.counts == {"signature": 1, "too_large": 1, "not_an_event": 1}
    assert REJECTED.labels(reason="signature")._value.get() == prometheus_before + 1
    assert await audit_count(store) == before
    assert not await store.webhooks.seen("wh_junk")
    lines = [r.getMessage() for r in caplog.records if r.name == "batchkiln.webhooks"]
    assert len(lines) == 3 and all(len(line) < 300 for line in lines)


async def test_a_verified_delivery_under_the_cap_is_accepted_and_audited(
    store: Store, clock: FakeClock
) -> None:
    """The cap only refuses what is over it: a signed event is received and audited."""
    secret = new_secret()
    app = webhook_app(store, [secret], max_body_bytes=2_000)
    now = int(clock.now())
    body = orjson.dumps({"type": "batch.completed", "data": {"id": "batch_unknown"}})
    headers = {
        "webhook-id": "wh_ok",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "wh_ok", now, body),
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://kiln.test"
    ) as client:
        response = await client.post(DEFAULT_PATH, content=body, headers=headers)
    assert response.status_code == 200 and response.json()["known"] is False
    kinds = [e.kind async for e in store.audit.stream()]
    assert kinds == ["webhook.received"]


def test_the_cap_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILN_WEBHOOK_MAX_BODY_BYTES sets the cap (default 1 MB); zero is refused."""
    assert Settings.load().webhook_max_body_bytes == 1_000_000
    monkeypatch.setenv("KILN_WEBHOOK_MAX_BODY_BYTES", "5000")
    assert Settings.load().webhook_max_body_bytes == 5000
    monkeypatch.setenv("KILN_WEBHOOK_MAX_BODY_BYTES", "0")
    with pytest.raises(ValueError, match="KILN_WEBHOOK_MAX_BODY_BYTES"):
        Settings.load()
