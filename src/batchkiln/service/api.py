"""The HTTP API of `kiln serve`: `create_api(app) -> FastAPI`.

Routes (JSON unless said; every error is RFC 9457 `application/problem+json` with
`type` = `urn:batchkiln:problem:<kind>`, `kind` = the `batchkiln.errors` class's):

    GET  /healthz                      {"status": "ok"}                       process up
    GET  /readyz                       {"status": "ready", "revision": ...}   store, migrations
    POST /v1/jobs                      Job, 201 (200 on a replay)   Idempotency-Key REQUIRED
         multipart/form-data: `file` (JSONL) + option fields, or application/json:
         {"provider", "model"?, "endpoint"?, "requests": [...], "budget_usd"?,
          "max_attempts"?, "auto_retry"?, "delete_vendor_files"?, "callback_url"?,
          "callback_secret"?, "callback_events"?: "final"|"all"}
    GET  /v1/jobs?state=&provider=&limit=&cursor=   {"data": [JobSummary], "next_cursor"}
    GET  /v1/jobs/{id}                 Job
    GET  /v1/jobs/{id}/results?format=flat|vendor   JSONL stream, one line per request
    GET  /v1/jobs/{id}/events?after=&limit=         {"data": [Event], "next_cursor"}
    POST /v1/jobs/{id}/cancel          {"cancelled": [batch ids], "job": Job}  (Idempotency-Key
    POST /v1/jobs/{id}/retry           {"created": [batch ids], "job": Job}     optional on both)
    GET  /v1/events/stream?after=&job_id=&limit=    text/event-stream (Last-Event-ID resumes)
    POST /webhooks/openai              vendor webhooks in (Standard Webhooks signature only)
    GET  /metrics                      Prometheus text
    /                                  the dashboard (`batchkiln.dashboard.mount_dashboard`)

Job (see `service.resources` for every field):

    {"id", "key", "state", "status": "active"|"done", "provider", "model", "endpoint",
     "request_count", "counts": {"succeeded": n, "failed": n, "pending": n, ...},
     "outcome", "options",
     "batches": [{"id", "parent_id", "state", "next_action", "attempt", "shard",
                  "request_count", "vendor_id", "vendor_status", "vendor_succeeded",
                  "vendor_failed", "next_check_at", "check_attempt", "vendor_calls",
                  "detected_at", "detection_latency",
                  "lease": {"owner", "expires_at"}, "created_at", "updated_at"}],
     "cost": {"estimate": Money, "retry_estimate": Money, "actual": Money,
              "estimate_usd", "actual_usd", "standard_usd", "batches_not_costed_yet"},
     "next_check_at", "callback": {"url", "events", "disabled", "own_secret"} | null,
     "created_at", "updated_at", "finished_at"}

`state` is "done" when the Job is finished, "awaiting_retry" when failures wait for
a manual retry, else the least advanced live Batch state (lifecycle.py words).
Times are Unix seconds (the engine's clock).

SSE events (`GET /v1/events/stream`), one per audit event, in id order:

    id: 42
    event: audit
    data: {"id": 42, "at", "kind", "job_id", "batch_id", "from_state", "to_state",
           "reason", "worker", "data"}

Auth: `Authorization: Bearer <token>` (KILN_API_TOKENS) on /v1 and /metrics when
tokens are configured; /healthz, /readyz and the webhook receiver take none.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from alembic.script import ScriptDirectory
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from standardwebhooks import Webhook
from starlette.responses import Response

from batchkiln.app import App
from batchkiln.clock import Clock
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.errors import InputError, LineError
from batchkiln.export import ExportFormat, iter_results
from batchkiln.service import problems
from batchkiln.service.auth import Caller, Tokens
from batchkiln.service.callbacks import CallbackRefused, CallbackRules
from batchkiln.service.events import follow, parse_last_event_id
from batchkiln.service.idempotency import (
    HEADER,
    Idempotency,
    Outcome,
    derived_job_key,
    parse_key,
)
from batchkiln.service.metrics import CONTENT_TYPE, Metrics
from batchkiln.service.problems import Problem, ProblemError, responses
from batchkiln.service.resources import (
    CancelResult,
    EventPage,
    Health,
    Job,
    JobPage,
    JobSummary,
    RetryResult,
    event_resource,
    job_resource,
)
from batchkiln.service.uploads import SubmitOptions, Upload, read_submission
from batchkiln.store.database import alembic_config

JSONL = "application/x-ndjson"


class Service:
    """What the routes share: the App, the policies, and the worker's wake-up."""

    def __init__(
        self,
        app: App,
        *,
        clock: Clock | None = None,
        wake: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        settings = app.settings
        self.app = app
        self.clock = clock or app.clock
        self.wake = wake or (lambda: None)
        self.tokens = Tokens([t.get_secret_value() for t in settings.api_tokens])
        self.rules = CallbackRules(
            allow_loopback=settings.callback_allow_loopback,
            allow_private=settings.callback_allow_private,
        )
        self.idempotency = Idempotency(
            app.store, self.clock, retention_seconds=settings.idempotency_retention_hours * 3600
        )
        self.metrics = metrics or Metrics()
        self.default_secret = (
            settings.callback_secret.get_secret_value() if settings.callback_secret else None
        )
        self.head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    # -- submission -------------------------------------------------------------

    def check_options(self, options: SubmitOptions) -> None:
        if options.provider not in self.app.providers:
            raise ProblemError(
                422,
                "request_validation",
                f"provider {options.provider!r} is not configured here"
                f" (one of: {', '.join(self.app.providers)})",
            )
        if options.callback_url is None:
            if options.callback_secret is not None:
                raise ProblemError(
                    422, "request_validation", "callback_secret given without callback_url"
                )
            return
        try:
            self.rules.check(options.callback_url)
        except CallbackRefused as exc:
            raise ProblemError(422, "callback_url", str(exc)) from None
        secret = options.callback_secret or self.default_secret
        if not secret:
            raise ProblemError(
                422,
                "callback_url",
                "callback_url needs a signing secret: set KILN_CALLBACK_SECRET on the service"
                " or send callback_secret (a whsec_ key)",
            )
        try:
            Webhook(secret)
        except Exception:  # the library raises several types on a bad secret
            raise ProblemError(
                422, "callback_url", "callback_secret is not a valid whsec_ secret"
            ) from None

    async def submit(self, caller: Caller, key: str, upload: Upload) -> Outcome:
        options = upload.options
        self.check_options(options)
        job_options = JobOptions(
            retry=RetryPolicy(max_attempts=options.max_attempts, auto_retry=options.auto_retry),
            budget_usd=options.budget_usd,
            delete_vendor_files=options.delete_vendor_files,
        )
        try:
            submitted = await self.app.kiln.submit(
                upload.path,
                provider=options.provider,
                model=options.model,
                endpoint=options.endpoint,
                key=derived_job_key(caller.scope, key),
                options=job_options,
            )
        except InputError as exc:  # name the upload, not the spool file
            raise InputError(
                [LineError(upload.display, e.line, e.reason) for e in exc.errors], exc.truncated
            ) from None
        job = submitted.job
        if options.callback_url is not None:
            await self.app.store.outbox.register(
                job.id,
                url=options.callback_url,
                secret=options.callback_secret,
                events=options.callback_events,
            )
        self.wake()
        resource = await job_resource(self.app, await self.app.kiln.status(job.id))
        return Outcome(201 if submitted.created else 200, _json(resource), job.id)

    async def job(self, job_id: str) -> Job:
        return await job_resource(self.app, await self.app.kiln.status(job_id))


def _json(model: Any) -> bytes:
    return orjson.dumps(model.model_dump(mode="json"))


def _cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created_at, job_id])).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[float, str]:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(raw[0]), str(raw[1])
    except (binascii.Error, ValueError, TypeError, IndexError, orjson.JSONDecodeError):
        raise ProblemError(422, "request_validation", "cursor is not one this API gave") from None


_bearer = HTTPBearer(auto_error=False, description="a token from KILN_API_TOKENS")


def _caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    svc: Service = request.app.state.service
    return svc.tokens.caller(request)


Auth = Annotated[Caller, Depends(_caller)]
KeyHeader = Annotated[
    str | None,
    Header(alias=HEADER, description='1-255 printable ASCII; quoted ("...", RFC 8941) or bare'),
]


SUBMIT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "provider"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "JSONL"},
                    **{
                        name: {"type": "string", "description": info.description or ""}
                        for name, info in SubmitOptions.model_fields.items()
                    },
                },
            }
        },
        "application/json": {"schema": {"$ref": "#/components/schemas/InlineJob"}},
    },
}


#: OpenAPI links from a created Job to what can be done with it (schemathesis follows them)
JOB_LINKS: dict[str, Any] = {
    name: {"operationId": name, "parameters": {"job_id": "$response.body#/id"}}
    for name in ("get_job", "job_results", "job_events", "cancel_job", "retry_job")
}


#: the per-batch cancel results that mean the cancel took (or is recorded to take) effect
_CANCEL_ACTED = frozenset({"cancelled", "cancelling", "recorded"})


def create_api(
    app: App,
    *,
    clock: Clock | None = None,
    wake: Callable[[], None] | None = None,
    metrics: Metrics | None = None,
    dashboard: bool = True,
) -> FastAPI:
    """The API on `app`. `clock` times idempotency records and the outbox (default the
    App's); `wake` is called when a job was submitted or changed (the worker's wake)."""
    svc = Service(app, clock=clock, wake=wake, metrics=metrics)
    api = FastAPI(
        title="batchkiln",
        version="1",
        summary="LLM batch jobs through their whole lifecycle, with Idempotency-Key semantics",
        docs_url="/docs",
        redoc_url=None,
    )
    api.state.service = svc
    problems.install(api)

    @api.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        svc.metrics.http.labels(request.method, name, str(response.status_code)).inc()
        return response

    @api.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @api.get("/readyz", response_model=Health, tags=["ops"], responses=responses(503))
    async def readyz() -> Response:
        """The store is reachable and migrated to the code's schema."""
        try:
            revision = await app.store.listing.revision()
        except Exception as exc:  # any driver error means "not ready"
            return problems.problem_response(
                503, "store", f"store unreachable: {type(exc).__name__}"
            )
        if revision != svc.head:
            return problems.problem_response(
                503, "store", f"store at migration {revision}, code expects {svc.head}"
            )
        return Response(
            _json(Health(status="ready", revision=revision)), media_type="application/json"
        )

    @api.post(
        "/v1/jobs",
        status_code=201,
        response_model=Job,
        tags=["jobs"],
        responses={
            201: {"links": JOB_LINKS},
            200: {
                "model": Job,
                "description": "replay (Idempotent-Replayed: true) or existing job",
                "links": JOB_LINKS,
            },
            **responses(400, 401, 409, 413, 415, 422),
        },
        openapi_extra={"requestBody": SUBMIT_BODY},
    )
    async def create_job(
        request: Request, who: Auth, idempotency_key: KeyHeader = None
    ) -> Response:
        """Submit requests as a Job (multipart JSONL upload, or inline JSON).

        Idempotency-Key is required: the same key and payload replay the stored
        answer; another payload is 422; while the first is in flight, 409."""
        key = parse_key(idempotency_key)
        if key is None:
            raise ProblemError(
                400,
                "idempotency_key_missing",
                "POST /v1/jobs needs an Idempotency-Key header (e.g. a UUID), so a retried"
                " request never creates a second job",
            )
        return await svc.idempotency.run(
            scope=who.scope,
            key=key,
            method="POST",
            path="/v1/jobs",
            read=lambda: read_submission(request, app.settings.upload_dir),
            handle=lambda upload: svc.submit(who, key, upload),
            cleanup=lambda upload: upload.cleanup(),
        )

    @api.get("/v1/jobs", response_model=JobPage, tags=["jobs"], responses=responses(401, 422))
    async def list_jobs(
        _who: Auth,
        state: Annotated[str | None, Query(max_length=40, description="Job state")] = None,
        provider: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
    ) -> JobPage:
        """Jobs, newest first; filter by state and provider; follow next_cursor."""
        before = _uncursor(cursor) if cursor else None
        status = state if state in ("done", "awaiting_retry") else ("active" if state else None)
        found: list[JobSummary] = []
        next_cursor = None
        while len(found) < limit:
            rows = await app.store.listing.jobs_page(
                provider=provider, status=status, before=before, limit=min(200, limit * 2)
            )
            for row in rows:
                before = (row.created_at, row.id)
                word = (
                    str(row.status)
                    if row.status != "active"
                    else (await app.kiln.status(row.id)).state
                )
                if state is None or word == state:
                    found.append(
                        JobSummary(
                            id=row.id,
                            key=row.key,
                            state=word,
                            status=row.status,
                            provider=row.provider,
                            model=row.model,
                            request_count=row.request_count,
                            created_at=row.created_at,
                            updated_at=row.updated_at,
                            finished_at=row.finished_at,
                        )
                    )
                    if len(found) == limit:
                        next_cursor = _cursor(*before)
                        break
            if len(rows) < min(200, limit * 2):
                break
        return JobPage(data=found, next_cursor=next_cursor)

    @api.get(
        "/v1/jobs/{job_id}",
        response_model=Job,
        tags=["jobs"],
        responses=responses(401, 404),
        operation_id="get_job",
    )
    async def get_job(job_id: str, _who: Auth) -> Job:
        """One Job with its batches, counts and costs."""
        return await svc.job(job_id)

    @api.get(
        "/v1/jobs/{job_id}/results",
        tags=["jobs"],
        operation_id="job_results",
        responses={
            200: {"description": "one JSON line per request", "content": {JSONL: {}}},
            **responses(401, 404),
        },
    )
    async def results(
        job_id: str, _who: Auth, format: ExportFormat = ExportFormat.FLAT
    ) -> StreamingResponse:
        """Every request's result, in input order, under its custom_id (streamed)."""
        job = await app.store.jobs.get(job_id)

        async def lines() -> AsyncIterator[bytes]:
            chunk: list[bytes] = []
            async for item in iter_results(app.store, job.id, format):
                chunk.append(orjson.dumps(item) + b"\n")
                if len(chunk) >= 500:
                    yield b"".join(chunk)
                    chunk = []
            if chunk:
                yield b"".join(chunk)

        return StreamingResponse(lines(), media_type=JSONL)

    @api.get(
        "/v1/jobs/{job_id}/events",
        operation_id="job_events",
        response_model=EventPage,
        tags=["jobs"],
        responses=responses(401, 404),
    )
    async def job_events(
        job_id: str,
        _who: Auth,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventPage:
        """The Job's audit timeline, oldest first; follow next_cursor (an event id)."""
        job = await app.store.jobs.get(job_id)
        page = await app.store.listing.events_after(after, job_id=job.id, limit=limit)
        return EventPage(
            data=[event_resource(e) for e in page],
            next_cursor=str(page[-1].id) if len(page) == limit else None,
        )

    async def job_action(who: Caller, key_header: str | None, job_id: str, action: str) -> Response:
        async def act(_payload: _NoBody) -> Outcome:
            if action == "cancel":
                reports = await app.kiln.cancel(job_id)
                acted = [r.batch_id for r in reports if r.action in _CANCEL_ACTED]
                svc.wake()
                body = _json(CancelResult(cancelled=acted, job=await svc.job(job_id)))
            else:
                ids = await app.kiln.retry(job_id)
                svc.wake()
                body = _json(RetryResult(created=ids, job=await svc.job(job_id)))
            return Outcome(200, body, None)

        job = await app.store.jobs.get(job_id)  # 404 before anything else
        key = parse_key(key_header)
        path = f"/v1/jobs/{job.id}/{action}"
        if key is None:
            outcome = await act(_NoBody(path))
            return Response(outcome.body, media_type="application/json")

        async def read() -> _NoBody:
            return _NoBody(path)

        return await svc.idempotency.run(
            scope=who.scope, key=key, method="POST", path=path, read=read, handle=act
        )

    @api.post(
        "/v1/jobs/{job_id}/cancel",
        operation_id="cancel_job",
        response_model=CancelResult,
        tags=["jobs"],
        responses=responses(400, 401, 404, 409, 422, 502),
    )
    async def cancel(job_id: str, who: Auth, idempotency_key: KeyHeader = None) -> Response:
        """Ask the vendor to cancel every live batch (finished results are kept)."""
        return await job_action(who, idempotency_key, job_id, "cancel")

    @api.post(
        "/v1/jobs/{job_id}/retry",
        operation_id="retry_job",
        response_model=RetryResult,
        tags=["jobs"],
        responses=responses(400, 401, 404, 409, 422, 502),
    )
    async def retry(job_id: str, who: Auth, idempotency_key: KeyHeader = None) -> Response:
        """Start retry children for failures waiting on a manual retry (idempotent)."""
        return await job_action(who, idempotency_key, job_id, "retry")

    @api.get(
        "/v1/events/stream",
        tags=["events"],
        responses={
            200: {"description": "server-sent events", "content": {"text/event-stream": {}}},
            **responses(401),
        },
    )
    async def stream(
        _who: Auth,
        after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        job_id: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int | None, Query(ge=1, le=100000, description="close after N")] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Every audit event (transitions, job changes) live; Last-Event-ID resumes."""
        start = parse_last_event_id(last_event_id, after)
        return StreamingResponse(
            follow(app.store, after=start, job_id=job_id, limit=limit),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get(
        "/metrics",
        tags=["ops"],
        responses={200: {"description": "Prometheus text", "content": {"text/plain": {}}}},
    )
    async def prometheus(_who: Auth) -> Response:
        """Prometheus metrics (see service.metrics for the list)."""
        figures = await app.store.listing.figures()
        return Response(svc.metrics.render(figures), media_type=CONTENT_TYPE)

    _mount_receivers(api, svc)
    if dashboard:
        from batchkiln.dashboard import mount_dashboard

        mount_dashboard(api, app)
    _document(api)
    return api


class _NoBody:
    """The payload of a POST without a body: its fingerprint is its route."""

    def __init__(self, path: str) -> None:
        self.fingerprint = "route:" + path


def _mount_receivers(api: FastAPI, svc: Service) -> None:
    """The vendor webhook receiver (signature only, no bearer token)."""
    from batchkiln.service.webhooks import DEFAULT_PATH, webhook_app

    secrets = svc.app.settings.all_webhook_secrets
    if not secrets:
        return
    receiver = webhook_app(svc.app.store, secrets, on_due=svc.wake)
    endpoint = receiver.routes[0].endpoint  # type: ignore[attr-defined]

    @api.post(
        DEFAULT_PATH,
        tags=["webhooks"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        responses={
            200: {"description": "accepted (or a duplicate)", "content": {"application/json": {}}},
            400: {"description": "bad signature or payload", "content": {"application/json": {}}},
            413: {
                "description": "body over the receiver's cap",
                "content": {"application/json": {}},
            },
        },
    )
    async def openai_webhook(request: Request) -> Response:
        """OpenAI batch webhooks (Standard Webhooks): only marks the batch due."""
        response: Response = await endpoint(request)
        return response


def _document(api: FastAPI) -> None:
    """Add the Problem and InlineJob schemas the hand-written entries refer to."""
    from batchkiln.service.uploads import InlineJob

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = get_openapi(
            title=api.title, version=api.version, summary=api.summary, routes=api.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, InlineJob):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in found.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = found
        # FastAPI documents its own 422 (HTTPValidationError); ours is a Problem.
        problem = responses(422)[422]
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answers = operation.get("responses", {})
                if "422" in answers:
                    answers["422"] = problem
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
