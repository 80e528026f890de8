"""When to look at a batch next: the polling schedule and the tracking modes.

First check after 10 s, doubling to a 5 minute cap, with full jitter
(uniform(0, min(cap, base * 2**n)), per the AWS analysis in
specs/idempotency-webhooks-backoff.md §3.1). A vendor `retry-after` pushes the
next check out; a predicted finish from request counts replaces the jittered
draw (never past the cap). The state lives in the batch row (`check_attempt`,
`next_check_at`), so a restarted worker resumes the schedule instead of
starting over. Written by hand rather than with stamina/tenacity: both retry
one call in-process and keep their state in memory, which dies with the process.

Modes decide which schedule a batch gets; they change how fast and how cheaply
we learn of a transition, never which transitions exist:

- `poll`: the schedule above.
- `webhook`: a signed webhook marks the batch due; otherwise only a slow
  safety-net check (hourly), so a lost webhook cannot strand a batch.
- `hybrid` (the default once a webhook secret is configured): webhooks are the
  fast path, and polling backs off to a 30 minute cap instead of 5 (still
  looking near a predicted finish, so a lost webhook costs minutes, not half
  an hour, when the counts say when).

Anthropic has no batch webhooks, so its batches always poll.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

FIRST_CHECK = 10.0
CAP = 300.0
HYBRID_CAP = 1800.0  # webhooks carry the fast path; polling only backs them up
SAFETY_NET = 3600.0  # webhook mode: the one check a lost webhook still gets
LIST_TICK = 10.0  # due checks are rounded up to this grid so a list call covers many
LIST_LOOKAHEAD = 60.0  # a listed batch due this soon is refreshed from the page instead
FLOOR = 1.0  # full jitter can draw ~0; never spin
MAX_RETRY_AFTER = 3600.0  # a vendor asking for more than an hour is clamped
ETA_MARGIN = 1.05  # look just after the predicted finish, not just before
EXPIRY_MARGIN = 1.0  # the window closes at expires_at: look just after
FINISHING_ATTEMPT = 2  # every request done, results being written: stop doubling at 40 s


class TrackingMode(StrEnum):
    POLL = "poll"
    WEBHOOK = "webhook"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Backoff:
    first: float = FIRST_CHECK
    cap: float = CAP
    jitter: bool = True
    eta: bool = True  # let a predicted finish replace the jittered draw

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
        if self.eta and eta is not None and eta >= 0:
            # The vendor's counts predict the finish: look just after it, within the cap.
            delay = min(self.cap, max(FLOOR, eta * ETA_MARGIN + 1.0))
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


@dataclass(frozen=True)
class Look:
    """What one look at the vendor showed, as far as the schedule cares."""

    changed: bool  # our state moved, or the vendor's raw status did (in_progress -> finalizing)
    in_progress: bool
    total: int = 0
    processed: int = 0
    started_at: float | None = None
    expires_at: float | None = None  # the vendor's end of the 24 h window


def next_look(
    backoff: Backoff, attempt: int, look: Look, *, now: float, rng: random.Random
) -> tuple[int, float]:
    """The next `check_attempt` and the delay until the next check after `look`.

    A change restarts the doubling at 10 s (a transition tends to be followed
    by another); no change doubles it, except while the vendor writes the results
    of a batch whose requests are all done (the end is minutes away at most). A
    batch is over at the end of its window at the latest, so the check never
    waits past that. The engine and the benchmark both use this."""
    attempt = 0 if look.changed else attempt + 1
    if look.in_progress and 0 < look.total <= look.processed:
        attempt = min(attempt, FINISHING_ATTEMPT)
    eta = None
    if look.in_progress:
        eta = predicted_finish(
            total=look.total, processed=look.processed, started_at=look.started_at, now=now
        )
    delay = backoff.delay(attempt, rng, eta=eta)
    if look.expires_at is not None and now < look.expires_at:
        delay = min(delay, look.expires_at - now + EXPIRY_MARGIN)
    return attempt, delay


class SupportsWebhooks(Protocol):
    @property
    def supports_webhooks(self) -> bool: ...


@dataclass(frozen=True)
class TrackingPolicy:
    """How one Kiln learns of vendor transitions: a mode and the schedule of each."""

    mode: TrackingMode = TrackingMode.POLL
    poll: Backoff = field(default_factory=Backoff)
    hybrid: Backoff = field(default_factory=lambda: Backoff(cap=HYBRID_CAP))
    safety_net: Backoff = field(
        default_factory=lambda: Backoff(first=SAFETY_NET, cap=SAFETY_NET, jitter=False, eta=False)
    )
    list_refresh: bool = True  # several due batches of one provider: one list call
    list_tick: float = LIST_TICK
    list_lookahead: float = LIST_LOOKAHEAD

    @classmethod
    def of(
        cls, tracking: TrackingPolicy | TrackingMode | str | None, *, webhooks: bool = False
    ) -> TrackingPolicy:
        """A policy from a policy, a mode (name), or None: hybrid when someone receives
        webhooks (a webhook secret is configured), else poll."""
        if isinstance(tracking, TrackingPolicy):
            return tracking
        if tracking is None:
            return cls(mode=TrackingMode.HYBRID if webhooks else TrackingMode.POLL)
        return cls(mode=TrackingMode(tracking))

    def with_poll(self, backoff: Backoff) -> TrackingPolicy:
        return replace(self, poll=backoff)

    def mode_for(self, provider: SupportsWebhooks) -> TrackingMode:
        """The mode a provider's batches actually get: without webhooks, poll."""
        return self.mode if provider.supports_webhooks else TrackingMode.POLL

    def backoff_for(self, provider: SupportsWebhooks) -> Backoff:
        mode = self.mode_for(provider)
        if mode == TrackingMode.WEBHOOK:
            return self.safety_net
        return self.hybrid if mode == TrackingMode.HYBRID else self.poll

    def align(self, at: float) -> float:
        """Round a live batch's next check up to the tick grid, so that checks of
        many batches fall together and one list call covers them."""
        if not self.list_refresh or self.list_tick <= 0:
            return at
        return math.ceil(at / self.list_tick - 1e-9) * self.list_tick
