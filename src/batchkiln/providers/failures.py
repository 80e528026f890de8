"""Which vendor failures may be retried, and SDK exceptions turned into ours.

Two questions, answered by tables:

* A *request* inside a batch failed (an OpenAI error-file line, an Anthropic
  `errored` result, a Gemini line with an `error`): may it go into a retry batch?
  `classify_openai`, `classify_anthropic` and `classify_gemini` look the vendor's
  code up in the vendor's table, then
  fall back to the HTTP status: unknown codes are retryable at >= 500 and
  permanent below (or with no status at all). Status 0 is no HTTP response at
  all (the request never got an answer): retryable. Account conditions (credit,
  quota, billing) are their own class, `account`: held for a manual retry.
* A whole *batch* was failed by the vendor: `classify_batch_errors` tells a
  transient rejection (OpenAI's enqueued-token limit) from a bad input.
* A *call* failed (create, retrieve, list, ...): may the same call be repeated,
  and is a create's effect unknown? `SdkErrors.vendor_error` maps the SDK exception to
  `VendorError` / `AmbiguousOutcome`, with the server's retry-after; each adapter
  builds its `SdkErrors` from its own SDK, so this module imports none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import httpx2

from batchkiln.providers.base import AmbiguousOutcome, FailureClass, VendorError

RETRYABLE = FailureClass.RETRYABLE
PERMANENT = FailureClass.PERMANENT
ACCOUNT = FailureClass.ACCOUNT

# An OpenAI error-file line with `status_code: 0` (and an empty body) had no HTTP
# response at all: a transient failure on the vendor's side (real payload tr-016).
NO_RESPONSE = 0

# HTTP statuses both vendors use; anything else: >= 500 retryable, else permanent.
STATUS_CLASSES: dict[int, FailureClass] = {
    NO_RESPONSE: RETRYABLE,  # no HTTP response at all
    400: PERMANENT,  # invalid request
    401: PERMANENT,  # bad credentials
    402: ACCOUNT,  # payment required
    403: PERMANENT,  # not allowed
    404: PERMANENT,  # no such model / resource
    408: RETRYABLE,  # request timeout
    409: RETRYABLE,  # conflict (the SDKs retry it too)
    413: PERMANENT,  # request too large
    422: PERMANENT,  # unprocessable
    429: RETRYABLE,  # rate limited
    529: RETRYABLE,  # Anthropic overloaded
}

# OpenAI `error.code`, then `error.type`, of a failed request.
OPENAI_CODES: dict[str, FailureClass] = {
    "rate_limit_exceeded": RETRYABLE,
    "server_error": RETRYABLE,
    "api_error": RETRYABLE,
    "overloaded_error": RETRYABLE,
    "timeout": RETRYABLE,
    "request_timeout": RETRYABLE,
    "batch_expired": RETRYABLE,  # the 24 h window closed before it ran
    "batch_cancelled": RETRYABLE,  # the batch was cancelled before it ran
    "invalid_request_error": PERMANENT,
    "content_policy_violation": PERMANENT,
    "content_filter": PERMANENT,
    "context_length_exceeded": PERMANENT,
    "string_above_max_length": PERMANENT,
    "model_not_found": PERMANENT,
    "not_found_error": PERMANENT,
    "invalid_api_key": PERMANENT,
    "insufficient_quota": ACCOUNT,  # a 429 that waiting does not fix; a top-up does
    "billing_hard_limit_reached": ACCOUNT,
    "billing_not_active": ACCOUNT,
}

# Anthropic `error.error.type` of an errored result (no HTTP status in results).
ANTHROPIC_TYPES: dict[str, FailureClass] = {
    "rate_limit_error": RETRYABLE,
    "overloaded_error": RETRYABLE,
    "api_error": RETRYABLE,
    "timeout_error": RETRYABLE,
    "conflict_error": RETRYABLE,
    "invalid_request_error": PERMANENT,
    "authentication_error": PERMANENT,
    "billing_error": ACCOUNT,
    "permission_error": PERMANENT,
    "not_found_error": PERMANENT,
    "request_too_large": PERMANENT,
}

# Gemini: the google.rpc canonical `status` of a failed line (its `code` is the HTTP
# status, the fallback). Safety blocks arrive as responses and are classed by the adapter.
GEMINI_STATUSES: dict[str, FailureClass] = {
    "RESOURCE_EXHAUSTED": RETRYABLE,  # 429: quota or rate
    "INTERNAL": RETRYABLE,  # 500
    "UNAVAILABLE": RETRYABLE,  # 503: overloaded
    "DEADLINE_EXCEEDED": RETRYABLE,  # 504
    "ABORTED": RETRYABLE,  # 409: concurrency conflict
    "UNKNOWN": RETRYABLE,  # 500 without a reason
    "INVALID_ARGUMENT": PERMANENT,  # 400
    "FAILED_PRECONDITION": ACCOUNT,  # 400: e.g. billing not enabled for the project
    "OUT_OF_RANGE": PERMANENT,  # 400
    "PERMISSION_DENIED": PERMANENT,  # 403
    "UNAUTHENTICATED": PERMANENT,  # 401
    "NOT_FOUND": PERMANENT,  # 404: no such model or cached content
    "UNIMPLEMENTED": PERMANENT,  # 501: not a transient fault
    "SAFETY": PERMANENT,
    "BLOCKLIST": PERMANENT,
    "PROHIBITED_CONTENT": PERMANENT,
    "SPII": PERMANENT,
    "IMAGE_SAFETY": PERMANENT,
    "RECITATION": PERMANENT,
    "OTHER": PERMANENT,  # blockReason OTHER
    "NO_CANDIDATES": PERMANENT,
}


def classify(
    table: Mapping[str, FailureClass], *keys: str | None, status: int | None = None
) -> FailureClass:
    """The first of `keys` found in `table`; else by `status` (unknown: >= 500 retryable)."""
    for key in keys:
        if key and key in table:
            return table[key]
    if status is None:
        return PERMANENT
    return STATUS_CLASSES.get(status, RETRYABLE if status >= 500 else PERMANENT)


# Account conditions some vendors report under a generic type (Anthropic sends "Your
# credit balance is too low ..." as `invalid_request_error`, real payload tr-030): read
# from the message, lower-cased. Only phrases about money or quota, never about input.
ACCOUNT_PHRASES: tuple[str, ...] = (
    "credit balance is too low",
    "purchase credits",
    "exceeded your current quota",
    "billing hard limit",
    "check your plan and billing",
)


def is_account_message(message: str | None) -> bool:
    text = (message or "").lower()
    return any(phrase in text for phrase in ACCOUNT_PHRASES)


def classify_openai(
    code: str | None, type_: str | None, status: int | None, message: str | None = None
) -> FailureClass:
    if is_account_message(message):
        return ACCOUNT
    return classify(OPENAI_CODES, code, type_, status=status)


def classify_anthropic(type_: str | None, message: str | None = None) -> FailureClass:
    if is_account_message(message):
        return ACCOUNT
    return classify(ANTHROPIC_TYPES, type_)


def classify_gemini(status: str | None, code: int | None) -> FailureClass:
    return classify(GEMINI_STATUSES, status, status=code)


# OpenAI `errors.data[].code` of a batch the vendor failed as a whole. Every rejection
# is about the input (fix it, no blind retry) except the enqueued-token limit: "try
# again once some in_progress batches have been completed" (real payload tr-003).
OPENAI_BATCH_CODES: dict[str, FailureClass] = {
    "token_limit_exceeded": RETRYABLE,
}


def classify_batch_errors(codes: Sequence[str]) -> FailureClass:
    """A failed batch is transient only when every reason the vendor gave is."""
    if codes and all(OPENAI_BATCH_CODES.get(c) == RETRYABLE for c in codes):
        return RETRYABLE
    return PERMANENT


# --- call failures -----------------------------------------------------------------

# Statuses after which the same call may simply be made again.
_RETRY_STATUSES = frozenset({408, 409, 429})


def _call_retryable(status: int) -> bool:
    return status in _RETRY_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date,
    measured from the response's `Date` when present). None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    reference = now
    if reference is None:
        try:
            reference = parsedate_to_datetime(headers.get("date", "")).timestamp()
        except (TypeError, ValueError, IndexError):
            reference = time.time()
    return max(0.0, when - reference)


@dataclass(frozen=True)
class StatusDetail:
    """What a status error says: the HTTP status, the vendor's message and code, the
    response headers (for retry-after)."""

    status: int
    message: str
    code: str | None
    headers: Mapping[str, str]


@dataclass(frozen=True)
class SdkErrors:
    """One SDK's exception classes, given by its adapter, so that this module imports no
    SDK (the anthropic SDK alone is ~40 MB of a process that only speaks OpenAI).

    openai and anthropic are generated by the same tool and share the shape: a
    connection error (timeouts included), a status error with its response, and their
    common base for a reply the SDK could not read (its `str` is its message). `detail`
    reads a status error."""

    connection: type[Exception]
    status: type[Exception]
    api: type[Exception]
    detail: Callable[[Exception], StatusDetail]

    @property
    def caught(self) -> tuple[type[Exception], ...]:
        """Everything a vendor call can raise; a streamed body raises raw httpx errors."""
        return (self.api, httpx.HTTPError, httpx2.HTTPError)

    def vendor_error(
        self, exc: Exception, *, creating: bool = False, what: str = "call"
    ) -> VendorError:
        """Our error for an SDK exception. With `creating`, anything after which the
        vendor may hold the batch (cut connection, timeout, 5xx, 529, unreadable reply)
        is `AmbiguousOutcome`; a definite refusal is `VendorError` (retryable for
        408/409/429)."""
        if isinstance(exc, self.connection):
            message = f"{what}: {exc}"
            if creating:
                return AmbiguousOutcome(message)
            return VendorError(message, retryable=True)
        if isinstance(exc, self.status):
            detail = self.detail(exc)
            if creating and detail.status >= 500:
                return AmbiguousOutcome(
                    f"{what}: {detail.status} {detail.message}", status=detail.status
                )
            return VendorError(
                detail.message,
                retryable=_call_retryable(detail.status),
                status=detail.status,
                code=detail.code,
                retry_after=parse_retry_after(detail.headers),
            )
        if isinstance(exc, self.api):  # a reply the SDK could not read
            message = f"{what}: unreadable vendor reply ({exc})"
            if creating:
                return AmbiguousOutcome(message)
            return VendorError(message, retryable=True)
        if isinstance(exc, httpx.HTTPError | httpx2.HTTPError):
            message = f"{what}: {type(exc).__name__}: {exc}"
            if creating:
                return AmbiguousOutcome(message)
            return VendorError(message, retryable=True)
        raise TypeError(f"not a vendor error: {exc!r}") from exc
