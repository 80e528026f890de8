"""`Kiln`, the composition root: one store, one provider per vendor, one clock.

It is the only code that moves states (through Submitter, Tracker and
Ingestor); the CLI, the worker and the service call it and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchkiln.clock import Clock, SystemClock
from batchkiln.engine.budget import BudgetGuard
from batchkiln.engine.cancel import Canceller, CancelReport
from batchkiln.engine.capacity import WAITING, EnqueuedTokens
from batchkiln.engine.ingest import Ingestor, retry_child
from batchkiln.engine.intake import Intake
from batchkiln.engine.leases import LeaseKeeper
from batchkiln.engine.policy import JobOptions
from batchkiln.engine.refresh import ListRefresher
from batchkiln.engine.schedule import Backoff, TrackingMode, TrackingPolicy
from batchkiln.engine.step import StepResult
from batchkiln.engine.submission import Submitter
from batchkiln.engine.throttle import Throttle
from batchkiln.engine.tracking import Tracker
from batchkiln.errors import LeaseLost, ProviderNotConfigured
from batchkiln.lifecycle import ENDED_AT_VENDOR, LIVE_AT_VENDOR, JobState, State
from batchkiln.providers.base import FailureClass, Provider, VendorError
from batchkiln.providers.counted import CountedProvider
from batchkiln.store import BatchRow, JobRow, StaleTransition, Store
from batchkiln.store.leases import guarded_by

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    job: JobRow
    created: bool  # False: the key already named this Job; nothing was submitted again


@dataclass(frozen=True)
class JobStatus:
    job: JobRow
    batches: list[BatchRow]
    counts: dict[str, int]

    @property
    def state(self) -> str:
        """One word for scripts: the Job's state once it is done or awaiting a retry,
        else the least advanced live batch state."""
        if self.job.status != JobState.ACTIVE:
            return self.job.status.value
        live = [b for b in self.batches if b.state != State.DONE]
        if not live:
            return self.job.status.value
        order = list(State)
        return min(live, key=lambda b: order.index(b.state)).state.value

    @property
    def waiting(self) -> str | None:
        """Why the Job is not moving, when it waits on something (vendor capacity)."""
        held = [b for b in self.batches if b.state == State.NOT_SUBMITTED and b.hold_reason]
        return WAITING if held else None


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Kiln:
    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        *,
        clock: Clock | None = None,
        worker: str | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        lease_seconds: float = 60.0,  # renewed by a heartbeat while a step runs
        tracking: TrackingPolicy | TrackingMode | str | None = None,
        budget: BudgetGuard | None = None,
        vendor_clock: Clock | None = None,
        time_scale: float = 1.0,
        enqueued_limits: Mapping[str, int] | None = None,
        stall_after: float | None = None,  # Gemini: pending this long -> batch.stalled
        vendor_limits: Mapping[str, int] | None = None,
        vendor_concurrency: int = 8,
    ) -> None:
        self.store = store
        self.providers = providers  # may be lazy: a vendor is built on first use
        # `clock` stamps the store (real UTC outside tests); `vendor_clock` is the vendor's
        # time (the simulator's virtual clock), and `time_scale` vendor seconds pass per
        # store second: the engine's waits (poll schedule, settle period, holds) are in
        # vendor seconds and are divided by it when they become store times.
        self.clock = clock or SystemClock()
        self.vendor_clock = vendor_clock or self.clock
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.time_scale = time_scale
        self.worker = worker or default_worker_id()
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.lease_seconds = lease_seconds
        self.leases = LeaseKeeper(store, self.clock, self.worker, lease_seconds)
        self.throttle = Throttle(
            store, self.clock, self.worker, limits=vendor_limits, default_limit=vendor_concurrency
        )
        self.capacity = EnqueuedTokens(store, self.worker, enqueued_limits)
        self.submitter = Submitter(
            store, self.clock, self.worker, scale=time_scale, capacity=self.capacity
        )
        # poll, webhook or hybrid (default: hybrid when a webhook secret is configured);
        # an explicit `backoff` is the polling schedule
        self.tracking = TrackingPolicy.of(tracking)
        self.budget = budget or BudgetGuard(store, self.clock)
        self.intake = Intake(store, self.budget, self.worker)
        if backoff is not None:
            self.tracking = self.tracking.with_poll(backoff)
        self.tracker = Tracker(
            store,
            self.clock,
            self.worker,
            policy=self.tracking,
            rng=self.rng,
            vendor_clock=self.vendor_clock,
            scale=time_scale,
        )
        if stall_after is not None:
            self.tracker.stall_after = stall_after
        self.refresher = ListRefresher(store, self.clock, self.tracker, self.provider)
        self.ingestor = Ingestor(
            store, self.clock, self.worker, self.budget, capacity=self.capacity
        )
        self.canceller = Canceller(store, self.clock, self.worker, self.tracker)

    def provider(self, name: str) -> Provider:
        try:
            raw = self.providers[name]
        except KeyError:
            where = (
                ": the in-process simulator lives only in the command that submitted the job"
                if name.startswith("simulator")
                else ""
            )
            raise ProviderNotConfigured(
                f"no provider {name!r} configured in this process{where}", name=name
            ) from None
        return self.throttle.wrap(raw)  # bounded calls, shared 429 pauses

    async def submit(
        self,
        path: str | Path,
        *,
        provider: str,
        model: str | None = None,
        endpoint: str | None = None,
        key: str | None = None,
        options: JobOptions | None = None,
    ) -> Submitted:
        """Validate a request file and store it as a Job (or find the Job its key names).

        Nothing reaches the vendor here: an invalid file raises InputError with
        every bad line, a Job over a budget raises BudgetExceeded (with the
        estimate), and a valid one becomes not_submitted batches."""
        wire = self.provider(provider).name  # the wire format: "openai" or "anthropic"
        job, created = await self.intake.submit(
            path,
            provider=provider,
            wire=wire,
            model=model,
            endpoint=endpoint,
            key=key,
            options=options or JobOptions(),
        )
        if created:
            await self.store.wake(job.id)  # idle workers (PostgreSQL) start on it now
        if not created:
            await self.store.audit.record(
                "job.resubmitted",
                job_id=job.id,
                worker=self.worker,
                reason="same key and content: returned the existing job, nothing resent",
            )
        return Submitted(job, created)

    async def status(self, job_ref: str) -> JobStatus:
        job = await self.store.jobs.get(job_ref)
        return JobStatus(
            job,
            await self.store.batches.for_job(job.id),
            await self.store.ledger.job_counts(job.id),
        )

    async def step(
        self, batch: BatchRow, job: JobRow | None = None, provider: Provider | None = None
    ) -> StepResult:
        """Run the one step a batch's state calls for (`job`: its Job, if already read)."""
        job = job or await self.store.jobs.get(batch.job_id)
        provider = provider or self.provider(job.provider)  # ProviderNotConfigured
        if batch.state in (State.NOT_SUBMITTED, State.SUBMITTING):
            result = await self.submitter.submit(job, batch, provider)
            # a cancel recorded while the create was unresolved: apply it the moment
            # the batch is ours at the vendor
            after = await self.store.batches.get(batch.id)
            return await self.canceller.apply_pending(after, provider) or result
        if batch.state in LIVE_AT_VENDOR:
            pending = await self.canceller.apply_pending(batch, provider)
            if pending is not None:
                return pending
            return await self.tracker.refresh(batch, provider)
        if batch.state in ENDED_AT_VENDOR or batch.state == State.DOWNLOADING:
            return await self.ingestor.ingest(job, batch, provider)
        return StepResult(None, "done")

    async def run_once(
        self, *, limit: int = 10, job_id: str | None = None, stop: asyncio.Event | None = None
    ) -> int:
        """Claim due batches, step each, release each with its next check. Returns
        how many were stepped. Once `stop` is set, the batches not stepped yet are
        released untouched (still due) and the round ends."""
        claimed, jobs = await self.claim(limit=limit, job_id=job_id)
        if not claimed:
            return 0
        waiting = list(claimed)
        try:
            async with self.leases.beating():
                listed = await self.list_refresh(claimed, jobs)  # several due: one list call
                while waiting and (stop is None or not stop.is_set()):
                    batch = waiting.pop(0)
                    await self.step_claimed(batch, jobs[batch.job_id], listed.get(batch.id))
        finally:  # stopped (or failed) part-way: the ones not stepped go back, still due
            if waiting:
                await asyncio.shield(self._release_untouched(waiting))
            for batch in claimed:
                self.leases.drop(batch.id)
        return len(claimed) - len(waiting)

    async def claim(
        self, *, limit: int = 10, job_id: str | None = None
    ) -> tuple[list[BatchRow], dict[str, JobRow]]:
        """Lease up to `limit` due batches to this worker (the heartbeat keeps them);
        with their Jobs, read once for all."""
        claimed = await self.store.batches.claim_due(
            worker=self.worker, lease_seconds=self.lease_seconds, limit=limit, job_id=job_id
        )
        # A lease of ours that ran out while its step is still running here (this process
        # was starved past its lease) can be claimed again by us: never step it twice.
        claimed = [b for b in claimed if not self.leases.holds(b.id)]
        self.leases.hold(b.id for b in claimed)
        jobs = await self.store.jobs.many(b.job_id for b in claimed) if claimed else {}
        return claimed, jobs

    async def list_refresh(
        self, claimed: list[BatchRow], jobs: Mapping[str, JobRow]
    ) -> dict[str, StepResult]:
        """One list call for the claimed live batches of a provider (see engine.refresh)."""
        with guarded_by(self.worker):
            try:
                return await self.refresher.refresh(claimed, jobs)
            except LeaseLost as exc:  # the others are stepped one by one
                log.warning("%s", exc)
                return {}
            except Exception as exc:  # each batch is then stepped on its own
                await self.store.audit.record(
                    "step.failed",
                    worker=self.worker,
                    reason=f"list refresh: {type(exc).__name__}: {exc}"[:500],
                    data={"exception": type(exc).__name__, "message": str(exc)[:500]},
                )
                return {}

    async def step_claimed(
        self, batch: BatchRow, job: JobRow, done: StepResult | None = None
    ) -> None:
        """Step one claimed batch under its lease, then release it with its next check.

        The step runs in a task of its own that the heartbeat cancels if the lease is
        lost; every write it makes is lease-guarded (store.leases). Cancelled from
        outside (a stop past its grace period), the lease is released at once, due now,
        so another worker resumes the batch from its persisted state."""
        task = asyncio.ensure_future(self._guarded_step(batch, job, done))
        self.leases.attach(batch.id, task)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                await asyncio.shield(self._give_back(batch))
                raise
            log.warning("step of %s stopped: its lease was lost", batch.id)
        finally:
            self.leases.drop(batch.id)

    async def _give_back(self, batch: BatchRow) -> None:
        try:
            await self.store.batches.release(
                batch.id, worker=self.worker, next_check_at=self.clock.now()
            )
        except Exception as exc:  # the lease then runs out by itself
            log.warning("could not release %s: %r", batch.id, exc)

    async def _guarded_step(self, batch: BatchRow, job: JobRow, done: StepResult | None) -> None:
        with guarded_by(self.worker):
            try:
                await self._step_and_release(batch, job, done)
            except LeaseLost as exc:  # taken over: stop, write nothing more
                log.warning("%s", exc)

    async def _release_untouched(self, claimed: list[BatchRow]) -> None:
        for batch in claimed:
            await self.store.batches.release(
                batch.id, worker=self.worker, next_check_at=batch.next_check_at
            )

    async def _step_and_release(
        self, batch: BatchRow, job: JobRow, done: StepResult | None = None
    ) -> None:
        """Step one claimed batch and release it. Nothing one batch does stops the
        others: an unexpected error is recorded (`step.failed`, with the exception
        class and message) and that batch alone backs off."""
        provider: CountedProvider | None = None
        try:
            provider = CountedProvider(self.provider(job.provider))  # counts the step's calls
            result = done if done is not None else await self.step(batch, job, provider)
        except StaleTransition as exc:
            result = StepResult(0, str(exc))
        except VendorError as exc:
            await self.store.audit.record(
                "step.failed",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=self.worker,
                reason=f"{batch.state.value}: {exc.message}",
            )
            delay = self.backoff.delay(batch.check_attempt, self.rng, retry_after=exc.retry_after)
            result = StepResult(delay, "vendor error")
        except LeaseLost:
            raise  # taken over: stop here, write nothing more (see _guarded_step)
        except ProviderNotConfigured as exc:
            result = await self._back_off(
                batch,
                "step.skipped",
                f"{batch.state.value}: {exc}; skipped here (another process may run it)",
                exc,
            )
        except Exception as exc:  # one bad batch never stops the worker
            result = await self._back_off(
                batch, "step.failed", f"{batch.state.value}: {type(exc).__name__}: {exc}", exc
            )
        except BaseException:
            # Stopped mid-step (cancelled, interrupted, or an error we do not handle here):
            # every step is safe to resume after a crash, so give the lease back now (the
            # batch stays due) rather than leave it held until it expires.
            await asyncio.shield(self._release_untouched([batch]))
            raise
        after = await self.store.batches.get(batch.id)
        next_check_at = self._next_check(after, result, provider)
        self.leases.drop(batch.id)  # released next: the heartbeat must not call it lost
        await self.store.batches.release(
            batch.id,
            worker=self.worker,
            next_check_at=next_check_at,
            vendor_calls=provider.calls if provider is not None else 0,
        )

    async def _back_off(
        self, batch: BatchRow, kind: str, reason: str, exc: Exception
    ) -> StepResult:
        """One audit event, and the batch waits longer each time (10 s doubling to 5 min)."""
        current = await self.store.batches.get(batch.id)
        attempt = current.check_attempt + 1
        delay = self.backoff.delay(attempt, self.rng)
        await self.store.batches.update(batch.id, check_attempt=attempt)
        await self.store.audit.record(
            kind,
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"{reason}; next try in {delay:.0f} s"[:1000],
            data={
                "exception": type(exc).__name__,
                "message": str(exc)[:1000],
                "attempt": attempt,
                "next_check_in": round(delay, 3),
            },
        )
        return StepResult(delay, kind)

    def _at(self, delay: float) -> float:
        """The store time `delay` vendor seconds from now."""
        return self.clock.now() + delay / self.time_scale

    def _next_check(
        self, batch: BatchRow, result: StepResult, provider: Provider | None
    ) -> float | None:
        if batch.state == State.DONE:
            return None
        if batch.state not in LIVE_AT_VENDOR:
            delay = result.next_check_in
            return self._at(0.0 if delay is None else delay)
        delay = result.next_check_in
        if delay is None:  # just accepted: the first check of the batch's mode
            backoff = self.tracking.backoff_for(provider) if provider else self.tracking.poll
            delay = backoff.delay(batch.check_attempt, self.rng)
        # the tick grid is in vendor seconds, so checks still fall together when scaled
        return self.tracking.align(self._at(delay) * self.time_scale) / self.time_scale

    async def run_until_done(
        self,
        job_ref: str,
        *,
        on_progress: Callable[[JobStatus], Any] | None = None,
        idle_cap: float = 30.0,
        stop: asyncio.Event | None = None,
    ) -> JobStatus:
        """Drive one Job's batches until it is done (or waits for a manual retry), or
        until `stop` is set: then it returns after the step under way, no lease held."""
        job = await self.store.jobs.get(job_ref)
        status = await self.status(job.id)
        idle = 0
        while stop is None or not stop.is_set():
            due = await self.store.batches.next_due_at(job_id=job.id)
            # Claim only when something is due; otherwise just wait (a webhook or
            # another worker may make a batch due sooner, hence the idle cap).
            stepped = (
                await self.run_once(job_id=job.id, stop=stop)
                if due is not None and (due <= self.clock.now())
                else 0
            )
            # Re-read only when something moved (or now and then, in case another
            # worker moved it): the status query is most of an idle loop's cost.
            idle = 0 if stepped else idle + 1
            if stepped or idle % 10 == 0:
                status = await self.status(job.id)
            if on_progress is not None:
                on_progress(status)
            if status.state in ("done", "awaiting_retry"):
                return status
            if stepped:
                continue
            # Due but not claimed means another worker holds the lease (maybe a dead
            # one, until it expires): wait at least a second instead of spinning.
            floor = 1.0 / self.time_scale
            wait = idle_cap if due is None else min(idle_cap, max(floor, due - self.clock.now()))
            await self._sleep(wait, stop)
        return await self.status(job.id)

    async def _sleep(self, seconds: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await self.clock.sleep(seconds)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    async def cancel(self, job_ref: str) -> list[CancelReport]:
        """Cancel a Job: per batch, the cancel is recorded as intent and applied where
        it is safe (see engine/cancel.py); a vendor batch that already ended is
        refreshed and ingested, not an error. Returns what happened to each batch."""
        job = await self.store.jobs.get(job_ref)
        try:
            provider: Provider | None = self.provider(job.provider)
        except ProviderNotConfigured:
            provider = None
        reports = []
        for batch in await self.store.batches.for_job(job.id):
            counted = CountedProvider(provider) if provider is not None else None
            reports.append(await self.canceller.cancel(batch, counted))
            if counted is not None and counted.calls:
                await self.store.batches.add_vendor_calls(batch.id, counted.calls)
        await self.store.wake(job.id)
        return reports

    async def retry(
        self, job_ref: str, classes: Collection[FailureClass | str] = (FailureClass.RETRYABLE,)
    ) -> list[str]:
        """Start the retry children of a Job's waiting failures of `classes` (retryable
        ones when automatic retry is off; `account` ones, held after a credit or quota
        failure, once the account is fixed): one per done batch with failures waiting.
        Idempotent: a child whose key exists is not made again. Returns the ids of the
        children created now. An account failure is not the request's fault, so its
        retry is not bounded by max_attempts."""
        job = await self.store.jobs.get(job_ref)
        policy = JobOptions.load(job.options).retry
        wanted = [FailureClass(c).value for c in classes]
        created = []
        waiting = await self.store.ledger.awaiting_retry(job.id, wanted)
        uncapped: dict[str, list[int]] = {}
        if FailureClass.ACCOUNT.value in wanted:
            uncapped = await self.store.ledger.awaiting_retry(job.id, [FailureClass.ACCOUNT])
        for parent_id, seqs in waiting.items():
            parent = await self.store.batches.get(parent_id)
            if parent.attempt >= policy.max_attempts:
                seqs = uncapped.get(parent_id, [])
            if not seqs:
                continue
            child = retry_child(job, parent, len(seqs), seqs)
            vendor = self.provider(job.provider).name
            bodies = self.store.costs.bodies(job.id, seqs)
            if not await self.budget.admit_retry(  # retries count against the same budget
                job, parent, child.key, len(seqs), bodies, None, vendor=vendor, worker=self.worker
            ):
                continue
            child_id = await self.store.ledger.add_child(parent, child, worker=self.worker)
            if child_id is not None:
                created.append(child_id)
        if created:
            await self.store.wake(job.id)
        return created
