"""Cancelling a Job: per batch, the user's cancel is recorded as intent on the row
and applied at the vendor only when that is safe and useful.

- not_submitted: ends `cancelled` at once; nothing reaches the vendor.
- submitting (create in flight or its outcome unknown): the intent waits on the row;
  the moment the create is resolved (accepted or reconciled) the vendor batch is
  cancelled; if it never reached the vendor, the batch ends `cancelled` without a
  create (see submission.py).
- pending / in_progress, ours for certain: cancelled at the vendor now. A vendor that
  says the batch already ended is not an error: the batch is refreshed and ingested
  normally. Another failure leaves the intent for the worker's next step.
- pending / in_progress adopted without proof (provisional): never cancelled at the
  vendor, which may be another store's batch; the intent is applied once its results
  show our tag (then it has ended anyway: no retries follow).
- ended at the vendor, not yet ingested: its results are ingested; the intent stops
  any retry child.

Every batch gets a line saying what happened (`CancelReport`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from batchkiln.clock import Clock
from batchkiln.engine.step import StepResult
from batchkiln.engine.tracking import Tracker
from batchkiln.lifecycle import ENDED_AT_VENDOR, Event, State
from batchkiln.providers.base import Provider, VendorError
from batchkiln.store import BatchRow, StaleTransition, Store


@dataclass(frozen=True)
class CancelReport:
    """What a cancel did to one batch."""

    batch_id: str
    state: str  # the batch's state when the cancel came
    action: str  # cancelled | cancelling | recorded | already_ended | done | failed
    detail: str

    def __str__(self) -> str:
        return f"{self.batch_id} ({self.state}): {self.detail}"


class Canceller:
    """Vendor calls are counted by the caller (a CountedProvider), as for every step."""

    def __init__(self, store: Store, clock: Clock, worker: str, tracker: Tracker) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.tracker = tracker

    async def cancel(self, batch: BatchRow, provider: Provider | None) -> CancelReport:
        """Record the cancel on one batch and apply what can be applied now."""
        state = batch.state
        if state == State.DONE:
            return CancelReport(batch.id, state, "done", "already done; nothing to cancel")
        await self.store.batches.request_cancel(batch.id)
        await self.store.audit.record(
            "cancel.requested",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"cancel requested by the user while {state.value}",
        )
        if state == State.NOT_SUBMITTED:
            try:
                await self.store.batches.transition(
                    batch, state, Event.CANCEL, worker=self.worker, reason="cancelled by user"
                )
            except StaleTransition:  # a worker just began the submit: the intent waits
                await self.store.batches.mark_due(batch.id)
                return CancelReport(
                    batch.id, state, "recorded", "submit under way; cancelled once it resolves"
                )
            return CancelReport(batch.id, state, "cancelled", "cancelled before any vendor call")
        if state == State.SUBMITTING:
            await self.store.batches.mark_due(batch.id)
            return CancelReport(
                batch.id,
                state,
                "recorded",
                "create outcome not known yet; cancelled as soon as it is resolved",
            )
        if state in (State.PENDING, State.IN_PROGRESS):
            if batch.provisional:
                return CancelReport(
                    batch.id,
                    state,
                    "recorded",
                    f"vendor batch {batch.vendor_id} was adopted without proof; it is not"
                    " cancelled at the vendor until its results show it is ours",
                )
            if provider is None:
                await self.store.batches.mark_due(batch.id)
                return CancelReport(
                    batch.id, state, "recorded", "provider not configured here; a worker applies it"
                )
            return await self.apply(batch, provider)
        if state == State.CANCELLING:
            return CancelReport(batch.id, state, "cancelling", "already cancelling at the vendor")
        # ended at the vendor or downloading: ingest as usual, but start no retries
        return CancelReport(
            batch.id,
            state,
            "already_ended",
            f"already {state.value}; its results are ingested, no retries follow",
        )

    async def apply(self, batch: BatchRow, provider: Provider) -> CancelReport:
        """Cancel a live batch that is ours at the vendor."""
        assert batch.vendor_id is not None and not batch.provisional
        try:
            await provider.cancel(batch.vendor_id)
        except VendorError as exc:
            return await self._refused(batch, provider, exc)
        try:
            await self.store.batches.transition(
                batch,
                batch.state,
                Event.CANCEL,
                worker=self.worker,
                reason=f"cancelled by user at the vendor ({batch.vendor_id})",
                values={"check_attempt": 0},
            )
        except StaleTransition as exc:  # the tracker moved it meanwhile: look again
            await self.store.batches.mark_due(batch.id)
            return CancelReport(batch.id, batch.state, "cancelling", f"cancel sent; {exc}")
        await self.store.batches.mark_due(batch.id)
        return CancelReport(
            batch.id, batch.state, "cancelling", f"cancel sent to the vendor ({batch.vendor_id})"
        )

    async def _refused(self, batch: BatchRow, provider: Provider, exc: VendorError) -> CancelReport:
        """The vendor refused the cancel: already ended is fine (refresh, ingest)."""
        try:
            snapshot = await provider.retrieve(str(batch.vendor_id))
        except VendorError as again:
            return await self._failed(batch, f"{exc.message}; then {again.message}")
        if snapshot.state in ENDED_AT_VENDOR or snapshot.state == State.CANCELLING:
            with contextlib.suppress(StaleTransition):  # the tracker moved it first
                await self.tracker.apply(batch, snapshot, provider, via="retrieve after cancel")
            await self.store.batches.mark_due(batch.id)
            action = "cancelling" if snapshot.state == State.CANCELLING else "already_ended"
            return CancelReport(
                batch.id,
                batch.state,
                action,
                f"the vendor says {snapshot.vendor_status}: refreshed; its results are"
                " ingested, no retries follow",
            )
        return await self._failed(batch, exc.message)

    async def _failed(self, batch: BatchRow, why: str) -> CancelReport:
        await self.store.audit.record(
            "cancel.failed",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"vendor cancel failed: {why}; the worker tries again",
        )
        return CancelReport(batch.id, batch.state, "failed", f"cancel failed ({why}); retried")

    async def apply_pending(self, batch: BatchRow, provider: Provider) -> StepResult | None:
        """The worker's side: a live batch, ours, with a cancel not yet applied."""
        if (
            batch.cancel_requested_at is None
            or batch.provisional
            or batch.vendor_id is None
            or batch.state not in (State.PENDING, State.IN_PROGRESS)
        ):
            return None
        report = await self.apply(batch, provider)
        if report.action == "failed":
            return StepResult(60.0, report.detail)
        return StepResult(0, report.detail)
