"""Enqueued-token admission: hold a batch (still not_submitted) while the vendor's
per-model cap on the input tokens of unfinished batches would refuse it.

OpenAI fails a batch as a whole with `token_limit_exceeded` ("Enqueued token limit
reached for gpt-4o-mini ... Limit: 2,000,000 enqueued tokens. ... try again once
some in_progress batches have been completed"; spec §1.9). That rejection is
transient: its requests go again as a child batch once capacity frees, and it
uses up none of their attempts. To avoid the rejection in the first place we
count the estimated input tokens of our in-flight batches per provider and
model and hold a new batch while they plus its own would pass the limit. The
limit is configured per model (KILN_ENQUEUED_TOKEN_LIMITS) and learned downward
from the vendor's rejections (the number in its message, else what we had in
flight when it refused). A batch alone is never held: with nothing of ours in
flight, waiting cannot help.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from batchkiln.providers.base import FailureClass
from batchkiln.store import BatchRow, JobRow, Store

# Which batch-level rejections are transient is decided in providers/failures.py
# (`classify_batch_errors`); this module is the engine's side of it.
HOLD_SECONDS = 60.0  # how often a held batch looks for capacity again (vendor seconds)
MAX_TRANSIENT_REJECTIONS = 10  # then the requests end `exhausted`, not another child
WAITING = "waiting for enqueued-token capacity"

_LIMIT = re.compile(r"Limit:\s*([\d,_]+)")


def transient_code(error: object) -> str | None:
    """The transient rejection code of a batch's recorded error, if the vendor's
    rejection is transient (every reason it gave is: `classify_batch_errors`)."""
    # imported here: failures.py loads the vendor SDKs, which the engine otherwise
    # leaves to the first vendor call
    from batchkiln.providers.failures import classify_batch_errors

    if not isinstance(error, Mapping):
        return None
    listed = [e.get("code") for e in error.get("errors") or [] if isinstance(e, Mapping)]
    codes = [str(c) for c in (listed or [error.get("code")]) if c]
    if codes and classify_batch_errors(codes) == FailureClass.RETRYABLE:
        return codes[0]
    return None


def limit_in_message(message: str) -> int | None:
    """The limit a vendor states in its rejection ("Limit: 2,000,000 enqueued tokens")."""
    found = _LIMIT.search(message)
    if found is None:
        return None
    digits = found.group(1).replace(",", "").replace("_", "")
    return int(digits) if digits else None


class EnqueuedTokens:
    def __init__(self, store: Store, worker: str, limits: Mapping[str, int] | None = None) -> None:
        self.store = store
        self.worker = worker
        self.configured = dict(limits or {})  # model -> tokens

    async def limit_for(self, provider: str, model: str) -> int | None:
        configured = self.configured.get(model)
        learned = await self.store.capacity.learned(provider, model)
        known = [v for v in (configured, learned) if v is not None]
        return min(known) if known else None

    async def hold_reason(self, job: JobRow, batch: BatchRow) -> str | None:
        """Why `batch` must wait before its create, or None when it may go now."""
        limit = await self.limit_for(job.provider, job.model)
        if limit is None:
            return None
        in_flight = await self.store.capacity.enqueued(job.provider, job.model, excluding=batch.id)
        mine = await self.store.capacity.batch_tokens(batch.key)
        if in_flight == 0 or in_flight + mine <= limit:
            return None
        return (
            f"{WAITING}: {in_flight:,} tokens of {job.model} in flight + {mine:,}"
            f" would pass the limit of {limit:,}"
        )

    async def learn(self, job: JobRow, batch: BatchRow, message: str) -> int:
        """Lower the known limit after the vendor refused `batch` for enqueued tokens."""
        stated = limit_in_message(message)
        if stated is None:
            in_flight = await self.store.capacity.enqueued(
                job.provider, job.model, excluding=batch.id
            )
            stated = max(1, in_flight + await self.store.capacity.batch_tokens(batch.key) - 1)
        limit = await self.store.capacity.lower(
            job.provider, job.model, stated, reason=f"vendor refused {batch.id}: {message[:200]}"
        )
        await self.store.audit.record(
            "capacity.learned",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=self.worker,
            reason=f"enqueued-token limit for {job.model} is {limit:,} (vendor rejection)",
            data={"provider": job.provider, "model": job.model, "limit": limit},
        )
        return limit
