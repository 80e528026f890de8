"""What every vendor call passes through: counting, auth, rate limits and 5xx on reads,
and rendering errors in the vendor's shape.

`vendor_route(sim, vendor, route, handler, ...)` wraps a handler so that each call is
counted under (method, route) with its `x-stainless-retry-count`, is refused without an
API key, may get a 429 (`rate_limit_rate`) or, for reads, a 5xx (`read_5xx_rate`,
`read_5xx_count`), and has any `SimError` rendered as the vendor would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchkiln.simulator.errors import SimError, anthropic_error, gemini_error, openai_error

if TYPE_CHECKING:
    from batchkiln.simulator.app import Simulator

Vendor = Literal["openai", "anthropic", "gemini"]
Handler = Callable[[Request], Awaitable[Response]]
CUT_HEADER = "x-sim-cut"  # a handler's marker: the outer app cuts the connection instead


def api_key(request: Request) -> str | None:
    """The caller's key: `Authorization: Bearer <key>`, `x-api-key` (Anthropic), or
    `x-goog-api-key` / `?key=` (Gemini)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return (
        request.headers.get("x-api-key")
        or request.headers.get("x-goog-api-key")
        or request.query_params.get("key")
        or None
    )


async def json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise SimError(400, "We could not parse the JSON body of your request.") from None


def _check_call(
    sim: Simulator, request: Request, vendor: Vendor, read: bool, batch_id: str | None
) -> None:
    if api_key(request) is None:
        if vendor == "openai":
            raise SimError(
                401,
                "You didn't provide an API key. You need to provide your API key"
                " in an Authorization header using Bearer auth.",
            )
        if vendor == "gemini":
            raise SimError(403, "Method doesn't allow unregistered callers. Please use an API Key.")
        raise SimError(401, "x-api-key header is required")
    faults, budget = sim.faults_for_batch(vendor, batch_id)
    if faults.rate_limit_rate and sim.call_rng.random() < faults.rate_limit_rate:
        sim.counters.faults["rate_limit"] += 1
        raise SimError(
            429,
            "Rate limit reached for requests. Please try again later.",
            retry_after=faults.retry_after_seconds,
        )
    if not read:
        return
    hit = budget.take("read_5xx")
    if not hit and faults.read_5xx_rate:
        hit = sim.call_rng.random() < faults.read_5xx_rate
    if hit:
        sim.counters.faults["read_5xx"] += 1
        if vendor == "openai":
            status = 503 if sim.call_rng.random() < 0.5 else 500
            raise SimError(status, "The server had an error while processing your request.")
        if vendor == "gemini":
            status = 503 if sim.call_rng.random() < 0.5 else 500
            raise SimError(status, "The service is currently unavailable.")
        status = 529 if sim.call_rng.random() < 0.5 else 500
        raise SimError(status, "Overloaded" if status == 529 else "Internal server error")


def vendor_route(
    sim: Simulator,
    vendor: Vendor,
    path: str,
    method: str,
    handler: Handler,
    *,
    read: bool | None = None,
    batch_param: str | None = None,
) -> Route:
    """A Starlette route whose calls go through the gate."""
    is_read = method == "GET" if read is None else read

    async def endpoint(request: Request) -> Response:
        sim.counters.record_call(method, path, request.headers.get("x-stainless-retry-count"))
        rid = sim.ids.new("req_", "request")
        batch_id = request.path_params.get(batch_param) if batch_param else None
        try:
            _check_call(sim, request, vendor, is_read, batch_id)
            response = await handler(request)
        except SimError as err:
            if vendor == "gemini":
                return gemini_error(err)
            return openai_error(err, rid) if vendor == "openai" else anthropic_error(err, rid)
        if vendor != "gemini":
            response.headers["x-request-id" if vendor == "openai" else "request-id"] = rid
        return response

    return Route(path, endpoint, methods=[method], name=f"{vendor} {method} {path}")
