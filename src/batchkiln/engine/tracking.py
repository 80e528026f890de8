"""Learning what the vendor did: one refresh of one batch, and applying a
vendor snapshot (from retrieve, a list page, or a webhook-triggered fetch)
onto our lifecycle. Completion detection changes how we learn of a transition,
never which transitions exist.
"""

from __future__ import annotations

import random

from batchkiln.clock import Clock
from batchkiln.engine.schedule import Backoff, Look, TrackingMode, TrackingPolicy, next_look
from batchkiln.engine.step import StepResult
from batchkiln.lifecycle import BATCH, ENDED_AT_VENDOR, LIVE_AT_VENDOR, Event, State
from batchkiln.providers.base import Provider, VendorBatch, VendorError
from batchkiln.store import BatchRow, Store

# Vendors whose batches are known to sit PENDING for days (python-genai#1482, #2221,
# #2974): a batch pending past `Tracker.stall_after` gets one `batch.stalled` event.
STALL_VENDORS = frozenset({"gemini"})
STALL_AFTER_SECONDS = 24 * 3600.0  # Gemini's documented turnaround target


def detection_latency(batch: BatchRow) -> float | None:
    """Seconds from the vendor's terminal timestamp to our noticing it."""
    if batch.detected_at is None or batch.vendor_ended_at is None:
        return None
    return max(0.0, batch.detected_at - batch.vendor_ended_at)


class Tracker:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker: str,
        *,
        policy: TrackingPolicy | None = None,
        rng: random.Random | None = None,
        vendor_clock: Clock | None = None,
        scale: float = 1.0,
        stall_after: float = STALL_AFTER_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.policy = policy or TrackingPolicy()
        self.rng = rng or random.Random()
        # The vendor's timestamps (created_at, expires_at) are read against the
        # vendor's clock: the simulator's virtual one while the store runs on real time.
        self.vendor_clock = vendor_clock or clock
        self.scale = scale  # vendor seconds per store second
        self.stall_after = stall_after

    async def refresh(self, batch: BatchRow, provider: Provider) -> StepResult:
        """Ask the vendor for the batch and apply what it says."""
        assert batch.vendor_id is not None, f"batch {batch.id} has no vendor id"
        try:
            vendor = await provider.retrieve(batch.vendor_id)
        except VendorError as exc:
            return await self.read_failed(batch, provider, exc, what="retrieve")
        return await self.apply(batch, vendor, provider)

    async def read_failed(
        self, batch: BatchRow, provider: Provider, exc: VendorError, *, what: str
    ) -> StepResult:
        """A failed read (5xx, 429, timeout) is retried on the doubling schedule,
        honouring retry-after, and never counts as a state change."""
        attempt = batch.check_attempt + 1
        await self.store.batches.update(batch.id, check_attempt=attempt)
        await self.store.audit.record(
            "poll.failed",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"{what}: {exc.status or 'connection'}: {exc.message}",
            data={"retry_after": exc.retry_after, "attempt": attempt},
        )
        delay = self._retry_backoff(provider).delay(attempt, self.rng, retry_after=exc.retry_after)
        return StepResult(delay, "read failed")

    async def apply(
        self, batch: BatchRow, vendor: VendorBatch, provider: Provider, *, via: str = "retrieve"
    ) -> StepResult:
        """Move the batch to match the vendor snapshot and say when to look next."""
        now = self.clock.now()
        values: dict[str, object] = {
            "vendor_status": vendor.vendor_status,
            "vendor_total": vendor.total,
            "vendor_succeeded": vendor.succeeded,
            "vendor_failed": vendor.failed,
            "vendor_ended_at": vendor.ended_at,
        }
        event = self._event_for(batch.state, vendor.state)
        ended = event is not None and vendor.state in ENDED_AT_VENDOR
        if ended:
            values["detected_at"] = now
        attempt, delay = 0, 0.0
        if not ended:
            attempt, delay = next_look(
                self.policy.backoff_for(provider),
                batch.check_attempt,
                Look(
                    changed=event is not None or vendor.vendor_status != batch.vendor_status,
                    in_progress=(vendor.state == State.IN_PROGRESS),
                    total=vendor.total,
                    processed=vendor.processed,
                    started_at=vendor.created_at or batch.vendor_created_at,
                    expires_at=vendor.expires_at,
                ),
                now=self.vendor_clock.now(),
                rng=self.rng,
            )
        values["check_attempt"] = attempt
        await self.store.audit.record(
            "poll",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"vendor says {vendor.vendor_status}"
            f" ({vendor.processed}/{vendor.total} processed) via {via}",
            data=None if ended else {"next_check_in": round(delay, 3), "attempt": attempt},
        )
        if vendor.state == State.PENDING and provider.name in STALL_VENDORS:
            # the vendor's age of the batch, on the vendor's clock (its created_at is theirs)
            await self._note_stall(batch, vendor, self.vendor_clock.now())
        state = batch.state
        if event is None:
            await self.store.batches.update(batch.id, **values)
        else:
            moved = await self.store.batches.transition(
                batch,
                batch.state,
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
            state = moved.state
        if state in ENDED_AT_VENDOR:
            return StepResult(0, f"ended: {state.value}")
        return StepResult(delay, vendor.vendor_status)

    async def _note_stall(self, batch: BatchRow, vendor: VendorBatch, now: float) -> None:
        """One `batch.stalled` event once a batch has been pending too long."""
        pending_for = now - (vendor.created_at or batch.vendor_created_at or now)
        if pending_for < self.stall_after:
            return
        events = await self.store.audit.for_job(batch.job_id)
        if any(e.kind == "batch.stalled" and e.batch_id == batch.id for e in events):
            return
        await self.store.audit.record(
            "batch.stalled",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"still {vendor.vendor_status} at the vendor {pending_for / 3600:.1f} h after"
            f" creation (past {self.stall_after / 3600:g} h); it expires at 48 h if it never"
            " starts",
            data={"pending_for": pending_for, "vendor_id": vendor.vendor_id},
        )

    def _retry_backoff(self, provider: Provider) -> Backoff:
        # A failed read in webhook mode (often the one a webhook asked for) is
        # retried on the polling schedule, not an hour later.
        if self.policy.mode_for(provider) == TrackingMode.WEBHOOK:
            return self.policy.poll
        return self.policy.backoff_for(provider)

    @staticmethod
    def _event_for(ours: State, theirs: State) -> Event | None:
        """The table's event from our state to the vendor's; None when the table has no
        such move (the same state, or an older snapshot seen out of order)."""
        if ours not in LIVE_AT_VENDOR:
            return None
        return BATCH.event_between(ours, theirs)
