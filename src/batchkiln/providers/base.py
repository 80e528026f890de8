"""What every provider adapter offers the engine, and the errors it raises.

An adapter speaks to one vendor through its official SDK and translates the
vendor's objects into these plain values; the engine never sees SDK types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from batchkiln.errors import AmbiguousOutcome, VendorError
from batchkiln.lifecycle import State

__all__ = ["AmbiguousOutcome", "VendorError"]  # re-exported: adapters raise them

# A create call that has not answered by then is abandoned as an unknown outcome
# (and reconciled). It need not fit inside the lease: the worker's heartbeat renews
# the lease while the call is in flight (engine.leases), so no second worker can
# take the batch over unless this one dies, and then the intent recorded before the
# call makes the next worker reconcile before it resends.
CREATE_TIMEOUT_SECONDS = 300.0


class Outcome(StrEnum):
    """What happened to one request inside a vendor batch."""

    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class FailureClass(StrEnum):
    """How a failed request may go again (README, "Failure classes")."""

    RETRYABLE = "retryable"  # transient: goes into a retry child automatically
    PERMANENT = "permanent"  # the request itself is wrong: never resent
    # The account is the problem (credit balance, quota, billing): resending now fails
    # the same way, so never automatically; `kiln retry JOB --class account` after a top-up.
    ACCOUNT = "account"


@dataclass(frozen=True)
class WireRequest:
    """One request as it goes on the wire: our wire id and the vendor body."""

    wire_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class CreateSpec:
    """Everything an adapter needs to create one vendor batch."""

    batch_key: str
    tag: str  # short, [a-z0-9]; in OpenAI metadata and as every wire id's prefix
    model: str
    endpoint: str  # "/v1/chat/completions", ... ; "/v1/messages" for Anthropic
    requests: Sequence[WireRequest]
    # Gemini: the input file an earlier attempt uploaded (recorded in the store), and
    # how to record a new one before the create call (exact reconciliation).
    input_file: str | None = None
    record_input: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BatchError:
    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class VendorBatch:
    """A vendor batch as last seen, with its status mapped onto our lifecycle."""

    vendor_id: str
    vendor_status: str
    state: State  # pending, in_progress, cancelling, or a vendor outcome
    total: int
    succeeded: int
    failed: int
    created_at: float
    ended_at: float | None = None  # the vendor's own terminal timestamp
    expires_at: float | None = None
    tag: str | None = None  # OpenAI metadata tag; Anthropic has none
    input_file_id: str | None = None
    output_file_id: str | None = None  # where results are, for vendors that use files
    error_file_id: str | None = None
    errors: tuple[BatchError, ...] = ()

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed


# Usage and ResultLine are made once per result line and read once, on the ingest's hot
# path: plain slotted dataclasses, not frozen ones, whose __init__ sets each field
# through object.__setattr__ (the two took 2.9 us of a 2 KB line's ~12, now 1.0).
# Nothing changes them after the adapter made them.


@dataclass(slots=True)
class Usage:
    """Billed tokens of one request. `input_tokens` counts every input token, cache
    reads (`cached_input_tokens`) and cache writes (Anthropic: 5-minute and 1-hour
    ones, billed above the input price) included."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0


@dataclass(slots=True)
class ResultLine:
    """One line of a vendor result stream, normalised."""

    wire_id: str
    outcome: Outcome
    response: dict[str, Any] | None = None  # the endpoint's body (ChatCompletion, Message...)
    error: dict[str, Any] | None = None  # {"code", "message", "status"?}
    failure: FailureClass | None = None
    usage: Usage = field(default_factory=Usage)
    billed: bool = False  # whether the vendor charges for this request
    raw: bytes = b""  # the vendor's line as received, for vendor-shaped export


class Provider(Protocol):
    """A vendor's batch API. Adapters make every call with SDK retries off."""

    name: str
    supports_webhooks: bool
    list_page_size: int  # most batches one list call returns

    async def create(self, spec: CreateSpec) -> VendorBatch:
        """Create the vendor batch. Raises VendorError (definite) or AmbiguousOutcome."""
        ...

    async def retrieve(self, vendor_id: str) -> VendorBatch: ...

    def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        """Batches created at or after `since`, newest first."""
        ...

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        """Vendor batches created since `since` that may be `spec` from an earlier attempt."""
        ...

    async def cancel(self, vendor_id: str) -> VendorBatch: ...

    def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        """Every result line of an ended batch, streamed."""
        ...

    async def cleanup(self, batch: VendorBatch) -> None:
        """Delete the vendor files that belong to an ingested batch (no-op where none)."""
        ...

    async def aclose(self) -> None: ...
