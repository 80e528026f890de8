"""The OpenAI surface: Files and Batches under /v1, as the `openai` SDK calls them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchkiln.simulator.errors import SimError, json_response
from batchkiln.simulator.faults import BatchMatch, Budget, Faults, decide_failure
from batchkiln.simulator.files import (
    FILE_TTL_SECONDS,
    MAX_BATCH_FILE_BYTES,
    PURPOSES,
    FileRecord,
    cursor_page,
)
from batchkiln.simulator.gate import CUT_HEADER, api_key, json_body, vendor_route
from batchkiln.simulator.model import (
    OPENAI_ENDPOINTS,
    openai_body_problem,
    openai_input_tokens,
    openai_output_cap,
    output_tokens,
)
from batchkiln.simulator.openai_batches import (
    OpenAIBatch,
    forced_rejection,
    parse_input,
    render_batch,
    token_limit_error,
)
from batchkiln.simulator.timeline import PlannedRequest, plan_timeline

if TYPE_CHECKING:
    from batchkiln.simulator.app import Simulator

TAG_KEY = "kiln_tag"


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SimError(400, f"Invalid '{name}': expected an integer.", param=name) from None
    if not low <= value <= high:
        raise SimError(400, f"Invalid '{name}': must be between {low} and {high}.", param=name)
    return value


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    """At most 16 pairs, keys up to 64 characters, string values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise SimError(400, "Invalid 'metadata': expected an object.", param="metadata")
    if len(metadata) > 16:
        raise SimError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at"
            f" most 16 properties, but got an object with {len(metadata)} properties"
            " instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise SimError(
                400,
                f"Invalid 'metadata': key {key[:16]!r}... is longer than 64 characters.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise SimError(
                400,
                f"Invalid 'metadata.{key}': expected a string.",
                param="metadata",
                code="invalid_type",
            )
        if len(value) > 512:
            raise SimError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string"
                f" with maximum length 512, but got a string with length"
                f" {len(value)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
    return dict(metadata)


def _output_ttl(body: dict[str, Any]) -> int:
    spec = body.get("output_expires_after")
    if spec is None:
        return FILE_TTL_SECONDS
    seconds = spec.get("seconds") if isinstance(spec, dict) else None
    if not isinstance(seconds, int) or not 3600 <= seconds <= 2_592_000:
        raise SimError(
            400,
            "Invalid 'output_expires_after.seconds': must be between 3600 and 2592000.",
            param="output_expires_after",
        )
    return seconds


def routes(sim: Simulator) -> list[Route]:
    """Every OpenAI route, bound to `sim`."""

    async def upload(request: Request) -> Response:
        form = await request.form(max_part_size=1024 * 1024)
        purpose = form.get("purpose")
        file = form.get("file")
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            raise SimError(
                400, f"Invalid 'purpose': expected one of {', '.join(PURPOSES)}.", param="purpose"
            )
        if not isinstance(file, UploadFile):
            raise SimError(400, "Missing required parameter: 'file'.", param="file")
        content = await file.read()
        filename = file.filename or "upload"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise SimError(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
        if purpose == "batch" and len(content) > MAX_BATCH_FILE_BYTES:
            raise SimError(
                400, "The batch input file is larger than the 200 MB limit.", param="file"
            )
        ttl = FILE_TTL_SECONDS if purpose == "batch" else None
        seconds = form.get("expires_after[seconds]")
        if isinstance(seconds, str) and seconds.isdigit():
            ttl = int(seconds)
        now = int(sim.now())
        record = sim.files.add(
            FileRecord(
                id=sim.ids.new("file-", "file", 22),
                filename=filename,
                purpose=purpose,
                content=content,
                created_at=now,
                expires_at=now + ttl if ttl else None,
            )
        )
        return json_response(record.to_json())

    def _file(request: Request) -> FileRecord:
        record = sim.files.get(request.path_params["file_id"], sim.now())
        if record is None:
            raise SimError(
                404, f"No such File object: {request.path_params['file_id']}", param="id"
            )
        return record

    async def get_file(request: Request) -> Response:
        sim.settle_all()
        return json_response(_file(request).to_json())

    async def file_content(request: Request) -> Response:
        sim.settle_all()
        return Response(_file(request).read(), media_type="application/octet-stream")

    async def delete_file(request: Request) -> Response:
        record = _file(request)
        record.deleted = True
        return json_response({"id": record.id, "object": "file", "deleted": True})

    async def list_files(request: Request) -> Response:
        sim.settle_all()
        limit = _int_param(request, "limit", 10_000, 1, 10_000)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise SimError(400, "Invalid 'order': expected 'asc' or 'desc'.", param="order")
        files = sim.files.live(sim.now(), request.query_params.get("purpose"))
        if order == "desc":
            files.reverse()
        page, more = cursor_page(
            files, [f.id for f in files], after=request.query_params.get("after"), limit=limit
        )
        return json_response(_list([f.to_json() for f in page], more))

    async def create_batch(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise SimError(400, "The body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise SimError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        metadata = _check_metadata(body.get("metadata"))
        tag = (metadata or {}).get(TAG_KEY)
        faults, budget = sim.resolve_faults(BatchMatch("openai", tag, metadata or {}))
        if budget.take("rate_limit_create"):
            sim.counters.faults["rate_limit_create"] += 1
            raise SimError(
                429,
                "Rate limit reached for batch creation. Please try again later.",
                retry_after=faults.retry_after_seconds,
            )
        if faults.reject_create is not None:
            sim.counters.faults["reject_create"] += 1
            raise SimError(400, faults.reject_create)
        endpoint = body["endpoint"]
        if endpoint not in OPENAI_ENDPOINTS:
            raise SimError(
                400, f"Invalid 'endpoint': {endpoint!r} is not supported.", param="endpoint"
            )
        if body["completion_window"] != "24h":
            raise SimError(
                400,
                "Invalid 'completion_window': only '24h' is supported.",
                param="completion_window",
            )
        output_ttl = _output_ttl(body)
        now = sim.now()
        source = sim.files.get(body["input_file_id"], now)
        if source is None:  # 404 vs 400 for an unknown input file: UNCONFIRMED
            raise SimError(
                404, f"No such File object: {body['input_file_id']}", param="input_file_id"
            )
        if source.purpose != "batch":
            raise SimError(400, "The input file must have purpose 'batch'.", param="input_file_id")
        batch = _new_batch(sim, body, source.read(), metadata, tag, output_ttl, now, faults, budget)
        sim.commit_openai(batch, api_key(request))
        if budget.take("drop_create"):
            sim.counters.faults[f"drop_create_{faults.drop_create}"] += 1
            if faults.drop_create == "500":
                raise SimError(500, "The server had an error while processing your request.")
            return json_response(render_batch(batch, now), headers={CUT_HEADER: "1"})
        return json_response(render_batch(batch, now))

    async def get_batch(request: Request) -> Response:
        return json_response(render_batch(_batch(request), sim.now()))

    def _batch(request: Request) -> OpenAIBatch:
        batch = sim.openai_batch(request.path_params["batch_id"])
        if batch is None:
            raise SimError(404, f"No batch found with id '{request.path_params['batch_id']}'.")
        return batch

    async def cancel_batch(request: Request) -> Response:
        batch = _batch(request)
        now = sim.now()
        status = batch.status(now)
        if status in ("completed", "failed", "expired"):
            # Which states cancel accepts is UNCONFIRMED; finished batches are refused here.
            raise SimError(400, f"Cannot cancel a batch with status '{status}'.")
        if batch.timeline.cancel_at is None:
            batch.timeline.cancel_at = now
        return json_response(render_batch(batch, now))

    async def list_batches(request: Request) -> Response:
        limit = _int_param(request, "limit", 20, 1, 100)
        sim.settle_all()
        batches = list(reversed(sim.openai_batches.values()))  # newest first: UNCONFIRMED
        page, more = cursor_page(
            batches, [b.id for b in batches], after=request.query_params.get("after"), limit=limit
        )
        now = sim.now()
        return json_response(_list([render_batch(b, now) for b in page], more))

    def r(path: str, method: str, handler: Any, **kw: Any) -> Route:
        return vendor_route(sim, "openai", path, method, handler, **kw)

    return [
        r("/v1/files", "POST", upload),
        r("/v1/files", "GET", list_files),
        r("/v1/files/{file_id}", "GET", get_file),
        r("/v1/files/{file_id}", "DELETE", delete_file),
        r("/v1/files/{file_id}/content", "GET", file_content),
        r("/v1/batches", "POST", create_batch),
        r("/v1/batches", "GET", list_batches),
        r("/v1/batches/{batch_id}", "GET", get_batch, batch_param="batch_id"),
        r("/v1/batches/{batch_id}/cancel", "POST", cancel_batch, batch_param="batch_id"),
    ]


def _list(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _new_batch(
    sim: Simulator,
    body: dict[str, Any],
    content: bytes,
    metadata: dict[str, str] | None,
    tag: str | None,
    output_ttl: int,
    now: float,
    faults: Faults,
    budget: Budget,
) -> OpenAIBatch:
    """Validate the input, decide every request's outcome, and fix the timeline."""
    endpoint = body["endpoint"]
    seed = sim.seed if faults.seed is None else faults.seed
    batch_id = sim.ids.new("batch_", "batch", 32)
    lines, errors = parse_input(content, endpoint)
    model = next(
        (
            ln.body.get("model")
            for ln in lines
            if isinstance(ln.body, dict) and isinstance(ln.body.get("model"), str)
        ),
        None,
    )
    planned: list[PlannedRequest] = []
    if not errors:
        for ln in lines:
            cid = ln.custom_id
            base = cid[len(tag) + 1 :] if tag and cid.startswith(f"{tag}-") else cid
            body_ok = openai_body_problem(endpoint, ln.body) is None
            tokens_in = openai_input_tokens(endpoint, ln.body) if body_ok else 0
            failure = budget.listed_failure(faults, cid, base) or decide_failure(
                faults, seed, batch_id, cid
            )
            if not body_ok:
                failure = "invalid_request"
            tokens_out = output_tokens(
                f"{seed}|{batch_id}|{cid}",
                tokens_in,
                openai_output_cap(ln.body) if body_ok else None,
            )
            planned.append(PlannedRequest(cid, failure, tokens_in, tokens_out))
    if not errors and faults.reject_batch is not None:
        errors = [
            forced_rejection(
                faults.reject_batch,
                model=model,
                limit=faults.enqueued_token_limit,
                seed=seed,
                batch_id=batch_id,
                n_lines=len(lines),
            )
        ]
    if not errors and faults.enqueued_token_limit is not None:
        enqueued = sim.enqueued_openai_tokens(model, now)
        if enqueued + sum(p.input_tokens for p in planned) > faults.enqueued_token_limit:
            errors = [token_limit_error(model, faults.enqueued_token_limit)]
    timeline = plan_timeline(
        now=now,
        batch_id=batch_id,
        seed=seed,
        faults=faults,
        requests=[] if errors else planned,
        rejected=bool(errors),
    )
    return OpenAIBatch(
        id=batch_id,
        endpoint=endpoint,
        input_file_id=body["input_file_id"],
        completion_window=body["completion_window"],
        metadata=metadata,
        model=model,
        tag=tag,
        faults=faults,
        seed=seed,
        lines=lines,
        timeline=timeline,
        errors=errors,
        output_ttl=output_ttl,
    )
