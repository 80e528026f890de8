"""Both lifecycles as data: the Batch's and the Job's states, events, transition
tables, and the text a person needs in each state. The CLI and the dashboard read
from here.

Nothing here touches a database; `Lifecycle.apply` is the pure rule that the
store's one compare-and-set (`store.transitions.move`) enforces for both nouns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

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
        "some succeeded, some failed (a batch that ran with 0 succeeded too)",
        "-",
        "download; retry retryable failures as a child batch, new key",
        "succeeded ones only",
        terminal_at_vendor=True,
        retry_path=True,
    ),
    State.FAILED: StateInfo(
        "the vendor rejected the batch as a whole (validation, auth, a bad file)",
        "-",
        "read errors, fix input; no blind retry (a transient rejection goes again as a child)",
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


S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Lifecycle(Generic[S, E]):
    """One noun's lifecycle: its states, events and transition table."""

    noun: str  # "batch" | "job": audit events are `<noun>.<event>`
    states: type[S]
    events: type[E]
    transitions: Mapping[tuple[S, E], S]
    initial: S
    final: S

    def apply(self, row_id: str, state: S, event: E) -> S:
        """The state `event` moves `state` to, or IllegalTransition."""
        try:
            return self.transitions[(state, event)]
        except KeyError:
            allowed = sorted(e.value for (s, e) in self.transitions if s == state)
            raise IllegalTransition(row_id, state, event, allowed) from None

    def event_between(self, ours: S, theirs: S) -> E | None:
        """The one event that moves `ours` to `theirs`, if the table has exactly one."""
        found = [e for (s, e), t in self.transitions.items() if s == ours and t == theirs]
        return found[0] if len(found) == 1 else None


BATCH: Lifecycle[State, Event] = Lifecycle("batch", State, Event, TRANSITIONS, INITIAL, FINAL)


def apply_event(batch_id: str, state: State, event: Event) -> State:
    """Return the state that `event` moves `state` to, or raise IllegalTransition."""
    return BATCH.apply(batch_id, state, event)


def event_for_outcome(outcome: State) -> Event:
    """The vendor event that lands a batch in the ended state `outcome`."""
    for event, target in _VENDOR_OUTCOMES.items():
        if target == outcome:
            return event
    raise ValueError(f"{outcome.value} is not a vendor outcome")


# -- How the lifecycle is drawn (the dashboard reads this; nothing here changes a rule) --
#
# The palette is the seed diagram's (slate / blue / green / amber / red / purple), as
# light fills with dark text and a strong outline, so a node reads in grey scale too;
# and every node also writes its verdict in words, so colour is never the only signal.

PALETTE: dict[str, dict[str, str]] = {
    "slate": {"fill": "#e2e8f0", "stroke": "#475569", "text": "#1e293b"},
    "blue": {"fill": "#dbeafe", "stroke": "#1d4ed8", "text": "#1e3a8a"},
    "green": {"fill": "#dcfce7", "stroke": "#15803d", "text": "#14532d"},
    "amber": {"fill": "#fef3c7", "stroke": "#b45309", "text": "#78350f"},
    "red": {"fill": "#fee2e2", "stroke": "#b91c1c", "text": "#7f1d1d"},
    "purple": {"fill": "#ede9fe", "stroke": "#6d28d9", "text": "#4c1d95"},
}


@dataclass(frozen=True)
class StateLook:
    label: str  # the node's title
    verdict: str  # written in the node, so colour is never the only signal
    palette: str  # a key of PALETTE
    seed: bool  # one of the seed diagram's nodes; the others are drawn smaller
    cost_badge: bool = False  # a billing event happens here: the node wears a $ badge


STATE_LOOK: dict[State, StateLook] = {
    State.NOT_SUBMITTED: StateLook("Not Submitted", "not sent yet", "slate", True),
    State.SUBMITTING: StateLook("Submitting", "sending once", "slate", False),
    State.PENDING: StateLook("Pending", "in flight: queued", "blue", True),
    State.IN_PROGRESS: StateLook("In Progress", "in flight: running", "blue", True),
    State.CANCELLING: StateLook("Cancelling", "stopping", "slate", False),
    State.COMPLETED: StateLook("Completed", "success", "green", True, cost_badge=True),
    State.PARTIAL: StateLook("Partial", "needs retry", "amber", True, cost_badge=True),
    State.FAILED: StateLook("Failed", "failure: fix input", "red", True),
    State.EXPIRED: StateLook("Expired", "failure: resubmit rest", "red", True, cost_badge=True),
    State.CANCELLED: StateLook("Cancelled", "stopped by you", "slate", False, cost_badge=True),
    State.DOWNLOADING: StateLook("Downloading", "ingesting", "slate", False),
    State.DONE: StateLook("Done", "finished", "green", True, cost_badge=True),
}


@dataclass(frozen=True)
class StepInfo:
    """A node of the drawing that is not a state: the retry step and the poller."""

    label: str
    verdict: str
    palette: str
    meaning: str
    typical_wait: str
    next_action: str
    billed: str


DIAGRAM_STEPS: dict[str, StepInfo] = {
    "retry": StepInfo(
        "Retry",
        "new batch, new key",
        "amber",
        "only the failed (Partial) or unfinished (Expired) requests are rebuilt into a child"
        " batch with its own derived idempotency key; succeeded requests are never resent",
        "seconds",
        "automatic when the job allows it; otherwise press Retry on the job",
        "the child is billed on its own, for what succeeds",
    ),
    "poll": StepInfo(
        "Poll",
        "GET the batch",
        "purple",
        "the client asks the vendor for the batch's status on a backoff schedule; every"
        " look is a vendor call, and detection lags by up to one interval",
        "one interval of the schedule",
        "wait for the next check (a vendor retry-after pushes it out)",
        "no (API calls only)",
    ),
}

# Words on the drawn arrows, by (from, to); the arrows themselves are TRANSITIONS.
EDGE_LABELS: dict[tuple[str, str], str] = {
    (State.NOT_SUBMITTED, State.SUBMITTING): "Submit + idempotency_key",
    (State.SUBMITTING, State.PENDING): "accepted once",
    (State.SUBMITTING, State.FAILED): "rejected",
    (State.PENDING, State.IN_PROGRESS): "vendor starts",
    (State.IN_PROGRESS, State.EXPIRED): "window passes",
    (State.FAILED, State.DOWNLOADING): "alert",
    (State.PARTIAL, "retry"): "failed ones",
    (State.EXPIRED, "retry"): "unfinished ones",
    ("retry", State.PENDING): "submit retry batch (new key)",
}


# -- the Job ------------------------------------------------------------------------


class JobState(StrEnum):
    ACTIVE = "active"
    AWAITING_RETRY = "awaiting_retry"
    DONE = "done"


class JobEvent(StrEnum):
    HELD = "held"  # every batch is done, some requests wait for a manual retry
    RETRIED = "retried"  # retry batches were started by hand
    DONE = "done"  # every request has its one final outcome


@dataclass(frozen=True)
class JobStateInfo:
    meaning: str
    next_action: str


JOB_TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.ACTIVE, JobEvent.DONE): JobState.DONE,
    (JobState.ACTIVE, JobEvent.HELD): JobState.AWAITING_RETRY,
    (JobState.AWAITING_RETRY, JobEvent.RETRIED): JobState.ACTIVE,
    (JobState.AWAITING_RETRY, JobEvent.DONE): JobState.DONE,
}

JOB_STATE_INFO: dict[JobState, JobStateInfo] = {
    JobState.ACTIVE: JobStateInfo(
        "its batches are being submitted, processed or downloaded", "wait (or `kiln watch`)"
    ),
    JobState.AWAITING_RETRY: JobStateInfo(
        "every batch is done; retryable failures wait (automatic retry off, or a retry"
        " refused by a budget)",
        "`kiln retry JOB` (or leave them)",
    ),
    JobState.DONE: JobStateInfo(
        "every request has its one final outcome; the key is archived", "read the results"
    ),
}

JOB: Lifecycle[JobState, JobEvent] = Lifecycle(
    "job", JobState, JobEvent, JOB_TRANSITIONS, JobState.ACTIVE, JobState.DONE
)
