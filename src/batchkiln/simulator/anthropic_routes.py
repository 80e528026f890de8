"""The Anthropic surface: Message Batches under /v1/messages/batches, as the `anthropic`
SDK calls them (auth by `x-api-key` or `Authorization: Bearer`, any `anthropic-version`).
There are no batch webhooks on this surface, as on the real one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchkiln.simulator.anthropic_batches import (
    MAX_BODY_BYTES,
    AnthropicBatch,
    check_requests,
    render_message_batch,
    results_jsonl,
)
from batchkiln.simulator.errors import SimError, json_response
from batchkiln.simulator.faults import BatchMatch, Budget, Faults, decide_failure
from batchkiln.simulator.files import page_bounds
from batchkiln.simulator.gate import CUT_HEADER, api_key, json_body, vendor_route
from batchkiln.simulator.model import (
    anthropic_input_tokens,
    anthropic_params_problem,
    output_tokens,
)
from batchkiln.simulator.timeline import PlannedRequest, plan_timeline

if TYPE_CHECKING:
    from batchkiln.simulator.app import Simulator


def tag_of(custom_id: str) -> str | None:
    """Our client prefixes every wire custom_id with "<tag>-"."""
    head, sep, _ = custom_id.partition("-")
    return head if sep and head else None


def routes(sim: Simulator) -> list[Route]:
    """Every Anthropic route, bound to `sim`."""

    async def create(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            raise SimError(413, "Request exceeds the maximum allowed number of bytes.")
        pairs = check_requests(await json_body(request))
        tag = tag_of(pairs[0][0])
        faults, budget = sim.resolve_faults(BatchMatch("anthropic", tag))
        if budget.take("rate_limit_create"):
            sim.counters.faults["rate_limit_create"] += 1
            raise SimError(
                429,
                "Number of request tokens has exceeded your rate limit.",
                retry_after=faults.retry_after_seconds,
            )
        if faults.reject_create is not None:
            sim.counters.faults["reject_create"] += 1
            raise SimError(400, faults.reject_create)
        if faults.reject_batch == "invalid_json_line":
            # No `failed` state on this surface: a malformed batch is refused at create.
            raise SimError(400, "requests.0.params: Input should be a valid dictionary")
        batch = _new_batch(sim, pairs, tag, faults, budget)
        if faults.reject_batch == "token_limit_exceeded" or (
            faults.enqueued_token_limit is not None
            and sim.enqueued_anthropic_tokens(sim.now())
            + sum(p.input_tokens for p in batch.timeline.plans)
            > faults.enqueued_token_limit
        ):
            raise SimError(
                429,
                "Your organization has reached its limit of queued batch"
                " requests. Please try again later.",
                retry_after=faults.retry_after_seconds,
            )
        sim.commit_anthropic(batch, api_key(request))
        now = sim.now()
        if budget.take("drop_create"):
            sim.counters.faults[f"drop_create_{faults.drop_create}"] += 1
            if faults.drop_create == "500":
                raise SimError(500, "Internal server error")
            return json_response(
                render_message_batch(batch, now, sim.anthropic_base_url), headers={CUT_HEADER: "1"}
            )
        return json_response(render_message_batch(batch, now, sim.anthropic_base_url))

    def _batch(request: Request) -> AnthropicBatch:
        batch_id = request.path_params["batch_id"]
        batch = sim.anthropic_batches.get(batch_id)
        if batch is None or batch.deleted:
            raise SimError(404, f"Message batch {batch_id} not found.")
        return batch

    async def retrieve(request: Request) -> Response:
        return json_response(
            render_message_batch(_batch(request), sim.now(), sim.anthropic_base_url)
        )

    async def list_batches(request: Request) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            raise SimError(400, "limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise SimError(400, "limit: must be between 1 and 1000")
        if params.get("after_id") and params.get("before_id"):
            raise SimError(400, "Only one of after_id and before_id may be given.")
        batches = [b for b in reversed(sim.anthropic_batches.values()) if not b.deleted]
        page, more = page_bounds(
            batches,
            [b.id for b in batches],
            after_id=params.get("after_id"),
            before_id=params.get("before_id"),
            limit=limit,
        )
        now = sim.now()
        data = [render_message_batch(b, now, sim.anthropic_base_url) for b in page]
        return json_response(
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def cancel(request: Request) -> Response:
        batch = _batch(request)
        now = sim.now()
        if not batch.ended(now) and batch.timeline.cancel_at is None:
            batch.timeline.cancel_at = now
        # Cancelling an ended batch returns it unchanged (the real answer is UNCONFIRMED).
        return json_response(render_message_batch(batch, now, sim.anthropic_base_url))

    async def delete(request: Request) -> Response:
        batch = _batch(request)
        if not batch.ended(sim.now()):  # status code for an early delete: UNCONFIRMED
            raise SimError(
                400,
                f"Message batch {batch.id} cannot be deleted while it is"
                " still processing. Cancel it first.",
            )
        batch.deleted = True
        return json_response({"id": batch.id, "type": "message_batch_deleted"})

    async def results(request: Request) -> Response:
        batch = _batch(request)
        now = sim.now()
        if not batch.ended(now):
            raise SimError(404, f"Results for message batch {batch.id} are not available yet.")
        if batch.archived(now):
            raise SimError(404, f"Results for message batch {batch.id} have been archived.")
        return Response(results_jsonl(batch), media_type="application/binary")

    def r(path: str, method: str, handler: Any, **kw: Any) -> Route:
        return vendor_route(sim, "anthropic", path, method, handler, **kw)

    return [
        r("/v1/messages/batches", "POST", create),
        r("/v1/messages/batches", "GET", list_batches),
        r("/v1/messages/batches/{batch_id}", "GET", retrieve, batch_param="batch_id"),
        r("/v1/messages/batches/{batch_id}", "DELETE", delete, batch_param="batch_id"),
        r("/v1/messages/batches/{batch_id}/cancel", "POST", cancel, batch_param="batch_id"),
        r("/v1/messages/batches/{batch_id}/results", "GET", results, batch_param="batch_id"),
    ]


def _new_batch(
    sim: Simulator, pairs: list[tuple[str, Any]], tag: str | None, faults: Faults, budget: Budget
) -> AnthropicBatch:
    """Decide every request's outcome (params are checked here, asynchronously as far as
    the caller can tell: a bad one becomes an `errored` result) and fix the timeline."""
    seed = sim.seed if faults.seed is None else faults.seed
    batch_id = sim.ids.new("msgbatch_", "msgbatch", 24)
    problems: dict[str, str] = {}
    planned: list[PlannedRequest] = []
    for cid, params in pairs:
        problem = anthropic_params_problem(params)
        base = cid.partition("-")[2] if tag else cid
        failure = budget.listed_failure(faults, cid, base) or decide_failure(
            faults, seed, batch_id, cid
        )
        tokens_in = 0
        cap = None
        if problem is None:
            tokens_in = anthropic_input_tokens(params)
            cap = params["max_tokens"]
        else:
            problems[cid] = problem
            failure = "invalid_request"
        planned.append(
            PlannedRequest(
                cid, failure, tokens_in, output_tokens(f"{seed}|{batch_id}|{cid}", tokens_in, cap)
            )
        )
    timeline = plan_timeline(
        now=sim.now(),
        batch_id=batch_id,
        seed=seed,
        faults=faults,
        requests=planned,
        finalizing=False,
    )
    return AnthropicBatch(
        id=batch_id,
        requests=pairs,
        problems=problems,
        tag=tag,
        faults=faults,
        seed=seed,
        timeline=timeline,
    )
