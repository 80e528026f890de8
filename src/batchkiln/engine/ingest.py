"""Download, join and close: the end of a batch's life, and the retry child.

Results are streamed and stored as they arrive, joined by custom_id (our wire
id `<tag>-<seq>`, mapped back to the user's id through the ledger), never by
position. Storing is idempotent (one row per batch and request), so a crash
mid-download followed by a restart gives the same rows. A foreign or duplicate
id is reported in the audit log and ignored; a request with no result line gets
an explicit outcome. Closing applies every outcome, the retry child, the cost
and the key archive in one transaction (see store.ledger); on PostgreSQL that
transaction is opened with the download, and the succeeded outcomes go into it
chunk by chunk, invisible until it commits (see store.staging).

Memory does not grow with the batch: result rows go to the store a chunk at a
time, the carried and seen seqs are bitmaps (one bit a request), and the plan is
a decision per *shape* of result (`OutcomeRules`) that the store applies with
set-based statements, so no per-request outcome is held in Python.

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

import asyncio
from collections import Counter
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
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
    OutcomeRules,
    Store,
)
from batchkiln.store.ledger import (
    FINAL_OUTCOMES,
    MISSING,
    RETRY,
    WAIT,
    ResultShape,
    ResultTally,
)
from batchkiln.store.staging import Stage

_FLUSH = 2000  # result rows a transaction (~4 MB of 2 KB lines)
_YIELD_EVERY = 128  # lines parsed between two turns given to the chunk being written
SHAPES: list[ResultShape] = [MISSING] + [
    (o.value, f) for o in Outcome for f in (None, *(c.value for c in FailureClass))
]


class SeqSet:
    """A set of sequence numbers as a bitmap from the first one added: a batch's
    seqs lie within one shard, so this is at most a few KB (one bit a request)."""

    def __init__(self) -> None:
        self._base: int | None = None
        self._bits = bytearray()

    def add(self, seq: int) -> None:
        if self._base is None:
            self._base = seq
        offset = seq - self._base
        if offset < 0:  # below the first one added: shift the bitmap down
            shift = (-offset + 7) // 8
            self._bits[:0] = bytes(shift)
            self._base -= shift * 8
            offset = seq - self._base
        index = offset >> 3
        if index >= len(self._bits):
            self._bits.extend(bytes(index - len(self._bits) + 1))
        self._bits[index] |= 1 << (offset & 7)

    @classmethod
    def span(cls, low: int, high: int) -> SeqSet:
        """Every seq from `low` to `high` (none if high < low), without adding each."""
        made = cls()
        n = high - low + 1
        if n > 0:
            made._base = low
            made._bits = bytearray(b"\xff" * (n >> 3))
            if n & 7:
                made._bits.append((1 << (n & 7)) - 1)
        return made

    def __contains__(self, seq: object) -> bool:
        if self._base is None or not isinstance(seq, int):
            return False
        offset = seq - self._base
        index = offset >> 3
        if offset < 0 or index >= len(self._bits):
            return False
        return bool(self._bits[index] >> (offset & 7) & 1)

    def copy(self) -> SeqSet:
        twin = SeqSet()
        twin._base, twin._bits = self._base, bytearray(self._bits)
        return twin

    def take(self, seq: int) -> bool:
        """Remove `seq`; whether it was there (one call on the ingest's hot path)."""
        if self._base is None:
            return False
        offset = seq - self._base
        index = offset >> 3
        if offset < 0 or index >= len(self._bits):
            return False
        bit = 1 << (offset & 7)
        if not self._bits[index] & bit:
            return False
        self._bits[index] ^= bit
        return True


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
        low, high, carried_count = await self.store.ledger.seq_span(batch.id)
        if high - low + 1 == carried_count:  # no gap (a shard's first batch): none to read
            carried = SeqSet.span(low, high)
        else:  # a retry child carries scattered seqs: read them (100,000: ~0.3 s)
            carried = SeqSet()
            async for seqs in self.store.ledger.seqs_of(batch.id):
                for seq in seqs:
                    carried.add(seq)
        # the closing transaction, opened now: see store.staging
        async with self.store.ledger.stage(batch) as stage:
            if batch.vendor_id is not None:
                if vendor is None or vendor.state not in ENDED_AT_VENDOR:
                    vendor = await provider.retrieve(batch.vendor_id)  # the one retrieve
                if vendor.errors:  # a failed batch's reasons are kept, whatever the line shapes
                    errors = [
                        {"code": e.code, "message": e.message, "line": e.line}
                        for e in vendor.errors
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
                counted = ResultTally(carried_count)
                lines = provider.results(vendor)
                stats = await self._download(batch, lines, carried, counted, stage)
                tally: ResultTally | None = counted
            else:
                vendor, tally = None, None
                stats = {"lines": 0, "foreign": 0, "duplicate": 0}
            closing = await self._plan(job, batch, ended_as, provider.name, tally)
            closing.summary.update(stats)
            child_id = await self.store.ledger.close_batch(
                batch, closing, worker=self.worker, stage=stage
            )
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

    async def _download(
        self,
        batch: BatchRow,
        lines: AsyncIterable[ResultLine],
        carried: SeqSet,
        tally: ResultTally,
        stage: Stage,
    ) -> dict[str, int]:
        """Store every line of this batch, a chunk a transaction, counting each row
        into `tally`, and giving the succeeded ones their outcome in `stage` (the
        closing transaction, uncommitted). At most two chunks are held: one is written
        while the next is parsed (below)."""
        waiting = carried.copy()  # carried seqs with no line yet: a bit each
        # One chunk is written while the next is parsed, on both stores: PostgreSQL works
        # in its own process, and SQLite's one statement a chunk (`store_results`) runs
        # with the GIL released in the driver's thread. A task only runs when this loop
        # yields, and a source read from memory or a fast socket may never, so the chunk
        # being written gets a turn every few lines (each of its driver calls needs one).
        # SQLite packs a chunk into one blob, which its driver copies once more to bind
        # it; the rows are let go once packed (`consume`), or a 2,000-row chunk would be
        # held three times (50,000 lines peaked at 29 MB). Every chunk costs the driver's
        # thread a few waits for the GIL beside this loop: 2,000 rows streamed 50,000
        # lines in 1.54 s, 1,000 in 1.93 s (16 KB pages).
        rows: list[tuple[Any, ...]] = []
        ok: list[int] = []  # the seqs in `rows` whose result succeeded
        stats: Counter[str] = Counter()
        count = 0
        writing: asyncio.Task[None] | None = None
        try:
            async for line in lines:
                count += 1
                if writing is not None and not count % _YIELD_EVERY:
                    await asyncio.sleep(0)  # a turn for the chunk being written
                parsed = parse_wire_id(line.wire_id)
                if parsed is None or parsed[0] != batch.tag or not waiting.take(parsed[1]):
                    if parsed is not None and parsed[0] == batch.tag and parsed[1] in carried:
                        stats["duplicate"] += 1
                        why = "second result for one id"
                        await self._report(batch, "results.duplicate", line, why)
                    else:
                        stats["foreign"] += 1
                        why = "not a request of this batch"
                        await self._report(batch, "results.foreign", line, why)
                    continue
                seq = parsed[1]
                row = _result_row(batch, seq, line)
                tally.add(row)
                rows.append(row)
                if line.outcome is Outcome.SUCCEEDED:
                    ok.append(seq)
                if len(rows) >= _FLUSH:
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self._write(rows, ok, stage))
                    rows, ok = [], []
            if writing is not None:
                await writing
            await self._write(rows, ok, stage)
            stats["lines"] = count
        finally:
            if writing is not None:
                # if the stream failed, let the chunk in flight finish (it is idempotent)
                # rather than leave a write running behind the caller
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved: the error raised is the first one
        return dict(stats)

    async def _write(self, rows: list[tuple[Any, ...]], ok: list[int], stage: Stage) -> None:
        """One chunk: its result rows in a transaction of their own and, at the same
        time on another connection, its succeeded requests' outcome in the closing
        transaction (uncommitted until the close). Both are waited for, and then the
        first error is raised: nothing is left running behind the caller."""
        done = await asyncio.gather(
            self.store.ledger.store_results(rows, consume=True),
            stage.succeeded(ok),
            return_exceptions=True,
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome

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
        vendor: str,
        tally: ResultTally | None = None,
    ) -> Closing:
        policy = JobOptions.load(job.options).retry
        batch = await self.store.batches.get(batch.id)  # a cancel may have come meanwhile
        # Transient vendor rejections (enqueued-token limit) in the lineage used up none
        # of the requests' attempts: they never ran.
        free = await self._transient_ancestors(batch)
        spent = batch.attempt - free
        can_retry = policy.auto_retry and spent < policy.max_attempts
        why = _Why(
            ended_as=ended_as,
            spent=spent,
            free=free,
            can_retry=can_retry,
            stopped=ended_as == State.CANCELLED or batch.cancel_requested_at is not None,
            transient=ended_as == State.FAILED and transient_code(batch.error) is not None,
        )
        decisions = {s: _decide(s, why, policy) for s in SHAPES}
        shapes, usage = await self.store.ledger.summarize(batch, tally)
        rules = OutcomeRules(decisions, _missing_error(ended_as, batch), shapes)
        counts: Counter[str] = Counter()
        for shape, n in shapes.items():
            counts[decisions.get(shape, WAIT)] += n
        carried = sum(counts.values())
        retrying = counts.pop(RETRY, 0)
        cost = batch_cost(vendor, job.model, usage)
        child = retry_child(job, batch, retrying) if retrying else None
        if child and not await self.budget.admit_retry(
            job,
            batch,
            child.key,
            retrying,
            self.store.ledger.bodies_to_retry(batch, rules),
            cost["cost_usd"],
            vendor=vendor,
            worker=self.worker,
        ):
            retrying, child = 0, None  # over budget (audited): the requests wait
        summary: dict[str, Any] = {
            "ended_as": ended_as.value,
            "requests": carried,
            **{k: counts[k] for k in FINAL_OUTCOMES if counts[k]},
            "retrying": retrying,
            "billed_requests": usage["billed_requests"],
        }
        return Closing(
            rules=rules,
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


def retry_child(
    job: JobRow, parent: BatchRow, requests: int, seqs: Sequence[int] | None = None
) -> ChildBatch:
    """The child batch that retries `requests` requests of `parent`: next attempt,
    derived key. `seqs` names them (a manual retry); without it, they are the ones
    the closing's rules send to RETRY."""
    key = derive_batch_key(job.key, parent.shard, parent.attempt + 1)
    share = parent.wire_bytes * requests // max(1, parent.request_count)
    return ChildBatch(
        key=key,
        tag=batch_tag(key),
        attempt=parent.attempt + 1,
        requests=requests,
        wire_bytes=share,
        seqs=seqs,
    )


@dataclass(frozen=True)
class _Why:
    """What a closing batch's decisions depend on besides a result's shape."""

    ended_as: State
    spent: int  # attempts used up (transient vendor rejections use none)
    free: int  # transient vendor rejections in the lineage
    can_retry: bool
    stopped: bool  # the batch was cancelled, or a cancel was requested for it
    transient: bool  # the vendor rejected the batch for a transient reason


def _decide(shape: ResultShape, why: _Why, policy: Any) -> str:
    """What a request whose stored result has `shape` becomes (see store.ledger)."""
    outcome, failure = shape
    if outcome == Outcome.SUCCEEDED:
        return "succeeded"
    if why.transient and outcome is None:  # never ran: goes again once capacity frees
        if why.stopped:
            return "cancelled"
        return RETRY if why.free < MAX_TRANSIENT_REJECTIONS else "exhausted"
    if outcome is not None and failure == FailureClass.ACCOUNT and not why.stopped:
        return WAIT  # held, no final outcome: `kiln retry --class account` after a top-up
    retryable = _retryable(shape, why.ended_as, policy)
    if why.stopped and outcome in (None, Outcome.CANCELLED) and why.ended_as != State.FAILED:
        return "cancelled"  # (a batch the vendor failed as a whole stays failed)
    if not retryable:
        return "failed"
    if why.stopped:
        return "cancelled"  # no retry path out of a cancelled batch (or a cancel's intent)
    if why.can_retry:
        return RETRY
    if policy.auto_retry or why.spent >= policy.max_attempts:
        return "exhausted"
    return WAIT  # auto retry is off; the request waits for `kiln retry`


def _missing_error(ended_as: State, batch: BatchRow) -> dict[str, Any]:
    """The error recorded for a request with no result line."""
    if ended_as == State.FAILED:
        error = batch.error if isinstance(batch.error, dict) else {}
        return {
            "code": error.get("code") or "batch_failed",
            "message": error.get("message") or "the vendor failed the batch",
        }
    return {"code": "no_result", "message": "the vendor returned no result line"}


def _retryable(shape: ResultShape, ended_as: State, policy: Any) -> bool:
    """Whether a request that did not succeed may go to a retry child."""
    outcome, failure = shape
    if outcome is None:
        return ended_as != State.FAILED and bool(policy.retry_missing)
    if outcome == Outcome.EXPIRED:
        return bool(policy.retry_expired)
    if outcome == Outcome.CANCELLED:
        return ended_as != State.CANCELLED
    return bool(policy.retry_errors) and failure == FailureClass.RETRYABLE


def _result_row(batch: BatchRow, seq: int, line: ResultLine) -> tuple[Any, ...]:
    """A results row in store.ledger.RESULT_COLUMNS order."""
    error = line.error or {}
    usage = line.usage
    return (
        batch.id,
        seq,
        batch.job_id,
        line.outcome.value,
        line.failure.value if line.failure else None,
        str(error.get("code") or error.get("type") or "") or None,
        error.get("message"),
        usage.input_tokens,
        usage.cached_input_tokens,
        usage.output_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        1 if line.billed else 0,
        line.raw,
    )
