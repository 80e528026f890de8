"""Exactly-once submission of one batch (DESIGN.md invariant 2).

1. Record the intent (not_submitted -> submitting) and commit, before any call.
2. Count the attempt (committed) and call create with the SDK's retries off.
3. Accepted: record the vendor id (-> pending). Definite rejection: -> failed.
4. Unknown outcome (timeout, cut connection, 5xx), or a batch found in
   `submitting` after a crash: reconcile against the vendor's list at once (a
   batch the vendor lists is adopted in the same step), then again at 1, 2, 4 ...
   seconds; the settle period (60 s since the last create) is only the condition
   for *resending*.

OpenAI batches carry our tag in `metadata`, so a match is certain. Anthropic
has no metadata: a candidate is a batch created in our window with our request
count that no other batch of ours has claimed. One candidate is adopted
**provisionally** (`provisional`): it may be another store's batch on the same
account, so it is never cancelled or deleted at the vendor until its results
show our tag (ingest checks; a foreign one is disowned and remembered in
`foreign_vendor_ids`, and the batch goes back to submitting on its own key,
using up none of its requests' attempts). Two or more candidates is the
ambiguous case: we adopt none and never resend; we wait until candidates end
and adopt the one whose results carry our tag (proven).

A cancel recorded while the batch is submitting (`cancel_requested_at`) is
applied by the engine as soon as the create is resolved; if no create ever left
(no attempt counted, or nothing found once settled), the batch ends `cancelled`
without one. A batch waiting for enqueued-token capacity stays not_submitted
(`hold_reason`; see capacity.py).
"""

from __future__ import annotations

import orjson

from batchkiln.clock import Clock
from batchkiln.engine.capacity import HOLD_SECONDS, WAITING, EnqueuedTokens
from batchkiln.engine.step import StepResult
from batchkiln.intake.keys import parse_wire_id, wire_id
from batchkiln.lifecycle import Event, State
from batchkiln.providers.base import (
    AmbiguousOutcome,
    CreateSpec,
    Provider,
    VendorBatch,
    VendorError,
    WireRequest,
)
from batchkiln.store import BatchRow, JobRow, Store

SETTLE_SECONDS = 60.0  # a vendor's list may lag its create; wait this long before resending
RECONCILE_FIRST = 1.0  # after an unknown outcome: look again after 1, 2, 4 ... seconds
WINDOW_SLACK = 120.0  # clock skew between us and the vendor


class Submitter:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker: str,
        *,
        scale: float = 1.0,
        capacity: EnqueuedTokens | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.scale = scale  # vendor seconds per store second (see Kiln.time_scale)
        self.capacity = capacity

    async def build_spec(self, job: JobRow, batch: BatchRow) -> CreateSpec:
        rows = await self.store.ledger.requests_of(batch.id)

        async def record_input(name: str) -> None:
            """Gemini: the uploaded input file, committed before the create call names it."""
            await self.store.batches.update(batch.id, input_file=name)
            await self.store.audit.record(
                "submit.input_file",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=self.worker,
                reason=f"input file {name} recorded before create",
                data={"input_file": name},
            )

        return CreateSpec(
            batch_key=batch.key,
            tag=batch.tag,
            model=job.model,
            endpoint=job.endpoint,
            requests=[
                WireRequest(wire_id(batch.tag, seq), orjson.loads(body)) for seq, body in rows
            ],
            input_file=batch.input_file,
            record_input=record_input,
        )

    async def submit(self, job: JobRow, batch: BatchRow, provider: Provider) -> StepResult:
        if batch.state == State.NOT_SUBMITTED:
            if batch.cancel_requested_at is not None:
                return await self._cancel_unsent(batch, "cancelled before any vendor call")
            if self.capacity is not None:
                held = await self.capacity.hold_reason(job, batch)
                if held is not None:
                    return await self._hold(batch, held)
            batch = await self.store.batches.transition(
                batch,
                State.NOT_SUBMITTED,
                Event.SUBMIT,
                worker=self.worker,
                reason="intent recorded before the vendor call",
                values={"submit_started_at": self.clock.now(), "hold_reason": None},
            )
        if batch.state != State.SUBMITTING:
            return StepResult(0, f"already {batch.state.value}")
        if batch.cancel_requested_at is not None and batch.submit_attempts == 0:
            return await self._cancel_unsent(batch, "cancelled before the create call left")
        spec = await self.build_spec(job, batch)
        if batch.submit_attempts > 0:
            found = await self._reconcile(batch, spec, provider)
            if found is not None:
                return found
            if batch.cancel_requested_at is not None:
                return await self._cancel_unsent(
                    batch, "no vendor batch exists after the settle period: cancelled, not sent"
                )
        return await self._create(batch, spec, provider)

    async def _cancel_unsent(self, batch: BatchRow, why: str) -> StepResult:
        await self.store.batches.transition(
            batch, batch.state, Event.CANCEL, worker=self.worker, reason=why
        )
        return StepResult(0, why)

    async def _hold(self, batch: BatchRow, reason: str) -> StepResult:
        """Keep a batch not_submitted while the vendor has no capacity for it; one
        audit event when the hold begins (and whenever its reason changes kind)."""
        if batch.hold_reason is None:
            await self.store.audit.record(
                "submit.held",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=self.worker,
                reason=reason,
            )
        if batch.hold_reason != reason:
            await self.store.batches.update(batch.id, hold_reason=reason)
        return StepResult(HOLD_SECONDS, WAITING)

    async def _create(self, batch: BatchRow, spec: CreateSpec, provider: Provider) -> StepResult:
        attempt = batch.submit_attempts + 1
        await self.store.batches.update(  # committed before the call
            batch.id, submit_attempts=attempt, last_submit_at=self.clock.now()
        )
        await self.store.audit.record(
            "submit.attempt",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"create call {attempt} ({len(spec.requests)} requests)",
        )
        try:
            vendor = await provider.create(spec)
        except AmbiguousOutcome as exc:
            await self.store.audit.record(
                "submit.unknown",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=self.worker,
                reason=f"outcome unknown ({exc.message}); reconciling now, resend only"
                f" after {SETTLE_SECONDS:.0f} s with no match",
            )
            # Reconcile at once: a vendor that committed the batch usually lists it.
            found = await self._reconcile(await self.store.batches.get(batch.id), spec, provider)
            return found or StepResult(RECONCILE_FIRST, "ambiguous create; will reconcile")
        except VendorError as exc:
            if exc.retryable:
                await self.store.audit.record(
                    "submit.retry",
                    job_id=batch.job_id,
                    batch_id=batch.id,
                    worker=self.worker,
                    reason=f"vendor said retry ({exc.status}: {exc.message})",
                    data={"retry_after": exc.retry_after},
                )
                wait = exc.retry_after if exc.retry_after is not None else SETTLE_SECONDS
                return StepResult(wait, "vendor asked us to retry")
            await self.store.batches.transition(
                batch,
                State.SUBMITTING,
                Event.REJECTED,
                worker=self.worker,
                reason=f"vendor rejected the batch: {exc.message}",
                values={
                    "error": {"status": exc.status, "code": exc.code, "message": exc.message},
                    "detected_at": self.clock.now(),
                },
            )
            return StepResult(0, "rejected")
        await self._accept(batch, vendor, how="created")
        return StepResult(None, "accepted")

    async def _reconcile(
        self, batch: BatchRow, spec: CreateSpec, provider: Provider
    ) -> StepResult | None:
        """Look for the vendor batch an earlier attempt may have made. None: resend."""
        since = (batch.submit_started_at or self.clock.now()) - WINDOW_SLACK
        foreign = set(batch.foreign_vendor_ids or [])
        candidates = [
            c
            for c in await provider.find_candidates(spec, since=since)
            if c.vendor_id not in foreign
        ]
        mine = [c for c in candidates if c.tag == batch.tag]
        if len(mine) == 1:
            await self._accept(batch, mine[0], how="reconciled by tag")
            return StepResult(None, "reconciled")
        if not mine:
            mine = [c for c in candidates if c.tag is None and await self._unclaimed(c, batch)]
            if len(mine) == 1 and mine[0].input_file_id is not None:
                # matched by the input file we uploaded (and recorded) first: proof
                await self._accept(batch, mine[0], how="reconciled by our input file")
                return StepResult(None, "reconciled")
            if len(mine) == 1:  # window + count only: may be another store's batch
                await self._accept(
                    batch,
                    mine[0],
                    how="reconciled provisionally (window and request count; its results"
                    " must show our tag)",
                    provisional=True,
                )
                return StepResult(None, "reconciled provisionally")
        if len(mine) > 1 and all(c.tag == batch.tag for c in mine):
            # Several batches carry our tag: an earlier resend raced. Keep the oldest.
            oldest = min(mine, key=lambda c: c.created_at)
            await self._accept(batch, oldest, how="reconciled (oldest of several tagged)")
            return StepResult(None, "reconciled")
        if len(mine) > 1:
            return await self._ambiguous(batch, mine, provider)
        waited = (self.clock.now() - (batch.last_submit_at or 0.0)) * self.scale
        settled = waited >= SETTLE_SECONDS
        await self.store.audit.record(
            "submit.reconcile",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason="no vendor batch found" + ("; resending" if settled else "; waiting to settle"),
            data={"candidates": len(candidates)},
        )
        if not settled:
            again = min(SETTLE_SECONDS - waited, max(RECONCILE_FIRST, waited))
            return StepResult(again, "settling")
        return None

    async def _ambiguous(
        self, batch: BatchRow, candidates: list[VendorBatch], provider: Provider
    ) -> StepResult:
        ended = [
            c
            for c in candidates
            if c.state not in (State.PENDING, State.IN_PROGRESS, State.CANCELLING)
        ]
        for candidate in ended:
            async for line in provider.results(candidate):
                parsed = parse_wire_id(line.wire_id)
                if parsed is not None and parsed[0] == batch.tag:
                    await self._accept(batch, candidate, how="reconciled by result tags")
                    return StepResult(None, "reconciled")
                break  # one line tells whose batch it is
        await self.store.audit.record(
            "submit.ambiguous",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"{len(candidates)} vendor batches match our window and size; not resending,"
            " waiting for their results to show our tag",
            data={"candidates": [c.vendor_id for c in candidates]},
        )
        return StepResult(300.0, "ambiguous reconciliation")

    async def _unclaimed(self, candidate: VendorBatch, batch: BatchRow) -> bool:
        owner = await self.store.batches.by_vendor_id(candidate.vendor_id)
        return owner is None or owner.id == batch.id

    async def _accept(
        self, batch: BatchRow, vendor: VendorBatch, *, how: str, provisional: bool = False
    ) -> None:
        await self.store.batches.transition(
            batch,
            State.SUBMITTING,
            Event.ACCEPTED,
            worker=self.worker,
            reason=f"vendor batch {vendor.vendor_id} {how}",
            values={
                "vendor_id": vendor.vendor_id,
                "vendor_status": vendor.vendor_status,
                "vendor_created_at": vendor.created_at,
                "vendor_total": vendor.total,
                "check_attempt": 0,
                "provisional": 1 if provisional else 0,
            },
            data={"vendor_id": vendor.vendor_id, "how": how, "provisional": provisional},
        )
