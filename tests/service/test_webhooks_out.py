"""Webhooks out: a durable outbox, Standard Webhooks signatures checked by an
independent verifier (the `standardwebhooks` library), the retry schedule on a fake
clock, Retry-After, 410, and a crash between the state change and the delivery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from batchkiln.service.callbacks import CallbackRefused, CallbackRules
from batchkiln.service.outbox import SCHEDULE, retry_after_seconds
from batchkiln.store.audit import append_event
from batchkiln.store.tables import webhook_outbox

from .conftest import CALLBACK, SECRET, Receiver, Served, inline_job, sender_for

OWN_SECRET = "whsec_" + "c2VjcmV0LW9mLXRoaXMtam9iLW9ubHkh"


async def submit_and_finish(served: Served, **extra: Any) -> str:
    r = await served.client.post(
        "/v1/jobs",
        json=inline_job(callback_url=CALLBACK, **extra),
        headers={"Idempotency-Key": "hook-job"},
    )
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    await served.drive(job_id)
    return job_id


def verify(delivery: Any, secret: str = SECRET) -> dict[str, Any]:
    """The independent check: the library's own verify (wall-clock tolerance)."""
    payload: dict[str, Any] = Webhook(secret).verify(delivery.body, delivery.headers)
    return payload


async def test_job_done_is_delivered_once_signed(served: Served) -> None:
    """A finished Job's callback gets one job.done event, signed, naming the job."""
    job_id = await submit_and_finish(served)
    receiver = Receiver()
    sender = sender_for(served, receiver)
    assert await sender.run_once() == 1
    assert await sender.run_once() == 0
    [delivery] = receiver.deliveries
    payload = verify(delivery)
    assert payload["type"] == "job.done"
    assert payload["data"]["id"] == job_id
    assert payload["data"]["outcome"]["counts"] == {"succeeded": 3}
    [row] = await served.store.outbox.for_job(job_id)
    assert delivery.headers["webhook-id"] == row.id
    assert row.delivery == "delivered"
    events = [e for e in await served.store.audit.for_job(job_id) if e.kind == "webhook.delivery"]
    assert [e.data["result"] for e in events if e.data] == ["delivered"]


async def test_a_500_is_retried_on_the_schedule_with_the_same_id(served: Served) -> None:
    """After a 500 the next attempt waits 5 s, carries the same webhook-id, and succeeds."""
    job_id = await submit_and_finish(served)
    receiver = Receiver(httpx.Response(500))
    sender = sender_for(served, receiver)
    await sender.run_once()
    [row] = await served.store.outbox.for_job(job_id)
    assert row.delivery == "pending"
    assert row.next_attempt_at == pytest.approx(served.clock.now() + SCHEDULE[0])
    served.clock.advance(SCHEDULE[0] - 1)
    assert await sender.run_once() == 0
    served.clock.advance(1)
    assert await sender.run_once() == 1
    first, second = receiver.deliveries
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verify(second)
    assert (await served.store.outbox.get(row.id)).delivery == "delivered"


async def test_retry_after_pushes_the_next_attempt_out(served: Served) -> None:
    """A 503 with Retry-After: 120 waits 120 s, not the schedule's 5 s."""
    job_id = await submit_and_finish(served)
    receiver = Receiver(httpx.Response(503, headers={"Retry-After": "120"}))
    sender = sender_for(served, receiver)
    await sender.run_once()
    [row] = await served.store.outbox.for_job(job_id)
    assert row.next_attempt_at == pytest.approx(served.clock.now() + 120)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=0) > 0


async def test_gives_up_after_the_schedule(served: Served) -> None:
    """Always failing: 8 attempts over about 27.6 h, each audited, then given up."""
    job_id = await submit_and_finish(served)
    receiver = Receiver(*[httpx.Response(500)] * 20)
    sender = sender_for(served, receiver)
    start = served.clock.now()
    for _ in range(20):
        await sender.run_once()
        [row] = await served.store.outbox.for_job(job_id)
        if row.delivery != "pending":
            break
        assert row.next_attempt_at is not None
        served.clock.set(row.next_attempt_at)
    assert row.delivery == "failed"
    assert len(receiver.deliveries) == len(SCHEDULE) + 1 == 8
    assert served.clock.now() - start == pytest.approx(sum(SCHEDULE))
    attempts = [e for e in await served.store.audit.for_job(job_id) if e.kind == "webhook.delivery"]
    assert [e.data["attempt"] for e in attempts if e.data] == list(range(1, 9))
    assert attempts[-1].data and attempts[-1].data["result"] == "gave up after 8 attempts"


async def test_410_disables_the_endpoint(served: Served) -> None:
    """410 Gone: the delivery stops and the callback is disabled (nothing more is queued)."""
    job_id = await submit_and_finish(served, callback_events="all")
    receiver = Receiver(httpx.Response(410))
    sender = sender_for(served, receiver)
    await sender.run_once()
    rows = await served.store.outbox.for_job(job_id)
    assert rows[0].delivery == "disabled"
    callback = await served.store.outbox.callback(job_id)
    assert callback is not None and callback.disabled_at is not None
    await sender.run_once()  # the rest of the queue is not sent to a gone endpoint
    assert len(receiver.deliveries) == 1
    assert {r.delivery for r in await served.store.outbox.for_job(job_id)} == {"disabled"}


async def test_a_redirect_is_a_failure_and_not_followed(served: Served) -> None:
    """A 302 is retried later; its Location is never requested."""
    job_id = await submit_and_finish(served)
    receiver = Receiver(httpx.Response(302, headers={"Location": "http://169.254.169.254/"}))
    await sender_for(served, receiver).run_once()
    assert [d.url for d in receiver.deliveries] == [CALLBACK]
    assert (await served.store.outbox.for_job(job_id))[0].delivery == "pending"


async def test_crash_between_state_change_and_delivery(
    served: Served, make_served: Callable[..., Any]
) -> None:
    """The Job finished while no sender ran, then the process died: the next process
    delivers the event, once."""
    job_id = await submit_and_finish(served)
    await served.app.aclose()  # the "crash": nothing was delivered
    async with make_served() as restarted:
        receiver = Receiver()
        sender = sender_for(restarted, receiver)
        await sender.run_once()
        await sender.run_once()
        restarted.clock.advance(86400)
        await sender.run_once()
    assert len(receiver.deliveries) == 1
    assert verify(receiver.deliveries[0])["data"]["id"] == job_id


async def test_a_rolled_back_change_announces_nothing(served: Served) -> None:
    """An outbox row is written in the change's transaction: a rollback leaves none."""
    r = await served.client.post(
        "/v1/jobs", json=inline_job(callback_url=CALLBACK), headers={"Idempotency-Key": "rb"}
    )
    job_id = r.json()["id"]
    with pytest.raises(RuntimeError):
        async with served.store.engine.begin() as conn:
            await append_event(conn, at=0.0, kind="job.done", job_id=job_id, data={})
            raise RuntimeError("the change fails after its event")
    async with served.store.engine.connect() as conn:
        rows = (await conn.execute(select(webhook_outbox.c.id))).all()
    assert rows == []


async def test_every_transition_when_asked_and_own_secret(served: Served) -> None:
    """callback_events=all sends batch transitions too, signed with the job's own secret,
    which never appears in the API or the audit log."""
    job_id = await submit_and_finish(served, callback_events="all", callback_secret=OWN_SECRET)
    receiver = Receiver()
    sender = sender_for(served, receiver)
    while await sender.run_once():
        pass
    payloads = [verify(d, OWN_SECRET) for d in receiver.deliveries]
    moves = [(p["data"]["from_state"], p["data"]["to_state"]) for p in payloads[:-1]]
    assert ("not_submitted", "submitting") in moves
    assert ("downloading", "done") in moves
    assert payloads[-1]["type"] == "job.done"
    with pytest.raises(Exception):  # noqa: B017 (the library raises its own type)
        Webhook(SECRET).verify(receiver.deliveries[0].body, receiver.deliveries[0].headers)
    shown = (await served.client.get(f"/v1/jobs/{job_id}")).content
    events = (await served.client.get(f"/v1/jobs/{job_id}/events?limit=1000")).content
    for text in (
        shown,
        events,
        orjson.dumps([e.__dict__ for e in await served.store.audit.for_job(job_id)]),
    ):
        assert OWN_SECRET.encode() not in text
        assert SECRET.encode() not in text
    assert orjson.loads(shown)["callback"]["own_secret"] is True


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # http off loopback
        "https://user:pw@example.com/hook",  # credentials
        "https://10.0.0.5/hook",  # private
        "https://169.254.169.254/latest",  # link-local (cloud metadata)
        "https://[fe80::1]/hook",  # IPv6 link-local
        "https://127.0.0.1/hook",  # loopback without the flag
        "https://localhost/hook",
        "ftp://example.com/x",
        "https://example.com/hook#frag",
    ],
)
def test_callback_urls_refused(url: str) -> None:
    """Callback URLs that break a rule are refused with the rule named."""
    with pytest.raises(CallbackRefused):
        CallbackRules().check(url)


def test_callback_urls_allowed() -> None:
    """https to a public host is fine; http to loopback only with the flag."""
    assert CallbackRules().check("https://hooks.example.com/kiln")
    assert CallbackRules(allow_loopback=True).check("http://127.0.0.1:8000/hook")
    assert CallbackRules(allow_private=True).check("https://10.0.0.5/hook")
    with pytest.raises(CallbackRefused):
        CallbackRules(allow_loopback=True).check("http://10.0.0.5/hook")


async def test_submit_with_a_refused_callback_is_422(served: Served) -> None:
    """A refused callback_url fails the submission with a callback_url problem."""
    r = await served.client.post(
        "/v1/jobs",
        json=inline_job(callback_url="https://169.254.169.254/"),
        headers={"Idempotency-Key": "bad-hook"},
    )
    assert r.status_code == 422
    assert r.json()["type"] == "urn:batchkiln:problem:callback_url"
    assert await served.store.listing.jobs_page() == []
