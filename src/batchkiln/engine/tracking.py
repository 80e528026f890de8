"""Learning what the vendor did: one refresh of one batch, and applying a
vendor snapshot (from retrieve, a list page, or a webhook-triggered fetch)
onto our lifecycle. Completion detection changes how we learn of a transition,
never which transitions exist.
"""

from __future__ import annotations

import random

from batchkiln.clock import Clock
from batchkiln.engine.schedule import Backoff, predicted_finish
from batchkiln.engine.submission import StepResult
from batchkiln.lifecycle import ENDED_AT_VENDOR, Event, State, event_for_outcome
from batchkiln.providers.base import Provider, VendorBatch, VendorError
from batchkiln.store import BatchRow, Store


class Tracker:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker: str,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()

    async def refresh(self, batch: BatchRow, provider: Provider) -> StepResult:
        """Ask the vendor for the batch and apply what it says. A failed read is
        retried on the same schedule and never counts as a state change."""
        assert batch.vendor_id is not None, f"batch {batch.id} has no vendor id"
        try:
            vendor = await provider.retrieve(batch.vendor_id)
        except VendorError as exc:
            await self.store.batches.add_vendor_calls(batch.id, 1)
            attempt = batch.check_attempt + 1
            await self.store.batches.update(batch.id, check_attempt=attempt)
            await self.store.audit.record(
                "poll.failed",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=self.worker,
                reason=f"{exc.status or 'connection'}: {exc.message}",
            )
            delay = self.backoff.delay(attempt, self.rng, retry_after=exc.retry_after)
            return StepResult(delay, "read failed", retry_after=exc.retry_after)
        await self.store.batches.add_vendor_calls(batch.id, 1)
        return await self.apply(batch, vendor)

    async def apply(self, batch: BatchRow, vendor: VendorBatch) -> StepResult:
        """Move the batch to match the vendor snapshot and say when to look next."""
        now = self.clock.now()
        snapshot = {
            "vendor_status": vendor.vendor_status,
            "vendor_total": vendor.total,
            "vendor_succeeded": vendor.succeeded,
            "vendor_failed": vendor.failed,
            "vendor_ended_at": vendor.ended_at,
        }
        await self.store.audit.record(
            "poll",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"vendor says {vendor.vendor_status}"
            f" ({vendor.processed}/{vendor.total} processed)",
        )
        state = batch.state
        event = self._event_for(state, vendor.state)
        if event is not None:
            values = dict(snapshot, check_attempt=0)
            if vendor.state in ENDED_AT_VENDOR:
                values["detected_at"] = now
            state = await self.store.batches.transition(
                batch,
                state,
                event,
                worker=self.worker,
                reason=f"vendor status {vendor.vendor_status}",
                values=values,
                data={
                    "total": vendor.total,
                    "succeeded": vendor.succeeded,
                    "failed": vendor.failed,
                    "errors": [e.message for e in vendor.errors],
                },
            )
        else:
            await self.store.batches.update(batch.id, **snapshot)
        if state in ENDED_AT_VENDOR:
            return StepResult(0, f"ended: {state.value}")
        attempt = 0 if event is not None else batch.check_attempt + 1
        await self.store.batches.update(batch.id, check_attempt=attempt)
        eta = None
        if state == State.IN_PROGRESS:
            eta = predicted_finish(
                total=vendor.total,
                processed=vendor.processed,
                started_at=self._started_at(batch, vendor),
                now=now,
            )
        return StepResult(self.backoff.delay(attempt, self.rng, eta=eta), vendor.vendor_status)

    @staticmethod
    def _event_for(ours: State, theirs: State) -> Event | None:
        if theirs == ours:
            return None
        if theirs in ENDED_AT_VENDOR and ours in (
            State.PENDING,
            State.IN_PROGRESS,
            State.CANCELLING,
        ):
            return event_for_outcome(theirs)
        if ours == State.PENDING and theirs == State.IN_PROGRESS:
            return Event.STARTED
        if ours in (State.PENDING, State.IN_PROGRESS) and theirs == State.CANCELLING:
            return Event.CANCEL  # cancelled from the vendor's console
        return None  # an older snapshot than what we know (out of order): ignore

    @staticmethod
    def _started_at(batch: BatchRow, vendor: VendorBatch) -> float | None:
        return vendor.created_at or batch.vendor_created_at
