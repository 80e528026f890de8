"""RFC 9457 problem details: every error of the API is `application/problem+json`.

Each `batchkiln.errors` class has a stable problem `type` built from its `kind`
(`urn:batchkiln:problem:<kind>`), so clients branch on the type, never on the
wording. The HTTP layer's own problems (a missing Idempotency-Key, a bad token,
a request that does not match the schema, ...) have kinds of their own here.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from batchkiln.errors import (
    BudgetExceeded,
    ConfigError,
    InputError,
    InvalidKey,
    KeyConflict,
    KilnError,
    NotFound,
    StoreError,
    TransitionError,
    VendorError,
)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:batchkiln:problem:"

# HTTP status of each error class; the most specific class listed wins
STATUS: list[tuple[type[KilnError], int]] = [
    (InputError, 422),
    (InvalidKey, 400),
    (KeyConflict, 422),
    (BudgetExceeded, 422),
    (NotFound, 404),
    (ConfigError, 400),
    (StoreError, 503),
    (VendorError, 502),
    (TransitionError, 409),
]

TITLES = {
    "input": "The requests cannot be submitted",
    "file_changed": "The upload changed while it was read",
    "invalid_key": "Invalid idempotency key",
    "key_conflict": "Idempotency key reused with a different payload",
    "budget_exceeded": "Over budget",
    "not_found": "Not found",
    "config": "Invalid option",
    "store": "The store is unavailable",
    "vendor": "The vendor call failed",
    "vendor_ambiguous": "The vendor call's outcome is unknown",
    "transition": "That change cannot be made now",
    "illegal_transition": "That change is not allowed in this state",
    "stale_transition": "Someone else changed it first",
    "idempotency_key_missing": "Idempotency-Key header required",
    "idempotency_in_flight": "A request with this Idempotency-Key is still being processed",
    "unauthorized": "Missing or invalid bearer token",
    "request_validation": "The request does not match the API",
    "callback_url": "Callback URL refused",
    "http": "HTTP error",
    "internal": "Internal error",
}


class LineProblem(BaseModel):
    file: str
    line: int | None
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem detail, with our extension members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:batchkiln:problem:<kind>, stable per error class")
    title: str
    status: int
    detail: str
    kind: str
    errors: list[LineProblem] | None = Field(
        None, description="every bad line (422 input problems), capped as in the CLI"
    )
    truncated: int | None = Field(None, description="bad lines not listed")


class ProblemError(Exception):
    """An HTTP-layer problem raised by the API itself."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    kind: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + kind,
        "title": TITLES.get(kind, "Error"),
        "status": status,
        "detail": detail,
        "kind": kind,
        **{k: v for k, v in extra.items() if v is not None},
    }
    return Response(orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def status_of(exc: KilnError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def kiln_problem(exc: KilnError) -> Response:
    extra: dict[str, Any] = {}
    if isinstance(exc, InputError):
        extra["errors"] = [{"file": e.file, "line": e.line, "reason": e.reason} for e in exc.errors]
        extra["truncated"] = exc.truncated
    headers = {}
    if isinstance(exc, VendorError) and exc.retry_after:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return problem_response(status_of(exc), exc.kind, str(exc), headers=headers, **extra)


def install(api: FastAPI) -> None:
    """Route every error through problem+json."""

    async def on_problem(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(exc.status, exc.kind, exc.detail, headers=exc.headers, **exc.extra)

    async def on_kiln(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KilnError)
        return kiln_problem(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "file": "request",
                "line": None,
                "reason": f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}",
            }
            for e in exc.errors()[:20]
        ]
        detail = "; ".join(str(e["reason"]) for e in errors) or "invalid request"
        return problem_response(422, "request_validation", detail, errors=errors)

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(
            exc.status_code, "http", str(exc.detail), headers=dict(exc.headers or {})
        )

    async def on_crash(_request: Request, exc: Exception) -> Response:
        # no detail: an unexpected error's text may carry data that must not leak
        del exc
        return problem_response(500, "internal", "unexpected error; it was not stored")

    api.add_exception_handler(ProblemError, on_problem)
    api.add_exception_handler(Exception, on_crash)
    api.add_exception_handler(KilnError, on_kiln)
    api.add_exception_handler(RequestValidationError, on_validation)
    api.add_exception_handler(StarletteHTTPException, on_http)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: these statuses answer with a Problem."""
    return {
        status: {
            "description": "problem details (RFC 9457)",
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
