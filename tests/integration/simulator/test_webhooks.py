"""OpenAI batch webhooks: thin events signed per Standard Webhooks, verified with the
SDK's own `client.webhooks.unwrap()`, retried with backoff, and the injected faults
(duplicate, drop, out of order, delay)."""

from __future__ import annotations

import httpx
import openai
import orjson
from openai.types.webhooks import BatchCompletedWebhookEvent
from standardwebhooks import Webhook

from batchkiln.clock import FakeClock
from batchkiln.simulator import Faults, Simulator, sign

from .helpers import (
    WebhookReceiver,
    anthropic_requests,
    chat_lines,
    openai_client,
    raw_batch,
    submit,
)


async def test_completed_batch_webhook_unwraps_with_the_sdk(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """batch.completed is POSTed when due and verifies with client.webhooks.unwrap()."""
    batch = await submit(oai, chat_lines(3))
    assert await sim.deliver_due_webhooks() == 0
    clock.advance(3600)
    assert await sim.deliver_due_webhooks() == 1
    [hook] = receiver.received
    event = oai.webhooks.unwrap(hook.body, hook.headers, secret=sim.webhook_secret)
    assert isinstance(event, BatchCompletedWebhookEvent)
    assert event.data.id == batch.id and event.object == "event"
    done = await raw_batch(oai, batch.id)
    assert event.created_at == done.completed_at
    assert set(orjson.loads(hook.body)) == {"id", "object", "created_at", "type", "data"}
    assert hook.headers["webhook-id"].startswith("wh_")
    assert hook.headers["webhook-signature"].startswith("v1,")
    Webhook(sim.webhook_secret).verify(hook.body, hook.headers)  # the reference library
    assert sim.counters.webhook_deliveries == 1


async def test_each_terminal_status_has_its_event(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """failed, expired and cancelled batches emit batch.failed/expired/cancelled."""
    await submit(oai, chat_lines(1) + b"oops\n", tag="f")
    sim.set_batch_faults("e", Faults(expire=True))
    await submit(oai, chat_lines(2, tag="e"), tag="e")
    cancelled = await submit(oai, chat_lines(2, tag="c"), tag="c")
    await oai.batches.cancel(cancelled.id)
    clock.advance(25 * 3600)
    await sim.deliver_due_webhooks()
    assert sorted(receiver.types()) == ["batch.cancelled", "batch.expired", "batch.failed"]
    for hook in receiver.received:
        oai.webhooks.unwrap(hook.body, hook.headers, secret=sim.webhook_secret)


async def test_non_2xx_answers_are_retried_with_backoff_and_the_same_id(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """A 500 reschedules the delivery 5 s later, then 5 min; the webhook-id is stable."""
    receiver.statuses = [500, 503]
    await submit(oai, chat_lines(1))
    clock.advance(3600)
    await sim.deliver_due_webhooks()
    clock.advance(4)
    assert await sim.deliver_due_webhooks() == 0
    clock.advance(1)
    assert await sim.deliver_due_webhooks() == 1
    clock.advance(299)
    assert await sim.deliver_due_webhooks() == 0
    clock.advance(1)
    assert await sim.deliver_due_webhooks() == 1
    assert [a.status_code for a in sim.counters.webhook_attempts] == [500, 503, 200]
    assert [a.attempt for a in sim.counters.webhook_attempts] == [0, 1, 2]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert sim.counters.webhook_deliveries == 1 and not sim.webhooks.pending


async def test_unreachable_receiver_is_retried(clock: FakeClock) -> None:
    """A POST that fails outright (connection refused) is recorded and rescheduled."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    hooks = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    sim = Simulator(clock=clock, webhook_urls=["http://hooks.test/x"], webhook_client=hooks)
    client = openai_client(sim.app, sim.openai_base_url)
    await submit(client, chat_lines(1))
    clock.advance(3600)
    await sim.deliver_due_webhooks()
    [attempt] = sim.counters.webhook_attempts
    assert attempt.status_code is None and attempt.error and "ConnectError" in attempt.error
    assert len(sim.webhooks.pending) == 1 and sim.webhooks.pending[0].due_at == clock.now() + 5
    await hooks.aclose()


async def test_duplicate_delivery_sends_the_event_twice(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """webhook_duplicate=1 delivers each event twice with the same webhook-id."""
    sim.faults = Faults(webhook_duplicate=1.0)
    await submit(oai, chat_lines(1))
    clock.advance(3600)
    await sim.deliver_due_webhooks()
    assert len(receiver.received) == 2
    assert receiver.received[0].body == receiver.received[1].body
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


async def test_dropped_events_are_never_delivered(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """webhook_drop=1 loses the event; the counters say so."""
    sim.faults = Faults(webhook_drop=1.0)
    await submit(oai, chat_lines(1))
    clock.advance(3600)
    await sim.deliver_due_webhooks()
    assert receiver.received == [] and sim.counters.webhook_dropped == 1


async def test_out_of_order_delivers_newest_first(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """With webhook_out_of_order, events due together arrive newest first."""
    sim.faults = Faults(webhook_out_of_order=True)
    first = await submit(oai, chat_lines(1))
    clock.advance(60)
    second = await submit(oai, chat_lines(1), tag="t2")
    clock.advance(3600)
    await sim.deliver_due_webhooks()
    ids = [orjson.loads(r.body)["data"]["id"] for r in receiver.received]
    assert ids == [second.id, first.id]


async def test_delay_holds_the_event_back(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """webhook_delay_seconds postpones the first delivery on the virtual clock."""
    sim.faults = Faults(
        webhook_delay_seconds=600,
        queue_delay_seconds=0,
        processing_seconds=10,
        finalizing_seconds=0,
    )
    await submit(oai, chat_lines(1))
    clock.advance(11)
    assert await sim.deliver_due_webhooks() == 0
    clock.advance(600)
    assert await sim.deliver_due_webhooks() == 1


async def test_anthropic_batches_emit_no_webhooks(
    sim: Simulator, clock: FakeClock, receiver: WebhookReceiver, ant: object
) -> None:
    """The Anthropic surface has no batch webhooks."""
    import anthropic

    assert isinstance(ant, anthropic.AsyncAnthropic)
    await ant.messages.batches.create(requests=anthropic_requests(2))
    clock.advance(3600)
    await sim.deliver_due_webhooks()
    assert receiver.received == [] and sim.counters.webhook_events == 0


def test_signature_matches_the_spec_test_vector() -> None:
    """sign() reproduces the SDK test vector quoted in the vendor spec."""
    body = (
        b'{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at":'
        b' 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}'
    )
    signature = sign(
        "whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c=",
        "wh_685c059ae39c8190af8c71ed1022a24d",
        1750861210,
        body,
    )
    assert signature == "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY="
