"""A webhook that arrives while a worker is stepping its batch is never lost: the
step's own release must not push the next check past it."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

from batchkiln.engine.kiln import Kiln
from batchkiln.engine.schedule import SAFETY_NET, TrackingMode
from batchkiln.lifecycle import State
from batchkiln.providers.base import Provider, VendorBatch

from .conftest import World
from .helpers import submit_job
from .test_webhooks import event, post


class _WebhookDuringRetrieve:
    """The vendor finishes the batch and sends its webhook while our retrieve (which
    saw it still running) is in flight."""

    def __init__(self, inner: Provider, world: World) -> None:
        self._inner = inner
        self._world = world
        self.delivered = 0

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        snapshot = await self._inner.retrieve(vendor_id)
        if not self.delivered:
            self.delivered += 1
            response = await post(
                self._world.receiver,
                event(vendor_id, self._world.clock.now()),
                webhook_id="wh_during_step",
                at=self._world.clock.now(),
                secret=self._world.secret,
            )
            assert response.status_code == 200, response.text
        return snapshot

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Providers(Mapping[str, Provider]):
    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def __getitem__(self, name: str) -> Provider:
        if name != "openai":
            raise KeyError(name)
        return self._provider  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(["openai"])

    def __len__(self) -> int:
        return 1


async def test_a_webhook_during_a_step_leaves_the_batch_due_right_after_it(world: World) -> None:
    """Webhook mode: the step reads `in_progress` and would wait an hour; a webhook
    lands during that read; after the step the batch is due at once, not in an hour."""
    kiln = world.kiln(TrackingMode.WEBHOOK)
    batch = await submit_job(kiln, world.tmp, "during")
    assert batch.next_check_at == world.clock.now() + SAFETY_NET
    world.clock.advance(60)  # the vendor is processing now
    hooked = _WebhookDuringRetrieve(world.providers["openai"], world)
    racing = Kiln(
        world.store,
        _Providers(hooked),
        clock=world.clock,
        worker="w-race",
        rng=random.Random(0),
        tracking=TrackingMode.WEBHOOK,
        budget=world.app.budget,
    )
    await world.store.batches.mark_due(batch.id)  # its check is due: the worker claims it
    assert await racing.run_once() == 1
    assert hooked.delivered == 1
    row = await world.store.batches.get(batch.id)
    assert row.state == State.IN_PROGRESS  # what the read saw
    assert row.next_check_at is not None and row.next_check_at <= world.clock.now()
    assert row.lease_owner is None
