"""Idempotency-Key on POST /v1/jobs, per the IETF draft: every case, in process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from batchkiln.service.idempotency import LOCK_TIMEOUT_SECONDS, derived_job_key, parse_key
from batchkiln.store import Store

from .conftest import Served, inline_job, jsonl, requests_lines

PROBLEM = "application/problem+json"


async def job_count(store: Store) -> int:
    return len(await store.listing.jobs_page(limit=100))


async def test_missing_key_is_400_and_stores_nothing(served: Served) -> None:
    """POST /v1/jobs without Idempotency-Key is a 400 problem, and no job is stored."""
    r = await served.client.post("/v1/jobs", json=inline_job())
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "urn:batchkiln:problem:idempotency_key_missing"
    assert await job_count(served.store) == 0


async def test_same_key_same_payload_replays_status_and_body(served: Served) -> None:
    """The second POST with the key and payload gets the first's status and body, marked."""
    first = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "a1"}
    )
    again = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "a1"}
    )
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await job_count(served.store) == 1


async def test_multipart_replay_with_a_new_boundary(served: Served) -> None:
    """A multipart upload retried (new boundary, same file and fields) replays."""
    files = {"file": ("reqs.jsonl", jsonl(requests_lines(4)))}
    headers = {"Idempotency-Key": "up-1"}
    first = await served.client.post(
        "/v1/jobs", files=files, data={"provider": "openai"}, headers=headers
    )
    again = await served.client.post(
        "/v1/jobs", files=files, data={"provider": "openai"}, headers=headers
    )
    assert first.status_code == 201, first.text
    assert first.json()["request_count"] == 4
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_same_key_different_body_is_422(served: Served) -> None:
    """Reusing a key with another payload is a 422 problem and creates nothing."""
    await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "k"})
    r = await served.client.post(
        "/v1/jobs", json=inline_job(prefix="other"), headers={"Idempotency-Key": "k"}
    )
    assert r.status_code == 422
    assert r.json()["type"] == "urn:batchkiln:problem:key_conflict"
    assert await job_count(served.store) == 1


async def test_two_concurrent_posts_with_one_key_make_one_job(served: Served) -> None:
    """Two POSTs racing with one key: exactly one job; the other is 409 or a replay."""
    body = inline_job(50)
    answers = await asyncio.gather(
        *(
            served.client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race"})
            for _ in range(2)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([201, 201], [201, 409]), [a.text for a in answers]
    if 409 in statuses:
        loser = next(a for a in answers if a.status_code == 409)
        assert loser.headers["retry-after"].isdigit()
        assert loser.json()["type"] == "urn:batchkiln:problem:idempotency_in_flight"
    else:
        assert any(a.headers.get("idempotent-replayed") == "true" for a in answers)
    assert await job_count(served.store) == 1


async def test_in_flight_key_is_409_until_the_lock_times_out(served: Served) -> None:
    """A key held by a request still running is 409 with Retry-After; a dead one's is
    taken over after the lock timeout."""
    claim = await served.store.api_keys.claim(
        "local",
        "held",
        method="POST",
        path="/v1/jobs",
        clock=served.clock,
        retention=86400,
        lock_timeout=LOCK_TIMEOUT_SECONDS,
    )
    assert claim.state == "new"
    r = await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "held"})
    assert r.status_code == 409
    assert r.headers["retry-after"] == "2"
    served.clock.advance(LOCK_TIMEOUT_SECONDS + 1)
    r = await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "held"})
    assert r.status_code == 201


async def test_replay_after_a_restart(served: Served, make_served: Callable[..., Any]) -> None:
    """The stored answer survives the process: a new App on the same store replays it."""
    first = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "r"}
    )
    async with make_served() as restarted:
        again = await restarted.client.post(
            "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "r"}
        )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


async def test_quoted_and_bare_keys_are_the_same_key(served: Served) -> None:
    """`"abc"` (an RFC 8941 string) and `abc` name the same key."""
    first = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": '"abc"'}
    )
    again = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "abc"}
    )
    assert first.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert parse_key('"a\\"b"') == 'a"b'


async def test_invalid_keys_are_400(served: Served) -> None:
    """Keys that are empty, too long, non-ASCII or badly quoted are 400 problems."""
    for bad in ('"unterminated', "x" * 256, '""', "caf\u00e9"):
        r = await served.client.post(
            "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": bad.encode("utf-8")}
        )
        assert r.status_code == 400, bad
        assert r.json()["type"] == "urn:batchkiln:problem:invalid_key"
    assert await job_count(served.store) == 0


async def test_keys_are_scoped_per_caller(served: Served, make_served: Callable[..., Any]) -> None:
    """Two callers (tokens) using one key get two jobs; each replays only its own."""
    async with make_served(api_tokens="alice:tok-a,bob:tok-b") as s:
        a = await s.client.post(
            "/v1/jobs",
            json=inline_job(),
            headers={"Idempotency-Key": "same", "Authorization": "Bearer tok-a"},
        )
        b = await s.client.post(
            "/v1/jobs",
            json=inline_job(),
            headers={"Idempotency-Key": "same", "Authorization": "Bearer tok-b"},
        )
        assert a.status_code == b.status_code == 201
        assert a.json()["id"] != b.json()["id"]
        assert a.json()["key"] == derived_job_key("alice", "same")


async def test_a_failed_request_stores_nothing_so_a_fixed_one_may_reuse_the_key(
    served: Served,
) -> None:
    """Bad input is 422 listing every bad line; the key is not burnt by it."""
    bad = inline_job()
    bad["requests"] = [{"custom_id": "a"}, {"nothing": 1}, *requests_lines(1)]
    r = await served.client.post("/v1/jobs", json=bad, headers={"Idempotency-Key": "fix"})
    assert r.status_code == 422
    assert [e["line"] for e in r.json()["errors"]] == [1, 2]
    assert await job_count(served.store) == 0
    ok = await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "fix"})
    assert ok.status_code == 201


async def test_keys_are_reaped_after_the_retention_and_the_job_is_still_found(
    served: Served,
) -> None:
    """After 24 h the API record is reaped; the same key and payload then find the same
    Job through its derived job key (200, not a second job)."""
    first = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "old"}
    )
    served.clock.advance(24 * 3600 - 60)
    assert await served.store.api_keys.reap(now=served.clock.now()) == 0
    served.clock.advance(120)
    assert await served.store.api_keys.reap(now=served.clock.now()) == 1
    again = await served.client.post(
        "/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "old"}
    )
    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] == first.json()["id"]
    assert await job_count(served.store) == 1


async def test_cancel_with_a_key_replays(served: Served) -> None:
    """POST /cancel with an Idempotency-Key replays its first answer."""
    job = (
        await served.client.post("/v1/jobs", json=inline_job(), headers={"Idempotency-Key": "c"})
    ).json()
    path = f"/v1/jobs/{job['id']}/cancel"
    first = await served.client.post(path, headers={"Idempotency-Key": "cancel-1"})
    again = await served.client.post(path, headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == 200, first.text
    assert len(first.json()["cancelled"]) == 1
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
