"""A batch's life, fixed when it is created and read off the clock on every request.

Nothing runs in the background: a `Timeline` knows when processing starts, when each
request finishes and with which outcome, and when the batch ends (completed, expired,
cancelled or failed), so its state at any instant is a pure function of that instant.
A cancel is the only later input; it just records its time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Literal

from batchkiln.simulator.faults import FailureKind, Faults, unit

WINDOW_SECONDS = 24 * 3600.0  # OpenAI completion_window "24h"; Anthropic expires_at

Phase = Literal[
    "queued",
    "processing",
    "finalizing",
    "cancelling",
    "completed",
    "expired",
    "cancelled",
    "failed",
]
TERMINAL: frozenset[str] = frozenset({"completed", "expired", "cancelled", "failed"})


@dataclass(frozen=True)
class RequestPlan:
    """One request: where it was in the input, when it finishes, and how."""

    custom_id: str
    index: int
    finish_at: float
    failure: FailureKind | None
    input_tokens: int
    output_tokens: int


@dataclass
class Timeline:
    """When everything happens to one batch (virtual unix seconds)."""

    created_at: float
    start_at: float  # validation / queueing over; processing begins
    expires_at: float
    plans: list[RequestPlan]
    finalizing_seconds: float
    cancel_seconds: float
    rejected: bool = False  # validation fails at start_at (OpenAI `failed`)
    cancel_at: float | None = None
    _ok: list[float] = field(default_factory=list, repr=False)
    _bad: list[float] = field(default_factory=list, repr=False)
    _ok_tokens: list[tuple[int, int]] = field(default_factory=list, repr=False)
    _natural_end: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._natural_end = max((p.finish_at for p in self.plans), default=self.start_at)
        ok = sorted((p for p in self.plans if p.failure is None), key=lambda p: p.finish_at)
        self._ok = [p.finish_at for p in ok]
        self._bad = sorted(p.finish_at for p in self.plans if p.failure is not None)
        tokens_in = tokens_out = 0
        self._ok_tokens = [(0, 0)]
        for p in ok:
            tokens_in += p.input_tokens
            tokens_out += p.output_tokens
            self._ok_tokens.append((tokens_in, tokens_out))

    @property
    def natural_end(self) -> float:
        """When the last request would finish if nothing stopped the batch."""
        return self._natural_end

    def outcome(self) -> Phase:
        """The terminal phase this batch is heading for, given what is known now."""
        if self.cancel_at is not None:
            return "cancelled"
        if self.rejected:
            return "failed"
        return "expired" if self.natural_end > self.expires_at else "completed"

    def cutoff(self) -> float:
        """Requests finishing at or before this instant have a result; later ones never do."""
        if self.rejected and (self.cancel_at is None or self.cancel_at >= self.start_at):
            return float("-inf")
        ends = [self.natural_end, self.expires_at]
        if self.cancel_at is not None:
            ends.append(self.cancel_at)
        return min(ends)

    def processing_end(self) -> float:
        """When processing stops: the last result, the window's end, or the cancel."""
        if self.cancel_at is not None:
            return self.cancel_at
        if self.rejected:
            return self.start_at
        return min(self.natural_end, self.expires_at)

    def ended_at(self) -> float:
        """When the batch reaches its terminal phase."""
        kind = self.outcome()
        if kind == "cancelled":
            assert self.cancel_at is not None
            return self.cancel_at + self.cancel_seconds
        if kind == "failed":
            return self.start_at
        if kind == "expired":
            # Straight to expired: whether expiry passes `finalizing` is UNCONFIRMED.
            return self.expires_at
        return self.natural_end + self.finalizing_seconds

    def phase(self, now: float) -> Phase:
        """The batch's phase at `now`."""
        if now >= self.ended_at():
            return self.outcome()
        if self.cancel_at is not None and now >= self.cancel_at:
            return "cancelling"
        if now < self.start_at:
            return "queued"
        if not self.rejected and self.outcome() == "completed" and now >= self.natural_end:
            return "finalizing"
        return "processing"

    def is_terminal(self, now: float) -> bool:
        return self.phase(now) in TERMINAL

    def started(self, now: float) -> bool:
        """Processing began (validation passed and no cancel came first)."""
        if self.rejected or now < self.start_at:
            return False
        return self.cancel_at is None or self.cancel_at >= self.start_at

    def done_counts(self, now: float) -> tuple[int, int]:
        """(succeeded, failed) requests with a result by `now`."""
        until = min(now, self.cutoff())
        return bisect.bisect_right(self._ok, until), bisect.bisect_right(self._bad, until)

    def usage(self, now: float) -> tuple[int, int]:
        """(input, output) tokens of the requests that succeeded by `now`."""
        return self._ok_tokens[bisect.bisect_right(self._ok, min(now, self.cutoff()))]

    def finished(self, now: float) -> list[RequestPlan]:
        """Requests with a result by `now`, in the order they finished."""
        until = min(now, self.cutoff())
        return sorted((p for p in self.plans if p.finish_at <= until), key=lambda p: p.finish_at)

    def unfinished(self) -> list[RequestPlan]:
        """Requests that never get a result (expired or cancelled), in input order."""
        until = self.cutoff()
        return [p for p in self.plans if p.finish_at > until]


@dataclass(frozen=True)
class PlannedRequest:
    """What the planner needs to know about one request."""

    custom_id: str
    failure: FailureKind | None
    input_tokens: int
    output_tokens: int


def plan_timeline(
    *,
    now: float,
    batch_id: str,
    seed: int,
    faults: Faults,
    requests: list[PlannedRequest],
    rejected: bool = False,
    finalizing: bool = True,
    window_seconds: float = WINDOW_SECONDS,
) -> Timeline:
    """Fix a batch's timeline at creation: a queue delay, then requests finishing evenly
    over the processing time in a seeded order (results are not in input order)."""
    start = now + faults.queue_delay_seconds
    expires = now + window_seconds
    n = len(requests)
    total = faults.processing_seconds + faults.per_request_seconds * n
    if faults.expire:
        # Too slow for the window: only `expire_finished_share` of the requests fit.
        share = max(faults.expire_finished_share, 1e-9)
        total = max(total, (expires - start) / share * (1 - 1e-9))
    order = sorted(range(n), key=lambda i: unit(seed, batch_id, requests[i].custom_id, "order"))
    rank = {i: r for r, i in enumerate(order)}
    plans = [
        RequestPlan(
            custom_id=req.custom_id,
            index=i,
            finish_at=start + total * (rank[i] + 1) / n,
            failure=req.failure,
            input_tokens=req.input_tokens,
            output_tokens=req.output_tokens,
        )
        for i, req in enumerate(requests)
    ]
    return Timeline(
        created_at=now,
        start_at=start,
        expires_at=expires,
        plans=plans,
        finalizing_seconds=faults.finalizing_seconds if finalizing else 0.0,
        cancel_seconds=faults.cancel_seconds,
        rejected=rejected,
    )
