"""When to look at a batch next: the polling schedule.

First check after 10 s, doubling to a 5 minute cap, with full jitter
(uniform(0, min(cap, base * 2**n)), per the AWS analysis in
specs/idempotency-webhooks-backoff.md §3.1). A vendor `retry-after` pushes the
next check out; a predicted finish from request counts pulls it in (never past
the cap). The state lives in the batch row (`check_attempt`, `next_check_at`),
so a restarted worker resumes the schedule instead of starting over. Written by
hand rather than with stamina/tenacity: both retry one call in-process and keep
their state in memory, which dies with the process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST_CHECK = 10.0
CAP = 300.0
FLOOR = 1.0  # full jitter can draw ~0; never spin
MAX_RETRY_AFTER = 3600.0  # a vendor asking for more than an hour is clamped


@dataclass(frozen=True)
class Backoff:
    first: float = FIRST_CHECK
    cap: float = CAP
    jitter: bool = True

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay for the n-th check (0-based): 10, 20, 40, ... 300."""
        return min(self.cap, self.first * float(2 ** min(attempt, 32)))

    def delay(
        self,
        attempt: int,
        rng: random.Random,
        *,
        retry_after: float | None = None,
        eta: float | None = None,
    ) -> float:
        ceiling = self.ceiling(attempt)
        if eta is not None and eta >= 0:
            # The vendor's counts predict the finish: look just after it, within the cap.
            delay = min(self.cap, max(FLOOR, eta * 1.05 + 1.0))
        else:
            delay = max(FLOOR, rng.uniform(0, ceiling)) if self.jitter else ceiling
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay


def predicted_finish(
    *, total: int, processed: int, started_at: float | None, now: float
) -> float | None:
    """Seconds until the vendor should finish, from its processing rate so far."""
    if started_at is None or total <= 0 or processed <= 0 or processed >= total:
        return None
    elapsed = now - started_at
    if elapsed <= 0:
        return None
    rate = processed / elapsed
    return (total - processed) / rate
