"""The Batch lifecycle as data: states, events, the transition table, and the
text a person needs in each state. The CLI and the dashboard read from here.

Nothing here touches a database; `apply_event` is the pure rule that the
store's compare-and-set enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from batchkiln.errors import IllegalTransition


class State(StrEnum):
    NOT_SUBMITTED = "not_submitted"
    SUBMITTING = "submitting"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    DOWNLOADING = "downloading"
    DONE = "done"


class Event(StrEnum):
    SUBMIT = "submit"  # intent recorded, vendor call about to be made
    ACCEPTED = "accepted"  # vendor returned (or reconciliation found) the batch
    REJECTED = "rejected"  # vendor definitely refused the create call
    STARTED = "started"  # vendor began processing
    CANCEL = "cancel"  # user asked to cancel
    VENDOR_COMPLETED = "vendor_completed"
    VENDOR_PARTIAL = "vendor_partial"
    VENDOR_FAILED = "vendor_failed"
    VENDOR_EXPIRED = "vendor_expired"
    VENDOR_CANCELLED = "vendor_cancelled"
    DOWNLOAD = "download"  # start ingesting results (resumable)
    INGESTED = "ingested"  # results stored, key archived, cost recorded
    # A vendor batch adopted without proof whose results carry another tag: it was never
    # ours; the batch goes back to submitting (reconcile, then send) on its own key.
    DISOWNED = "disowned"


@dataclass(frozen=True)
class StateInfo:
    meaning: str
    typical_wait: str
    next_action: str
    billed: str
    terminal_at_vendor: bool = False
    retry_path: bool = False  # leads to a *child* batch, never back to this row


INITIAL = State.NOT_SUBMITTED
FINAL = State.DONE

# Vendor outcomes may be observed from any live state (a poll can miss
# `in_progress` entirely, or a cancel can race a finish).
_LIVE = (State.PENDING, State.IN_PROGRESS, State.CANCELLING)
_VENDOR_OUTCOMES = {
    Event.VENDOR_COMPLETED: State.COMPLETED,
    Event.VENDOR_PARTIAL: State.PARTIAL,
    Event.VENDOR_FAILED: State.FAILED,
    Event.VENDOR_EXPIRED: State.EXPIRED,
    Event.VENDOR_CANCELLED: State.CANCELLED,
}

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.NOT_SUBMITTED, Event.SUBMIT): State.SUBMITTING,
    (State.NOT_SUBMITTED, Event.CANCEL): State.CANCELLED,
    (State.SUBMITTING, Event.ACCEPTED): State.PENDING,
    (State.SUBMITTING, Event.REJECTED): State.FAILED,
    # a cancel recorded while the create was unresolved, and no vendor batch exists
    (State.SUBMITTING, Event.CANCEL): State.CANCELLED,
    (State.PENDING, Event.STARTED): State.IN_PROGRESS,
    (State.PENDING, Event.CANCEL): State.CANCELLING,
    (State.IN_PROGRESS, Event.CANCEL): State.CANCELLING,
    **{(live, event): target for live in _LIVE for event, target in _VENDOR_OUTCOMES.items()},
    **{
        (ended, Event.DOWNLOAD): State.DOWNLOADING
        for ended in (State.COMPLETED, State.PARTIAL, State.FAILED, State.EXPIRED, State.CANCELLED)
    },
    (State.DOWNLOADING, Event.INGESTED): State.DONE,
    (State.DOWNLOADING, Event.DISOWNED): State.SUBMITTING,
}

STATE_INFO: dict[State, StateInfo] = {
    State.NOT_SUBMITTED: StateInfo("stored locally, key derived", "-", "submit", "no"),
    State.SUBMITTING: StateInfo(
        "intent recorded; vendor call in flight or outcome unknown",
        "seconds",
        "finish, or reconcile by tag, then resubmit only if the vendor has none",
        "no",
    ),
    State.PENDING: StateInfo("vendor accepted, queued", "minutes", "wait (webhook or poll)", "no"),
    State.IN_PROGRESS: StateInfo(
        "vendor processing", "minutes to 24 h", "wait; ETA from request counts", "accruing"
    ),
    State.CANCELLING: StateInfo("cancel requested", "up to 10 min", "wait", "accruing"),
    State.COMPLETED: StateInfo(
        "every request succeeded", "-", "download", "yes, batch price", terminal_at_vendor=True
    ),
    State.PARTIAL: StateInfo(
        "some succeeded, some failed",
        "-",
        "download; retry retryable failures as a child batch, new key",
        "succeeded ones only",
        terminal_at_vendor=True,
        retry_path=True,
    ),
    State.FAILED: StateInfo(
        "vendor rejected the batch or nothing succeeded",
        "-",
        "read errors, fix input; no blind retry",
        "no",
        terminal_at_vendor=True,
    ),
    State.EXPIRED: StateInfo(
        "24 h window passed before finishing",
        "-",
        "download what finished; resubmit the rest as a child batch",
        "finished ones only (verify)",
        terminal_at_vendor=True,
        retry_path=True,
    ),
    State.CANCELLED: StateInfo(
        "cancelled by the user",
        "-",
        "download what finished",
        "finished ones only",
        terminal_at_vendor=True,
    ),
    State.DOWNLOADING: StateInfo(
        "results being ingested (resumable)", "seconds", "finish ingest", "-"
    ),
    State.DONE: StateInfo(
        "results stored, key archived, cost recorded, audit event emitted",
        "-",
        "nothing",
        "final",
    ),
}

LIVE_AT_VENDOR = frozenset(_LIVE)
ENDED_AT_VENDOR = frozenset(s for s, info in STATE_INFO.items() if info.terminal_at_vendor)


def apply_event(batch_id: str, state: State, event: Event) -> State:
    """Return the state that `event` moves `state` to, or raise IllegalTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == state)
        raise IllegalTransition(batch_id, state, event, allowed) from None


def event_for_outcome(outcome: State) -> Event:
    """The vendor event that lands a batch in the ended state `outcome`."""
    for event, target in _VENDOR_OUTCOMES.items():
        if target == outcome:
            return event
    raise ValueError(f"{outcome.value} is not a vendor outcome")
