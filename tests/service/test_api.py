"""The jobs API: resources, listing, results, events, cancel/retry, auth, health,
metrics and problem details."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import orjson

from .conftest import Served, inline_job, jsonl, requests_lines

PROBLEM = "application/problem+json"


async def submit(served: Served, key: str, **extra: Any) -> dict[str, Any]:
    r = await served.client.post(
        "/v1/jobs", json=inline_job(**extra), headers={"Idempotency-Key": key}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_job_resource_carries_state_batches_counts_and_costs(served: Served) -> None:
    """GET /v1/jobs/{id}: the lifecycle state, batches with lineage, counts and cost."""
    job = await submit(served, "res")
    assert job["state"] == "not_submitted"
    assert job["counts"] == {"pending": 3}
    [batch] = job["batches"]
    assert batch["parent_id"] is None and batch["attempt"] == 1 and batch["shard"] == 0
    assert job["cost"]["estimate"]["requests"] == 3
    await served.drive(job["id"])
    done = (await served.client.get(f"/v1/jobs/{job['id']}")).json()
    assert done["state"] == "done" and done["status"] == "done"
    assert done["counts"] == {"succeeded": 3}
    assert done["batches"][0]["vendor_id"]
    assert done["batches"][0]["vendor_calls"] >= 1
    assert done["cost"]["actual_usd"] is not None
    assert done["cost"]["standard_usd"] >= done["cost"]["actual_usd"]


async def test_results_stream_flat_and_vendor_in_input_order(served: Served) -> None:
    """Results are JSONL, one line per request, in input order, in either format."""
    job = await submit(served, "out", requests=requests_lines(7))
    await served.drive(job["id"])
    flat = await served.client.get(f"/v1/jobs/{job['id']}/results")
    assert flat.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(x) for x in flat.content.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"r{i}" for i in range(7)]
    assert {x["outcome"] for x in lines} == {"succeeded"}
    vendor = await served.client.get(f"/v1/jobs/{job['id']}/results?format=vendor")
    assert [orjson.loads(x)["custom_id"] for x in vendor.content.splitlines()] == [
        f"r{i}" for i in range(7)
    ]


async def test_list_filters_and_cursor_pagination(served: Served) -> None:
    """GET /v1/jobs pages newest first with a cursor, and filters by state and provider."""
    ids = []
    for i in range(5):
        ids.append((await submit(served, f"list-{i}", requests=requests_lines(1, f"j{i}")))["id"])
        served.clock.advance(1)
    await served.drive(ids[0])
    page = (await served.client.get("/v1/jobs?limit=2")).json()
    seen = [j["id"] for j in page["data"]]
    while page["next_cursor"]:
        page = (await served.client.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}")).json()
        seen += [j["id"] for j in page["data"]]
    assert seen == list(reversed(ids))
    done = (await served.client.get("/v1/jobs?state=done")).json()["data"]
    assert [j["id"] for j in done] == [ids[0]]
    waiting = (await served.client.get("/v1/jobs?state=not_submitted")).json()["data"]
    assert len(waiting) == 4
    assert (await served.client.get("/v1/jobs?provider=anthropic")).json()["data"] == []
    bad = await served.client.get("/v1/jobs?cursor=nonsense")
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM


async def test_events_are_paginated(served: Served) -> None:
    """GET /v1/jobs/{id}/events pages the audit timeline by event id."""
    job = await submit(served, "ev")
    await served.drive(job["id"])
    page = (await served.client.get(f"/v1/jobs/{job['id']}/events?limit=5")).json()
    kinds = [e["kind"] for e in page["data"]]
    while page["next_cursor"]:
        page = (
            await served.client.get(
                f"/v1/jobs/{job['id']}/events?limit=5&after={page['next_cursor']}"
            )
        ).json()
        kinds += [e["kind"] for e in page["data"]]
    assert kinds[0] == "batch.created" and "job.done" in kinds[-2:]
    assert len(kinds) == len(await served.store.audit.for_job(job["id"]))


async def test_not_found_is_a_problem(served: Served) -> None:
    """An unknown job id is a 404 problem of type not_found."""
    for path in ("/v1/jobs/job_nope", "/v1/jobs/job_nope/results", "/v1/jobs/job_nope/events"):
        r = await served.client.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"] == "urn:batchkiln:problem:not_found"
    r = await served.client.post("/v1/jobs/job_nope/cancel")
    assert r.status_code == 404


async def test_bad_input_lists_every_bad_line_and_stores_nothing(served: Served) -> None:
    """A multipart upload with bad lines is 422 naming the upload, each line and reason."""
    good = jsonl(requests_lines(2))
    body = good + b"not json\n" + b'{"custom_id": "x"}\n'
    r = await served.client.post(
        "/v1/jobs",
        files={"file": ("mine.jsonl", body)},
        data={"provider": "openai"},
        headers={"Idempotency-Key": "bad"},
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["type"] == "urn:batchkiln:problem:input"
    assert [(e["file"], e["line"]) for e in problem["errors"]] == [
        ("mine.jsonl", 3),
        ("mine.jsonl", 4),
    ]
    assert await served.store.listing.jobs_page() == []


async def test_unknown_provider_and_bad_options_are_422(served: Served) -> None:
    """Options are validated before anything is stored."""
    for body in (
        inline_job(provider="nope"),
        inline_job(max_attempts=0),
        {"provider": "openai", "requests": []},
        {"provider": "openai", "requests": requests_lines(1), "surprise": 1},
    ):
        r = await served.client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "opt"})
        assert r.status_code == 422, body
        assert r.headers["content-type"] == PROBLEM
    assert await served.store.listing.jobs_page() == []


async def test_cancel_and_retry(served: Served, make_served: Callable[..., Any]) -> None:
    """Cancel asks for every live batch; retry starts children for waiting failures."""
    job = await submit(served, "cx")
    r = await served.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and len(r.json()["cancelled"]) == 1
    await served.drive(job["id"])
    assert (await served.client.get(f"/v1/jobs/{job['id']}")).json()["counts"] == {"cancelled": 3}
    none = await served.client.post(f"/v1/jobs/{job['id']}/retry")
    assert none.status_code == 200 and none.json()["created"] == []


async def test_manual_retry_starts_a_child(make_served: Callable[..., Any]) -> None:
    """With auto_retry off, a retryable failure waits; POST /retry starts its child batch."""
    async with make_served(simulator_faults="fail=0:server_error") as served:
        job = await submit(served, "mr", requests=requests_lines(4), auto_retry=False)
        await served.drive(job["id"])
        waiting = (await served.client.get(f"/v1/jobs/{job['id']}")).json()
        assert waiting["state"] == "awaiting_retry"
        assert waiting["counts"] == {"pending": 1, "succeeded": 3}
        r = await served.client.post(f"/v1/jobs/{job['id']}/retry")
        [child] = r.json()["created"]
        batches = {b["id"]: b for b in r.json()["job"]["batches"]}
        assert batches[child]["parent_id"] == waiting["batches"][0]["id"]
        assert batches[child]["attempt"] == 2
        await served.drive(job["id"])
        done = (await served.client.get(f"/v1/jobs/{job['id']}")).json()
        assert done["counts"] == {"succeeded": 4}


async def test_tokens_are_required_when_configured(make_served: Callable[..., Any]) -> None:
    """With KILN_API_TOKENS set, /v1 and /metrics need a bearer token; health does not."""
    async with make_served(api_tokens="ci:s3cret-token") as s:
        r = await s.client.get("/v1/jobs")
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
        assert (
            await s.client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        assert (await s.client.get("/metrics")).status_code == 401
        ok = await s.client.get("/v1/jobs", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert (await s.client.get("/healthz")).status_code == 200
        assert b"s3cret-token" not in (await s.client.get("/openapi.json")).content


async def test_health_readiness_and_metrics(served: Served) -> None:
    """/healthz is up, /readyz reports the migration, /metrics lists the issue's figures."""
    assert (await served.client.get("/healthz")).json()["status"] == "ok"
    ready = (await served.client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["revision"]
    job = await submit(served, "m")
    await served.drive(job["id"])
    text = (await served.client.get("/metrics")).text
    for name in (
        'kiln_batches{provider="openai",state="done"} 1.0',
        "kiln_vendor_calls_total",
        'kiln_submissions_total{outcome="accepted"} 1.0',
        "kiln_detection_latency_seconds_bucket",
        "kiln_ingest_lines_total 3.0",
        "kiln_ingest_bytes_total",
        "kiln_webhooks_in_total",
        "kiln_webhooks_out_total",
        "kiln_webhook_outbox_depth",
        "kiln_budget_refusals_total",
        "kiln_http_requests_total",
    ):
        assert name in text, name


async def test_budget_refusal_is_a_422_problem(served: Served) -> None:
    """A job over its budget is refused before any vendor call (422 budget_exceeded)."""
    r = await served.client.post(
        "/v1/jobs",
        json=inline_job(budget_usd=0.0000001),
        headers={"Idempotency-Key": "budget"},
    )
    assert r.status_code == 422
    assert r.json()["type"] == "urn:batchkiln:problem:budget_exceeded"
    assert "kiln_budget_refusals_total 1.0" in (await served.client.get("/metrics")).text


async def test_vendor_webhooks_are_mounted_and_need_only_a_signature(
    make_served: Callable[..., Any],
) -> None:
    """/webhooks/openai takes a Standard Webhooks signature (no bearer token) and only
    marks the batch due; a bad signature is 400."""
    from standardwebhooks import Webhook

    from .conftest import SECRET

    async with make_served(webhook_secrets=SECRET, api_tokens="ci:tok") as s:
        job = await s.client.post(
            "/v1/jobs",
            json=inline_job(),
            headers={"Idempotency-Key": "wh", "Authorization": "Bearer tok"},
        )
        job_id = job.json()["id"]
        await s.app.kiln.run_once(job_id=job_id)  # submitted: the batch has a vendor id
        batch = (await s.store.batches.for_job(job_id))[0]
        body = orjson.dumps({"type": "batch.completed", "data": {"id": batch.vendor_id}})
        now = int(time.time())
        s.clock.set(now)  # the receiver checks the timestamp against the App's clock
        signature = Webhook(SECRET).sign(
            "evt_1", dt.datetime.fromtimestamp(now, dt.UTC), body.decode()
        )
        headers = {
            "webhook-id": "evt_1",
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        }
        ok = await s.client.post("/webhooks/openai", content=body, headers=headers)
        assert ok.status_code == 200 and ok.json() == {
            "ok": True,
            "duplicate": False,
            "known": True,
        }
        again = await s.client.post("/webhooks/openai", content=body, headers=headers)
        assert again.json()["duplicate"] is True
        headers["webhook-signature"] = "v1,bm90IGEgc2lnbmF0dXJl"
        bad = await s.client.post("/webhooks/openai", content=body, headers=headers)
        assert bad.status_code == 400


def test_the_documented_provider_names_are_the_wire_formats() -> None:
    """The `provider` enum of the API is exactly the set of names a Job may carry."""
    from typing import get_args

    from batchkiln.providers import WIRE_FORMATS
    from batchkiln.service.uploads import ProviderName

    assert set(get_args(ProviderName)) == set(WIRE_FORMATS)
