"""Download, join and close: the end of a batch's life, and the retry child.

Results are streamed and stored as they arrive, joined by custom_id (our wire
id `<tag>-<seq>`, mapped back to the user's id through the ledger), never by
position. Storing is idempotent (one row per batch and request), so a crash
mid-download followed by a restart gives the same rows. A foreign or duplicate
id is reported in the audit log and ignored; a request with no result line gets
an explicit outcome. Closing applies every outcome, the retry child, the cost
and the key archive in one transaction (see store.ledger).

A batch adopted without proof (`provisional`) is first checked: the first result
line whose id we can read must carry our tag. If it does, the batch is ours
(proven); if not, it is disowned: back to submitting with its vendor id
forgotten and remembered as foreign, nothing ingested, no attempt used.

A cancel recorded on the batch (`cancel_requested_at`) stops retries: what
would have gone to a retry child ends `cancelled`. A batch the vendor failed
for a transient reason (OpenAI `token_limit_exceeded`) sends all its requests to
a child that waits for capacity, without using up their attempts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from batchkiln.clock import Clock
from batchkiln.costs import batch_cost
from batchkiln.engine.budget import BudgetGuard
from batchkiln.engine.capacity import MAX_TRANSIENT_REJECTIONS, EnqueuedTokens, transient_code
from batchkiln.engine.hygiene import delete_vendor_files
from batchkiln.engine.policy import JobOptions
from batchkiln.engine.step import StepResult
from batchkiln.intake import batch_tag, derive_batch_key
from batchkiln.intake.keys import parse_wire_id
from batchkiln.lifecycle import ENDED_AT_VENDOR, Event, State
from batchkiln.providers.base import FailureClass, Outcome, Provider, ResultLine, VendorBatch
from batchkiln.store import (
    BatchRow,
    ChildBatch,
    Closing,
    JobRow,
    Store,
    StoredResult,
)

_FLUSH = 1000


class Ingestor:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker: str,
        budget: BudgetGuard,
        *,
        capacity: EnqueuedTokens | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.budget = budget
        self.capacity = capacity

    async def ingest(
        self,
        job: JobRow,
        batch: BatchRow,
        provider: Provider,
        vendor: VendorBatch | None = None,
    ) -> StepResult:
        """Download, join and close an ended batch. `vendor` is an ended snapshot the
        caller already holds; without one, the batch is retrieved once, and that one
        snapshot serves the download and the file clean-up."""
        if batch.state in ENDED_AT_VENDOR:
            ended_as = batch.state
            batch = await self.store.batches.transition(
                batch,
                batch.state,
                Event.DOWNLOAD,
                worker=self.worker,
                reason=f"downloading results of a {batch.state.value} batch",
            )
        else:
            ended_as = await self._ended_as(batch)
        if batch.provisional and batch.vendor_id is not None:
            if vendor is None or vendor.state not in ENDED_AT_VENDOR:
                vendor = await provider.retrieve(batch.vendor_id)  # the one retrieve
            if not await self._ours(batch, provider, vendor):
                return await self._disown(batch)
            await self.store.batches.prove_ownership(batch.id)
            await self.store.audit.record(
                "submit.proven",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=self.worker,
                reason=f"the results of {batch.vendor_id} carry our tag: the batch is ours",
            )
            batch = await self.store.batches.get(batch.id)
        carried = {seq for seq, _ in await self.store.ledger.requests_of(batch.id)}
        if batch.vendor_id is not None:
            if vendor is None or vendor.state not in ENDED_AT_VENDOR:
                vendor = await provider.retrieve(batch.vendor_id)  # the one retrieve
            if vendor.errors:  # a failed batch's reasons are kept, whatever the line shapes
                errors = [
                    {"code": e.code, "message": e.message, "line": e.line} for e in vendor.errors
                ]
                await self.store.batches.update(
                    batch.id,
                    error={
                        "code": errors[0]["code"],
                        "message": errors[0]["message"],
                        "errors": errors,
                    },
                )
                batch = await self.store.batches.get(batch.id)
                if self.capacity is not None and transient_code(batch.error):
                    await self.capacity.learn(job, batch, str(errors[0]["message"]))
            stats = await self._download(batch, provider.results(vendor), carried)
        else:
            vendor = None
            stats = {"lines": 0, "foreign": 0, "duplicate": 0}
        stored = await self.store.ledger.results_of(batch.id)
        closing = await self._plan(job, batch, ended_as, carried, stored, provider.name)
        closing.summary.update(stats)
        child_id = await self.store.ledger.close_batch(batch, closing, worker=self.worker)
        await delete_vendor_files(self.store, provider, job, batch, vendor, worker=self.worker)
        return StepResult(None, "done" + (f"; retry batch {child_id}" if child_id else ""))

    async def _ours(self, batch: BatchRow, provider: Provider, vendor: VendorBatch) -> bool:
        """Whether the results of a provisionally adopted batch carry our tag (the
        first line with a readable id decides; no readable line proves nothing)."""
        stream = provider.results(vendor)
        try:
            async for line in stream:
                parsed = parse_wire_id(line.wire_id)
                if parsed is not None:
                    return parsed[0] == batch.tag
                if line.wire_id:
                    return False  # an id that is not in our shape at all
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return False

    async def _disown(self, batch: BatchRow) -> StepResult:
        """A provisional adoption turned out to be someone else's batch: forget it,
        remember it as foreign, and go back to submitting on our own key."""
        foreign = [*(batch.foreign_vendor_ids or []), str(batch.vendor_id)]
        await self.store.batches.transition(
            batch,
            State.DOWNLOADING,
            Event.DISOWNED,
            worker=self.worker,
            reason=f"vendor batch {batch.vendor_id} is not ours (its results carry another"
            " tag); never cancelled or deleted by us; reconcile, then send ours",
            values={
                "vendor_id": None,
                "vendor_status": None,
                "vendor_total": None,
                "vendor_succeeded": None,
                "vendor_failed": None,
                "vendor_created_at": None,
                "vendor_ended_at": None,
                "detected_at": None,
                "error": None,
                "provisional": 0,
                "foreign_vendor_ids": foreign,
                "check_attempt": 0,
            },
            data={"foreign_vendor_id": batch.vendor_id},
        )
        return StepResult(0, f"disowned {batch.vendor_id}")

    async def _ended_as(self, batch: BatchRow) -> State:
        """The vendor outcome a batch had before it entered downloading (from the audit log)."""
        for event in reversed(await self.store.audit.for_job(batch.job_id)):
            if (
                event.batch_id == batch.id
                and event.to_state == State.DOWNLOADING.value
                and event.from_state is not None
            ):
                return State(event.from_state)
        raise RuntimeError(f"batch {batch.id} entered downloading without an audit event")

    async def _download(self, batch: BatchRow, lines: Any, carried: set[int]) -> dict[str, int]:
        seen: set[int] = set()
        rows: list[dict[str, Any]] = []
        stats: Counter[str] = Counter()
        async for line in lines:
            stats["lines"] += 1
            parsed = parse_wire_id(line.wire_id)
            if parsed is None or parsed[0] != batch.tag or parsed[1] not in carried:
                stats["foreign"] += 1
                await self._report(batch, "results.foreign", line, "not a request of this batch")
                continue
            seq = parsed[1]
            if seq in seen:
                stats["duplicate"] += 1
                await self._report(batch, "results.duplicate", line, "second result for one id")
                continue
            seen.add(seq)
            rows.append(_result_row(batch, seq, line))
            if len(rows) >= _FLUSH:
                await self.store.ledger.store_results(rows)
                rows = []
        await self.store.ledger.store_results(rows)
        return dict(stats)

    async def _report(self, batch: BatchRow, kind: str, line: ResultLine, why: str) -> None:
        await self.store.audit.record(
            kind,
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"{why}: custom_id {line.wire_id!r}",
        )

    async def _plan(
        self,
        job: JobRow,
        batch: BatchRow,
        ended_as: State,
        carried: set[int],
        stored: list[StoredResult],
        vendor: str,
    ) -> Closing:
        policy = JobOptions.load(job.options).retry
        batch = await self.store.batches.get(batch.id)  # a cancel may have come meanwhile
        by_seq = {r.seq: r for r in stored}
        outcomes: dict[int, str] = {}
        errors: dict[int, dict[str, Any]] = {}
        retry: list[int] = []
        # Transient vendor rejections (enqueued-token limit) in the lineage used up none
        # of the requests' attempts: they never ran.
        free = await self._transient_ancestors(batch)
        spent = batch.attempt - free
        transient = ended_as == State.FAILED and transient_code(batch.error) is not None
        can_retry = policy.auto_retry and spent < policy.max_attempts
        stopped = ended_as == State.CANCELLED or batch.cancel_requested_at is not None
        for seq in sorted(carried):
            result = by_seq.get(seq)
            if result is not None and result.outcome == Outcome.SUCCEEDED:
                outcomes[seq] = "succeeded"
                continue
            error, retryable = _failure(result, ended_as, batch, policy)
            errors[seq] = error
            if transient and result is None:
                if stopped:
                    outcomes[seq] = "cancelled"
                elif free < MAX_TRANSIENT_REJECTIONS:
                    retry.append(seq)  # goes again once capacity frees; no attempt used
                else:
                    outcomes[seq] = "exhausted"
            elif result is not None and result.failure == FailureClass.ACCOUNT and not stopped:
                continue  # held, no final outcome: `kiln retry --class account` after a top-up
            elif stopped and (result is None or result.outcome == Outcome.CANCELLED):
                outcomes[seq] = "cancelled"
            elif not retryable:
                outcomes[seq] = "failed"
            elif stopped:
                outcomes[seq] = "cancelled"  # no retry path out of a cancelled batch
            elif can_retry:
                retry.append(seq)
            elif policy.auto_retry or spent >= policy.max_attempts:
                outcomes[seq] = "exhausted"
            # else: auto retry is off; the request waits for `kiln retry`
        usage = await self.store.ledger.usage_of(batch.id)
        cost = batch_cost(vendor, job.model, usage)
        child = retry_child(job, batch, retry) if retry else None
        if child and not await self.budget.admit_retry(
            job, batch, child.key, retry, cost["cost_usd"], vendor=vendor, worker=self.worker
        ):
            retry, child = [], None  # over budget (audited): the requests wait
        counts = Counter(outcomes.values())
        summary: dict[str, Any] = {
            "ended_as": ended_as.value,
            "requests": len(carried),
            **counts,
            "retrying": len(retry),
            "billed_requests": usage["billed_requests"],
        }
        return Closing(
            outcomes=outcomes,
            errors=errors,
            child=child,
            cost={
                "batch_id": batch.id,
                "job_id": job.id,
                "provider": vendor,
                "model": job.model,
                **usage,
                **cost,
            },
            summary=summary,
        )

    async def _transient_ancestors(self, batch: BatchRow) -> int:
        """How many batches above this one the vendor rejected transiently."""
        count = 0
        parent_id = batch.parent_id
        while parent_id is not None:
            parent = await self.store.batches.get(parent_id)
            if parent.state == State.DONE and transient_code(parent.error):
                count += 1
            parent_id = parent.parent_id
        return count


def retry_child(job: JobRow, parent: BatchRow, seqs: list[int]) -> ChildBatch:
    """The child batch that retries `seqs` of `parent`: next attempt, derived key."""
    key = derive_batch_key(job.key, parent.shard, parent.attempt + 1)
    share = parent.wire_bytes * len(seqs) // max(1, parent.request_count)
    return ChildBatch(
        key=key, tag=batch_tag(key), attempt=parent.attempt + 1, seqs=seqs, wire_bytes=share
    )


def _failure(
    result: StoredResult | None, ended_as: State, batch: BatchRow, policy: Any
) -> tuple[dict[str, Any], bool]:
    """The error to record for a request that did not succeed, and whether it may retry."""
    if ended_as == State.FAILED and result is None:
        error = batch.error if isinstance(batch.error, dict) else {}
        return {
            "code": error.get("code") or "batch_failed",
            "message": error.get("message") or "the vendor failed the batch",
        }, False
    if result is None:
        return {"code": "no_result", "message": "the vendor returned no result line"}, (
            policy.retry_missing
        )
    error = {
        "code": result.error_code or result.outcome,
        "message": result.error_message,
        "outcome": result.outcome,
    }
    if result.outcome == Outcome.EXPIRED:
        return error, policy.retry_expired
    if result.outcome == Outcome.CANCELLED:
        return error, ended_as != State.CANCELLED
    return error, policy.retry_errors and result.failure == FailureClass.RETRYABLE


def _result_row(batch: BatchRow, seq: int, line: ResultLine) -> dict[str, Any]:
    error = line.error or {}
    return {
        "batch_id": batch.id,
        "seq": seq,
        "job_id": batch.job_id,
        "outcome": line.outcome.value,
        "failure": line.failure.value if line.failure else None,
        "error_code": str(error.get("code") or error.get("type") or "") or None,
        "error_message": error.get("message"),
        "input_tokens": line.usage.input_tokens,
        "cached_input_tokens": line.usage.cached_input_tokens,
        "output_tokens": line.usage.output_tokens,
        "cache_write_5m_tokens": line.usage.cache_write_5m_tokens,
        "cache_write_1h_tokens": line.usage.cache_write_1h_tokens,
        "billed": 1 if line.billed else 0,
        "raw": line.raw,
    }
