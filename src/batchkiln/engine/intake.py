"""A request file becomes a Job: read once, stored as it is validated.

One pass (`intake.RequestPass`) checks, normalises, fingerprints, plans and estimates
each request, and a draft (`store/drafts.py`) commits it, where no reader looks yet,
while the next ones are read. At the end of the file the Job's key, batches and
estimate are known: the key is looked up, the budget checked, and the Job published in
one transaction. Anything else deletes what the draft wrote, so a Job is published whole
or not at all (a crash leaves rows that nothing shows, swept later):

- a bad line stops the pass (and a custom_id seen twice stops the store's unique
  index); the file is then read again by `validate_file`, which reports every bad line
  with its reason, and nothing is stored;
- the key already names a Job: that Job is returned (KeyConflict if its content
  differs); a user key found before reading is checked by a validating read alone,
  so a resubmission stores nothing;
- a budget refusal is audited once the draft is left (on SQLite the audit's own write
  would wait on the draft's transaction).

With a global budget the admission lock is held around the whole draft: the check and
the commit of what it admits must be one step, and taking the lock before the store's
write lock (SQLite) keeps the two in one order for every submitter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from batchkiln.costs import FileEstimator
from batchkiln.costs.budget import Refusal
from batchkiln.engine.budget import BudgetGuard, job_estimate
from batchkiln.engine.policy import JobOptions
from batchkiln.errors import BudgetExceeded, FileChanged, InputError
from batchkiln.intake import (
    InputRequest,
    InputSummary,
    RequestPass,
    batch_tag,
    derive_batch_key,
    job_key,
    validate_file,
)
from batchkiln.intake.keys import check_user_key
from batchkiln.store import JobRow, NewBatch, Store
from batchkiln.store.drafts import KeyTaken, RowsRefused


class _Found(Exception):
    def __init__(self, job: JobRow) -> None:
        self.job = job


class _Refused(Exception):
    def __init__(self, refusal: Refusal, key: str) -> None:
        self.refusal = refusal
        self.key = key


def new_batches(jkey: str, summary: InputSummary) -> list[NewBatch]:
    """The first batch of every shard of the plan, with its derived key and tag."""
    planned = []
    for shard in summary.shards:
        bkey = derive_batch_key(jkey, shard.index, 1)
        planned.append(
            NewBatch(
                key=bkey,
                tag=batch_tag(bkey),
                shard=shard.index,
                start=shard.start,
                stop=shard.stop,
                wire_bytes=shard.wire_bytes,
            )
        )
    return planned


class Intake:
    def __init__(self, store: Store, budget: BudgetGuard, worker: str) -> None:
        self.store = store
        self.budget = budget
        self.worker = worker

    async def submit(
        self,
        path: str | Path,
        *,
        provider: str,
        wire: str,
        model: str | None,
        endpoint: str | None,
        key: str | None,
        options: JobOptions,
    ) -> tuple[JobRow, bool]:
        """The Job for this file (created=True) or the one its key already names."""
        if key is not None:
            check_user_key(key)  # a bad key stops before the file is read
            if await self.store.jobs.key_taken(key):
                found = await self._resubmitted(path, wire, model, endpoint, key)
                if found is not None:
                    return found, False
        reading = RequestPass(path, provider=wire, model=model, endpoint=endpoint)  # type: ignore[arg-type]
        estimator = FileEstimator(wire)
        try:
            async with self.budget.admission():
                return await self._draft(path, provider, reading, estimator, key, options), True
        except (InputError, RowsRefused) as stopped:
            # every bad line, with its reason (InputError), from a validating read
            validate_file(path, provider=wire, model=model, endpoint=endpoint)  # type: ignore[arg-type]
            if isinstance(stopped, InputError):  # the line it stopped at is valid now
                first = stopped.errors[0]
                raise FileChanged(str(path), first.line, first.reason + ", then valid") from None
            raise
        except _Found as found:
            return found.job, False
        except _Refused as refused:
            await self.budget.refuse(refused.refusal, key=refused.key, worker=self.worker)
            raise BudgetExceeded(refused.refusal) from None

    async def _draft(
        self,
        path: str | Path,
        provider: str,
        reading: RequestPass,
        estimator: FileEstimator,
        key: str | None,
        options: JobOptions,
    ) -> JobRow:
        draft_of = self.store.jobs.draft(
            provider=provider, source=str(path), options=options.model_dump(), worker=self.worker
        )
        try:
            async with draft_of as draft:
                await draft.write_requests(_estimated(reading, estimator))
                summary = reading.summary()
                total, parts = estimator.finish()
                jkey = job_key(key, summary.fingerprint)
                existing = await self.store.jobs.existing(
                    jkey, summary.fingerprint, conn=draft.connection
                )
                if existing is not None:
                    raise _Found(existing)  # rolls the draft back
                refusal = await self.budget.refusal_for_new(total, options, conn=draft.connection)
                if refusal is not None:
                    raise _Refused(refusal, jkey)
                planned = new_batches(jkey, summary)
                await draft.finish(
                    key=jkey,
                    fingerprint=summary.fingerprint,
                    model=summary.model,
                    endpoint=summary.endpoint,
                    request_count=summary.count,
                    new_batches=planned,
                    estimate=job_estimate(total, parts, [b.key for b in planned]),
                )
        except KeyTaken:
            # lost the race for the key: the winner's Job is committed by now
            existing = await self.store.jobs.existing(jkey, summary.fingerprint)
            if existing is None:
                raise
            raise _Found(existing) from None
        return await self.store.jobs.get(draft.job_id)

    async def _resubmitted(
        self, path: str | Path, wire: str, model: str | None, endpoint: str | None, key: str
    ) -> JobRow | None:
        """The Job `key` names, if the file is its content (KeyConflict if not), found
        by a validating read that stores nothing; None if the key has gone meanwhile."""
        summary = validate_file(path, provider=wire, model=model, endpoint=endpoint)  # type: ignore[arg-type]
        return await self.store.jobs.existing(key, summary.fingerprint)


def _estimated(reading: RequestPass, estimator: FileEstimator) -> Iterator[InputRequest]:
    """The pass's requests, each added to the estimate of its shard on the way."""
    for request in reading:
        estimator(request.shard, request.body, reading.model, reading.endpoint)  # type: ignore[arg-type]
        yield request
