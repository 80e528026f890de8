"""HTTP errors in each vendor's shape, and JSON responses.

One exception, `SimError`, carries a status and a message; the OpenAI surface renders
it as `{"error": {message, type, param, code}}`, the Anthropic surface as
`{"type": "error", "error": {type, message}, "request_id"}`, the Gemini surface as
`{"error": {code, message, status, details}}` (google.rpc.Status, with a RetryInfo on
429). Every error says whether the SDK should retry it (`x-should-retry`), and 429s carry
`retry-after`.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response

from batchkiln.simulator.model import short_id

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# HTTP code -> google.rpc canonical status name
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class SimError(Exception):
    """A vendor error response: status, message, and the optional OpenAI param/code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in (408, 409, 429) or self.status >= 500

    def headers(self) -> dict[str, str]:
        headers = {"x-should-retry": "true" if self.retryable else "false"}
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(max(1, round(self.retry_after * 1000)))
        return headers


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def request_id(*parts: object) -> str:
    return f"req_{short_id(*parts)}"


def openai_error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_error(err: SimError, rid: str) -> Response:
    type_ = _OPENAI_TYPES.get(
        err.status, "server_error" if err.status >= 500 else "invalid_request_error"
    )
    code = (
        err.code if err.code is not None else ("rate_limit_exceeded" if err.status == 429 else None)
    )
    headers = {**err.headers(), "x-request-id": rid}
    return json_response(
        openai_error_body(err.message, type_, err.param, code), err.status, headers
    )


def anthropic_error_body(status: int, message: str, rid: str | None) -> dict[str, Any]:
    type_ = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": rid}


def anthropic_error(err: SimError, rid: str) -> Response:
    headers = {**err.headers(), "request-id": rid}
    return json_response(anthropic_error_body(err.status, err.message, rid), err.status, headers)


def gemini_error(err: SimError) -> Response:
    fallback = "INTERNAL" if err.status >= 500 else "UNKNOWN"
    status = err.code or GOOGLE_STATUS.get(err.status, fallback)
    body: dict[str, Any] = {"code": err.status, "message": err.message, "status": status}
    if err.retry_after is not None:
        body["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{max(1, math.ceil(err.retry_after))}s",
            }
        ]
    headers = {k: v for k, v in err.headers().items() if k != "x-should-retry"}
    return json_response({"error": body}, err.status, headers)
