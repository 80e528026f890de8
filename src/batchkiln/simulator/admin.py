"""The simulator's own API under /_sim/, apart from the vendor paths (no auth, no faults).

GET    /_sim/counters                 calls, creates, faults, webhook attempts
GET    /_sim/faults                   the default Faults as JSON
PUT    /_sim/faults                   replace them: {"spec": "retryable=0.05,..."} or fields
PUT    /_sim/faults/batch/{tag}       per-batch override for a kiln tag (same body)
DELETE /_sim/faults/batch/{tag}       drop that override
GET    /_sim/clock                    {"now": virtual unix seconds}
POST   /_sim/clock/advance            {"seconds": N}: move virtual time forward
POST   /_sim/webhooks/deliver         deliver due webhooks now; {"attempted": n}
GET    /_sim/webhooks                 {"urls", "secret", "pending"}
PUT    /_sim/webhooks                 {"urls": [...]}: where batch events go
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchkiln.simulator.errors import json_response
from batchkiln.simulator.faults import Faults, parse_faults

if TYPE_CHECKING:
    from batchkiln.simulator.app import Simulator


class AdminError(Exception):
    pass


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise AdminError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AdminError("expected a JSON object")
    return data


def faults_from_json(data: dict[str, Any]) -> Faults:
    """`{"spec": "..."}` in the --faults format, or Faults fields by name."""
    if "spec" in data:
        return parse_faults(str(data["spec"]))
    fields = dict(data)
    if "retryable_kinds" in fields:
        fields["retryable_kinds"] = tuple(fields["retryable_kinds"])
    try:
        return Faults(**fields)
    except TypeError as exc:
        raise AdminError(str(exc)) from None


def routes(sim: Simulator) -> list[Route]:
    """The admin routes, bound to `sim`."""

    def guarded(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                result: Response = await handler(request)
                return result
            except (AdminError, ValueError) as exc:
                return json_response({"error": str(exc)}, 400)

        return run

    async def counters(request: Request) -> Response:
        return json_response(sim.counters.to_json())

    async def get_faults(request: Request) -> Response:
        return json_response(sim.faults.to_json())

    async def put_faults(request: Request) -> Response:
        sim.faults = faults_from_json(await _body(request))
        return json_response(sim.faults.to_json())

    async def put_batch_faults(request: Request) -> Response:
        faults = faults_from_json(await _body(request))
        sim.set_batch_faults(request.path_params["tag"], faults)
        return json_response(faults.to_json())

    async def delete_batch_faults(request: Request) -> Response:
        sim.clear_batch_faults(request.path_params["tag"])
        return json_response({"deleted": True})

    async def clock(request: Request) -> Response:
        return json_response({"now": sim.now()})

    async def advance(request: Request) -> Response:
        data = await _body(request)
        seconds = data.get("seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise AdminError("'seconds' must be a non-negative number")
        sim.advance(float(seconds))
        return json_response({"now": sim.now()})

    async def deliver(request: Request) -> Response:
        return json_response({"attempted": await sim.deliver_due_webhooks()})

    async def get_webhooks(request: Request) -> Response:
        return json_response(
            {
                "urls": sim.webhook_urls,
                "secret": sim.webhook_secret,
                "pending": len(sim.webhooks.pending),
            }
        )

    async def put_webhooks(request: Request) -> Response:
        urls = (await _body(request)).get("urls")
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise AdminError("'urls' must be a list of strings")
        sim.webhook_urls[:] = urls
        return json_response({"urls": sim.webhook_urls})

    table = [
        ("/_sim/counters", "GET", counters),
        ("/_sim/faults", "GET", get_faults),
        ("/_sim/faults", "PUT", put_faults),
        ("/_sim/faults/batch/{tag}", "PUT", put_batch_faults),
        ("/_sim/faults/batch/{tag}", "DELETE", delete_batch_faults),
        ("/_sim/clock", "GET", clock),
        ("/_sim/clock/advance", "POST", advance),
        ("/_sim/webhooks/deliver", "POST", deliver),
        ("/_sim/webhooks", "GET", get_webhooks),
        ("/_sim/webhooks", "PUT", put_webhooks),
    ]
    return [Route(path, guarded(h), methods=[m]) for path, m, h in table]
