"""The dashboard's routes: two pages, their static files, and the helper API.

Pages (`/`, `/jobs/{id}`) and static files (`/dashboard/static/...`) hold no data,
so they are public; they are plain HTML, CSS and JavaScript modules shipped in the
package (no build step, nothing from the internet). Everything with data is JSON
under `/dashboard/api/`, behind the same bearer tokens as the API when tokens are
configured. The page also uses the service's own routes: the event stream
(`/v1/events/stream`) for live updates and `POST /v1/jobs/{id}/retry` for Retry.

Routes:
- `GET  /dashboard/api/auth`           {"required", "accepted"}: is a token needed, is this one good
- `GET  /dashboard/api/lifecycle`      states, arrows, colours, texts, backoff schedule, mode
- `GET  /dashboard/api/summary[?job=]` counts per state, batches per state, cost per outcome
- `GET  /dashboard/api/jobs?status=&provider=&state=`  the job list, newest first
- `GET  /dashboard/api/jobs/{id}`      one job: lineage, timeline, costs, requests, hygiene
- `GET  /dashboard/api/scenarios`      the seed's practice scenarios
- `POST /dashboard/api/scenarios/{n}`  launch one as a real job (Idempotency-Key required)
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from batchkiln.dashboard import queries, views
from batchkiln.dashboard.launch import Launcher, ScenarioUnavailable, catalogue
from batchkiln.errors import InputError, InvalidKey, KilnError, NotFound
from batchkiln.service.idempotency import parse_key
from batchkiln.service.problems import TYPE_PREFIX

if TYPE_CHECKING:
    from fastapi import FastAPI

    from batchkiln.app import App

STATIC = Path(__file__).parent / "static"
# No inline script or style can run: data that slipped into markup would stay inert.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json answers a route can give."""
    words = {
        400: "Idempotency-Key missing or malformed",
        401: "a bearer token is required (KILN_API_TOKENS)",
        404: "no such job or scenario",
        409: "scenarios need the built-in simulator",
        422: "the scenario could not be submitted",
    }
    schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    }
    return {
        code: {
            "description": words[code],
            "content": {"application/problem+json": {"schema": schema}},
        }
        for code in codes
    }


def problem(status: int, title: str, detail: str, kind: str) -> JSONResponse:
    """An RFC 9457 answer with the service's type names (urn:batchkiln:problem:<kind>)."""
    return JSONResponse(
        {"type": TYPE_PREFIX + kind, "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def configured_tokens(settings: Any) -> list[str]:
    """The bearer tokens the service accepts: `KILN_API_TOKENS` entries are
    `NAME:TOKEN` or a bare `TOKEN` (the service's rule, in batchkiln.service.auth)."""
    out = []
    for entry in getattr(settings, "api_tokens", None) or []:
        raw = entry.get_secret_value() if hasattr(entry, "get_secret_value") else str(entry)
        _name, sep, token = raw.partition(":")
        token = (token if sep else raw).strip()
        if token:
            out.append(token)
    return out


class _Unauthorized(Exception):
    pass


def _wake(request: Request) -> None:
    """Cut the served worker's idle wait short: a job was just submitted. The service
    keeps its wake-up on `api.state.service` (batchkiln.service.api)."""
    service = getattr(request.app.state, "service", None)
    wake = getattr(service, "wake", None)
    if callable(wake):
        wake()


def mount(api: FastAPI, app: App) -> None:
    launcher = Launcher(app)
    tokens = configured_tokens(app.settings)

    def authorized(request: Request) -> None:
        if not tokens:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and any(
            hmac.compare_digest(given.encode(), t.encode()) for t in tokens
        ):
            return
        raise _Unauthorized

    router = APIRouter(prefix="/dashboard/api", dependencies=[Depends(authorized)])

    @api.get(
        "/dashboard/api/auth", summary="Whether a token is needed, and if the one sent is good"
    )
    async def auth(request: Request) -> dict[str, bool]:
        # Never a 401, so the page can ask for the token before its first data request
        # (a refused fetch is logged by the browser as an error).
        try:
            authorized(request)
        except _Unauthorized:
            return {"required": True, "accepted": False}
        return {"required": bool(tokens), "accepted": True}

    @router.get(
        "/lifecycle", summary="The lifecycle as the dashboard draws it", responses=_problems(401)
    )
    async def lifecycle() -> dict[str, Any]:
        return views.lifecycle_view(app)

    @router.get(
        "/summary", summary="Live counts, batches and costs per state", responses=_problems(401)
    )
    async def summary(job: str | None = None) -> dict[str, Any]:
        return await views.summary_view(app, job_id=job)

    @router.get(
        "/jobs",
        summary="Jobs, newest first, filtered by state and provider",
        responses=_problems(401),
    )
    async def jobs(
        status: str | None = None,
        provider: str | None = None,
        state: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        limit = max(1, min(limit, 200))
        async with app.store.engine.connect() as conn:  # one transaction for the list
            rows = await queries.list_jobs(
                conn, status=status or None, provider=provider or None, limit=limit
            )
            words = await queries.job_states(conn, rows)
            providers = await queries.providers_in_use(conn)
        out = []
        for row in rows:
            word, counts = words[str(row["id"])]
            if state and word != state:
                continue
            out.append({**row, "state": word, "counts": counts})
        return {
            "jobs": out,
            "providers": providers,
            "now": app.clock.now(),
        }

    @router.get(
        "/jobs/{job_id}", summary="One job as the job page shows it", responses=_problems(401, 404)
    )
    async def job(job_id: str) -> Any:
        try:
            return await views.job_view(app, job_id)
        except NotFound as exc:
            return problem(404, "Not found", str(exc), exc.kind)

    @router.get("/scenarios", summary="The seed's practice scenarios", responses=_problems(401))
    async def scenarios() -> dict[str, Any]:
        return {"scenarios": catalogue(), "simulator": app.simulator is not None}

    @router.post(
        "/scenarios/{number}",
        summary="Launch a practice scenario as a real job",
        status_code=201,
        responses={
            200: {"description": "the same Idempotency-Key: the same job"},
            **_problems(400, 401, 404, 409, 422),
        },
    )
    async def launch(number: int, request: Request) -> Any:
        # the API's own rules for the header (quoted or not, 1-255 printable ASCII)
        try:
            key = parse_key(request.headers.get("idempotency-key"))
        except InvalidKey as exc:
            return problem(400, "Bad Idempotency-Key", str(exc), exc.kind)
        if key is None:
            return problem(
                400,
                "Idempotency-Key required",
                "send an Idempotency-Key header: the same key launches the same job",
                "idempotency_key_missing",
            )
        try:
            out = await launcher.launch(number, key)
        except NotFound as exc:
            return problem(404, "Not found", str(exc), exc.kind)
        except ScenarioUnavailable as exc:
            return problem(409, "No simulator", str(exc), exc.kind)
        except (InputError, KilnError) as exc:
            return problem(422, "Cannot launch", str(exc), exc.kind)
        _wake(request)
        return JSONResponse(out, status_code=201 if out.get("created") else 200)

    api.include_router(router)

    @api.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc: _Unauthorized) -> Response:
        response = problem(
            401, "Unauthorized", "send Authorization: Bearer <token>", "unauthorized"
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC / name, media_type="text/html", headers=_PAGE_HEADERS)

    @api.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return page("index.html")

    @api.get("/jobs/{job_id}", include_in_schema=False)
    async def job_page(job_id: str) -> FileResponse:
        del job_id  # the page reads it from its own address
        return page("job.html")

    api.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
