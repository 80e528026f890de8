"""The Gemini surface (Developer API, `v1beta`), as `google-genai` 3.3.0 calls it with
`HttpOptions(base_url=sim.gemini_base_url)`:

    POST   upload/v1beta/files                       resumable upload: start, then
                                                     `upload, finalize` on the upload URL
    GET    v1beta/files, v1beta/files/{id}           DELETE v1beta/files/{id}
    GET    v1beta/files/{id}:download?alt=media      (also download/v1beta/...; the docs' form)
    POST   v1beta/models/{model}:batchGenerateContent
    GET    v1beta/batches?pageSize=&pageToken=       (`operations`, `nextPageToken`)
    GET    v1beta/batches/{id}                       DELETE v1beta/batches/{id}
    POST   v1beta/batches/{id}:cancel

Auth is `x-goog-api-key` (or `?key=`); the upload URL itself is the capability for the
chunk requests, which the SDK sends without the key. Answers are 200 (the SDK raises on
anything else) and errors are google.rpc.Status bodies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchkiln.simulator.errors import SimError, gemini_error, json_response
from batchkiln.simulator.faults import BatchMatch, Budget, Faults, decide_failure
from batchkiln.simulator.gate import CUT_HEADER, json_body, vendor_route
from batchkiln.simulator.gemini_batches import (
    MAX_FILE_BYTES,
    MAX_INLINE_BYTES,
    WINDOW_SECONDS,
    GeminiBatch,
    GeminiFile,
    GeminiRequest,
    UploadSession,
    input_tokens,
    parse_input_file,
    planned_output,
    render_batch,
    request_problem,
)
from batchkiln.simulator.timeline import PlannedRequest, plan_timeline

if TYPE_CHECKING:
    from batchkiln.simulator.app import Simulator

UPLOAD_PATH = "/upload/v1beta/files"


def tag_of(key: str | None) -> str | None:
    """Our client keys every request "<tag>-<seq>"."""
    if not key:
        return None
    head, sep, _ = key.partition("-")
    return head if sep and head else None


def _page_size(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("pageSize")
    try:
        size = int(raw) if raw else default
    except ValueError:
        raise SimError(400, f"Invalid value at 'page_size' ({raw!r})") from None
    return max(1, min(size, most))


def _page(items: list[Any], names: list[str], request: Request, size: int) -> tuple[list[Any], str]:
    """A page after the item named by `pageToken` (an opaque token: the last name seen)."""
    token = request.query_params.get("pageToken")
    start = 0
    if token:
        if token not in names:
            raise SimError(400, "Invalid page token.")
        start = names.index(token) + 1
    page = items[start : start + size]
    more = start + size < len(items)
    return page, (names[start + size - 1] if more else "")


def routes(sim: Simulator) -> list[Route]:
    """Every Gemini route, bound to `sim` (its base URL is read per call: a loopback
    server learns its port after the routes exist)."""

    # ---- files ------------------------------------------------------------------------

    async def upload_start(request: Request) -> Response:
        if request.headers.get("x-goog-upload-protocol", "").lower() != "resumable":
            raise SimError(400, "Only the resumable upload protocol is simulated.")
        if request.headers.get("x-goog-upload-command", "").lower() != "start":
            raise SimError(400, "Expected X-Goog-Upload-Command: start.")
        try:
            size = int(request.headers.get("x-goog-upload-header-content-length", ""))
        except ValueError:
            raise SimError(400, "X-Goog-Upload-Header-Content-Length is required.") from None
        if size > MAX_FILE_BYTES:
            raise SimError(400, f"File too large: {size} bytes, the limit is 2 GB.")
        body = await json_body(request)
        meta = body.get("file", {}) if isinstance(body, dict) else {}
        meta = meta if isinstance(meta, dict) else {}
        # google-genai 3.3.0 sends the File as pydantic dumps it (snake_case); proto JSON
        # parsers take both spellings, so both are read.
        name = meta.get("name")
        if name:
            if sim.gemini_files.get(name) is not None:
                raise SimError(409, f"File {name} already exists.")
        else:
            name = "files/" + sim.ids.new("", "gemini-file", 12)
        mime = (
            request.headers.get("x-goog-upload-header-content-type")
            or meta.get("mimeType")
            or meta.get("mime_type")
        )
        record = GeminiFile(
            name=name,
            display_name=meta.get("displayName") or meta.get("display_name"),
            mime_type=mime or "application/octet-stream",
            content=b"",
            created_at=sim.now(),
        )
        upload_id = sim.ids.new("", "gemini-upload", 20)
        sim.gemini_uploads[upload_id] = UploadSession(record, size)
        url = f"{sim.gemini_base_url}{UPLOAD_PATH}?upload_id={upload_id}&upload_protocol=resumable"
        return json_response(
            {}, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"}
        )

    async def upload_chunk(request: Request, upload_id: str) -> Response:
        session = sim.gemini_uploads.get(upload_id)
        if session is None:
            raise SimError(404, "No such upload session.")
        raw_command = request.headers.get("x-goog-upload-command", "")
        command = {c.strip().lower() for c in raw_command.split(",")}
        if "query" in command:
            return Response(
                headers={
                    "x-goog-upload-status": "active",
                    "x-goog-upload-size-received": str(len(session.data)),
                }
            )
        offset = int(request.headers.get("x-goog-upload-offset") or len(session.data))
        if offset != len(session.data):
            raise SimError(400, f"Upload offset {offset} is not {len(session.data)}.")
        session.data += await request.body()
        if "finalize" not in command:
            return Response(headers={"x-goog-upload-status": "active"})
        del sim.gemini_uploads[upload_id]
        if len(session.data) != session.size:
            raise SimError(400, f"Uploaded {len(session.data)} bytes, announced {session.size}.")
        session.file.content = bytes(session.data)
        session.file.created_at = sim.now()
        sim.gemini_files[session.file.name] = session.file
        return json_response(
            {"file": session.file.to_json(sim.gemini_base_url)},
            headers={"x-goog-upload-status": "final"},
        )

    gated_start = vendor_route(sim, "gemini", UPLOAD_PATH, "POST", upload_start).endpoint

    async def upload(request: Request) -> Response:
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            response: Response = await gated_start(request)
            return response
        sim.counters.record_call("POST", UPLOAD_PATH + "?upload_id", None)
        try:
            return await upload_chunk(request, upload_id)
        except SimError as err:
            return gemini_error(err)

    def _file(request: Request) -> GeminiFile:
        name = f"files/{request.path_params['file_id']}"
        record = sim.gemini_files.get(name)
        if record is None or record.gone(sim.now()):
            raise SimError(404, f"File {name} not found.", code="NOT_FOUND")
        return record

    async def get_file(request: Request) -> Response:
        return json_response(_file(request).to_json(sim.gemini_base_url))

    async def list_files(request: Request) -> Response:
        now = sim.now()
        live = [f for f in reversed(sim.gemini_files.values()) if not f.gone(now)]
        page, token = _page(live, [f.name for f in live], request, _page_size(request, 10, 100))
        data: dict[str, Any] = {"files": [f.to_json(sim.gemini_base_url) for f in page]}
        if token:
            data["nextPageToken"] = token
        return json_response(data)

    async def delete_file(request: Request) -> Response:
        _file(request).deleted = True
        return json_response({})

    async def download(request: Request) -> Response:
        record = _file(request)
        if request.query_params.get("alt") != "media":
            raise SimError(400, "Downloads need alt=media.")
        return Response(record.content, media_type=record.mime_type)

    # ---- batches ----------------------------------------------------------------------

    async def create(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_INLINE_BYTES + 1024 * 1024:
            raise SimError(400, "Request payload size exceeds the limit: 20 MB.")
        body = await json_body(request)
        spec = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise SimError(400, "batch: field is required")
        model = f"models/{request.path_params['model']}"
        config = spec.get("inputConfig")
        if not isinstance(config, dict):
            raise SimError(400, "batch.input_config: field is required")
        failure: str | None = None
        file_name = config.get("fileName")
        if file_name is not None:
            record = sim.gemini_files.get(str(file_name))
            if record is None or record.gone(sim.now()):
                raise SimError(404, f"File {file_name} not found.")
            requests, failure = parse_input_file(record.content)
        else:
            inline = config.get("requests", {})
            items = inline.get("requests") if isinstance(inline, dict) else None
            if not isinstance(items, list) or not items:
                raise SimError(400, "batch.input_config: file_name or requests is required")
            requests = []
            for item in items:
                item = item if isinstance(item, dict) else {}
                metadata = item.get("metadata")
                key = metadata.get("key") if isinstance(metadata, dict) else None
                req = item.get("request")
                requests.append(
                    GeminiRequest(str(key) if key is not None else None, req, request_problem(req))
                )
        tag = tag_of(requests[0].key) if requests else None
        faults, budget = sim.resolve_faults(BatchMatch("gemini", tag))
        if budget.take("rate_limit_create"):
            sim.counters.faults["rate_limit_create"] += 1
            raise SimError(
                429, "Resource has been exhausted.", retry_after=faults.retry_after_seconds
            )
        if faults.reject_create is not None:
            sim.counters.faults["reject_create"] += 1
            raise SimError(400, faults.reject_create)
        if faults.reject_batch == "invalid_json_line":
            failure = failure or "Invalid JSON on line 1 of the input file."
        batch = _new_batch(sim, model, spec, file_name, requests, tag, faults, budget, failure)
        if faults.reject_batch == "token_limit_exceeded" or (
            faults.enqueued_token_limit is not None
            and sim.enqueued_gemini_tokens(model, sim.now())
            + sum(p.input_tokens for p in batch.timeline.plans)
            > faults.enqueued_token_limit
        ):
            raise SimError(
                429,
                "Resource has been exhausted (enqueued tokens for this model and tier).",
                retry_after=faults.retry_after_seconds,
            )
        sim.commit_gemini(batch, request.headers.get("x-goog-api-key"))
        rendered = render_batch(batch, sim.now(), sim.gemini_base_url)
        if budget.take("drop_create"):
            sim.counters.faults[f"drop_create_{faults.drop_create}"] += 1
            if faults.drop_create == "500":
                raise SimError(500, "An internal error has occurred.")
            return json_response(rendered, headers={CUT_HEADER: "1"})
        return json_response(rendered)

    def _batch(request: Request) -> GeminiBatch:
        batch_id = request.path_params["batch_id"]
        batch = sim.gemini_batch(batch_id)
        if batch is None or batch.deleted:
            raise SimError(404, f"Batch batches/{batch_id} not found.")
        return batch

    async def retrieve(request: Request) -> Response:
        return json_response(sim.render_gemini(_batch(request)))

    async def list_batches(request: Request) -> Response:
        batches = [b for b in reversed(sim.gemini_batches.values()) if not b.deleted]
        page, token = _page(
            batches, [b.name for b in batches], request, _page_size(request, 50, 1000)
        )
        data: dict[str, Any] = {"operations": [sim.render_gemini(b) for b in page]}
        if token:
            data["nextPageToken"] = token
        return json_response(data)

    async def cancel(request: Request) -> Response:
        batch = _batch(request)
        now = sim.now()
        if not batch.timeline.is_terminal(now) and batch.timeline.cancel_at is None:
            batch.timeline.cancel_at = now
        return json_response({})  # google.protobuf.Empty

    async def delete(request: Request) -> Response:
        _batch(request).deleted = True  # allowed in any state (UNCONFIRMED)
        return json_response({})

    def r(path: str, method: str, handler: Any, **kw: Any) -> Route:
        return vendor_route(sim, "gemini", path, method, handler, **kw)

    return [
        Route(UPLOAD_PATH, upload, methods=["POST"], name="gemini POST upload"),
        r("/v1beta/files", "GET", list_files),
        r("/v1beta/files/{file_id}:download", "GET", download),
        r("/download/v1beta/files/{file_id}:download", "GET", download),
        r("/v1beta/files/{file_id}", "GET", get_file),
        r("/v1beta/files/{file_id}", "DELETE", delete_file),
        r("/v1beta/models/{model}:batchGenerateContent", "POST", create),
        r("/v1beta/batches", "GET", list_batches),
        r("/v1beta/batches/{batch_id}:cancel", "POST", cancel, batch_param="batch_id"),
        r("/v1beta/batches/{batch_id}", "GET", retrieve, batch_param="batch_id"),
        r("/v1beta/batches/{batch_id}", "DELETE", delete, batch_param="batch_id"),
    ]


def _new_batch(
    sim: Simulator,
    model: str,
    spec: dict[str, Any],
    file_name: Any,
    requests: list[GeminiRequest],
    tag: str | None,
    faults: Faults,
    budget: Budget,
    failure: str | None,
) -> GeminiBatch:
    """Decide every request's outcome and fix the timeline (48 h window)."""
    seed = sim.seed if faults.seed is None else faults.seed
    batch_id = sim.ids.new("", "gemini-batch", 20)
    planned: list[PlannedRequest] = []
    for index, req in enumerate(requests):
        pid = req.plan_id(index)
        base_id = pid.partition("-")[2] if tag else pid
        kind = budget.listed_failure(faults, pid, base_id) or decide_failure(
            faults, seed, batch_id, pid
        )
        tokens_in = 0
        if req.problem is None:
            tokens_in = input_tokens(req.request)
        else:
            kind = "invalid_request"
        tokens_out = planned_output(f"{seed}|{batch_id}|{pid}", req.request, tokens_in)
        planned.append(PlannedRequest(pid, kind, tokens_in, tokens_out))
    timeline = plan_timeline(
        now=sim.now(),
        batch_id=batch_id,
        seed=seed,
        faults=faults,
        requests=planned,
        rejected=failure is not None,
        finalizing=True,
        window_seconds=WINDOW_SECONDS,
    )
    display = spec.get("displayName")
    return GeminiBatch(
        id=batch_id,
        model=model,
        display_name=str(display) if display else f"batch-{batch_id}",
        input_file=str(file_name) if file_name is not None else None,
        requests=requests,
        tag=tag,
        faults=faults,
        seed=seed,
        timeline=timeline,
        failure_message=failure,
    )
