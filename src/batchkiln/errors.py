"""Every exception the public API raises, under one root.

    KilnError                    anything batchkiln raises on purpose
    ├── ConfigError              a setting (KILN_*, an SDK variable, an option) is invalid
    ├── InputError               a request file cannot be submitted (every bad line listed)
    │   └── FileChanged          the file changed between two reads of one command
    ├── InvalidKey               an idempotency key that is not 1-255 printable ASCII
    ├── KeyConflict              an idempotency key first used with different content
    ├── BudgetExceeded           a submission or retry refused by a budget, before any call
    ├── NotFound                 no job or batch by that id or key
    ├── StoreError               the database cannot be opened, read or written
    │   └── DatabaseURLError     KILN_DATABASE_URL is not a URL of a supported database (also
    │                            a ConfigError)
    ├── VendorError              a vendor call failed (`retryable` says if it may be repeated)
    │   └── AmbiguousOutcome     a create whose effect is unknown: reconcile before resending
    └── TransitionError          a state change that cannot be made
        ├── IllegalTransition    the lifecycle table does not allow it
        └── StaleTransition      the row was not in the expected state: someone else moved it

Where a built-in base is natural (`ValueError` for bad input, `LookupError` for a miss)
the class has it too, so `except ValueError` in existing callers keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchkiln.costs.budget import Refusal


class KilnError(Exception):
    """The root of every error batchkiln raises on purpose."""

    #: a stable short name for the error class (problem types, JSON error envelopes)
    kind: str = "error"

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(KilnError, ValueError):
    """A setting is invalid: names the variable (or option) and what it accepts."""

    kind = "config"

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class LineError:
    file: str
    line: int | None  # None: about the whole file or the command
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


class InputError(KilnError, ValueError):
    """A request file that cannot be submitted; lists every bad line up to a cap."""

    kind = "input"

    def __init__(self, errors: list[LineError], truncated: int = 0) -> None:
        self.errors = errors
        self.truncated = truncated
        lines = [str(e) for e in errors]
        if truncated:
            lines.append(f"... and {truncated} more")
        super().__init__("\n".join(lines))


class FileChanged(InputError):
    """The request file changed between two reads of one command (a line that stopped
    the storing read was valid when the report read it, or `iter_requests` found other
    content than was validated): nothing was stored; run the command again on a file
    that is not being written."""

    kind = "file_changed"

    def __init__(self, path: str, line: int | None = None, detail: str | None = None) -> None:
        why = detail or "its content no longer matches what was validated"
        super().__init__(
            [
                LineError(
                    path,
                    line,
                    f"the file changed while it was being submitted ({why}); nothing was stored",
                )
            ]
        )
        self.path = path


class InvalidKey(KilnError, ValueError):
    """A user idempotency key that is not 1-255 printable ASCII characters."""

    kind = "invalid_key"


class KeyConflict(KilnError):
    """The same idempotency key was first used with different content."""

    kind = "key_conflict"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was first used with different content, so it cannot"
            " name this job; nothing was submitted. Use a new key for new content (or omit"
            " the key to use the content fingerprint)."
        )
        self.key = key


class BudgetExceeded(KilnError):
    """A submission (or retry) whose estimate does not fit a budget; nothing was sent."""

    kind = "budget_exceeded"

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


class NotFound(KilnError, LookupError):
    """No job or batch by that id or key."""

    kind = "not_found"


class StoreError(KilnError):
    """The database cannot be opened, read or written (names the file or server)."""

    kind = "store"


class DatabaseURLError(ConfigError, StoreError):
    """The database URL is not a URL, or names a database batchkiln cannot use: a
    configuration mistake (ConfigError) about the store (StoreError)."""

    kind = "database_url"


class VendorError(KilnError):
    """A vendor call failed. `retryable` says whether the same call may be repeated."""

    kind = "vendor"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class AmbiguousOutcome(VendorError):
    """A create call whose effect is unknown (timeout, cut connection, 5xx):
    the vendor may hold the batch. Reconcile before sending it again."""

    kind = "vendor_ambiguous"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, retryable=True, status=status)


class TransitionError(KilnError):
    """A state change that cannot be made."""

    kind = "transition"


class IllegalTransition(TransitionError):
    """An event that the lifecycle table does not allow from the row's state."""

    kind = "illegal_transition"

    def __init__(self, row_id: str, state: Any, event: Any, allowed: list[str]) -> None:
        super().__init__(
            f"{_noun(row_id)} {row_id}: event '{event.value}' is not allowed in state"
            f" '{state.value}' (allowed: {', '.join(allowed) or 'none, the state is final'})"
        )
        self.batch_id = row_id
        self.row_id = row_id
        self.state = state
        self.event = event


class StaleTransition(TransitionError):
    """The row was not in the expected state: someone else moved it."""

    kind = "stale_transition"

    def __init__(self, row_id: str, expected: Any, actual: Any | None) -> None:
        seen = actual.value if actual is not None else "missing"
        super().__init__(
            f"{_noun(row_id)} {row_id}: expected state '{expected.value}' but it is '{seen}'"
            " (moved by another worker)"
        )
        self.batch_id = row_id
        self.row_id = row_id
        self.expected = expected
        self.actual = actual


class LeaseLost(TransitionError):
    """A step's lease on a batch is no longer ours (it expired and another worker
    claimed the batch): the step stops and writes nothing more."""

    kind = "lease_lost"

    def __init__(self, batch_id: str, owner: str) -> None:
        super().__init__(
            f"batch {batch_id}: lease no longer held by {owner} (expired and claimed by"
            " another worker); this step stops without writing"
        )
        self.batch_id = batch_id
        self.row_id = batch_id
        self.owner = owner


def _noun(row_id: str) -> str:
    return "job" if row_id.startswith("job_") else "batch"


class ProviderNotConfigured(ConfigError, LookupError):
    """A Job names a provider this process has no adapter for (e.g. a `simulator` job
    seen by a worker without the in-process simulator): its batches are skipped."""

    kind = "provider_not_configured"


__all__ = [
    "AmbiguousOutcome",
    "BudgetExceeded",
    "ConfigError",
    "DatabaseURLError",
    "FileChanged",
    "IllegalTransition",
    "InputError",
    "InvalidKey",
    "KeyConflict",
    "KilnError",
    "LeaseLost",
    "LineError",
    "NotFound",
    "ProviderNotConfigured",
    "StaleTransition",
    "StoreError",
    "TransitionError",
    "VendorError",
]
