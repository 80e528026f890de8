"""The dashboard's routes without a browser (httpx over ASGITransport, fake clock):
the lifecycle the page draws is the package's table, the launch of a scenario is a
real, idempotent job, the Done hygiene and costs come from the store, pages are
public but data needs the token, and the static files hold no markup sinks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from batchkiln import App, FakeClock, Settings, Store
from batchkiln.dashboard import queries, views
from batchkiln.dashboard.launch import Launcher
from batchkiln.dashboard.routes import STATIC
from batchkiln.lifecycle import STATE_INFO, STATE_LOOK, TRANSITIONS, State
from batchkiln.service.api import create_api


@asynccontextmanager
async def served(tmp: Path, **overrides: Any) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    settings = Settings.load().model_copy(update={"api_tokens": [], **overrides})
    clock = FakeClock()
    async with App.simulated(
        settings, clock=clock, database_url=f"sqlite:///{tmp}/dash.db", seed=3
    ) as app:
        api = create_api(app)
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln.test") as client:
            yield app, client


async def test_lifecycle_is_the_package_table(tmp_path: Path) -> None:
    """Every state with its texts and look from lifecycle.py; the arrows drawn plus the
    shortcuts left out are exactly the transition table; Retry leaves Partial and
    Expired; the schedule is the served TrackingPolicy's."""
    async with served(tmp_path) as (app, client):
        data = (await client.get("/dashboard/api/lifecycle")).json()
    states = {s["id"]: s for s in data["states"]}
    assert set(states) == {s.value for s in State}
    for state in State:
        info, look = STATE_INFO[state], STATE_LOOK[state]
        assert states[state.value]["meaning"] == info.meaning
        assert states[state.value]["next_action"] == info.next_action
        assert states[state.value]["label"] == look.label
        assert states[state.value]["verdict"] == look.verdict
    pairs = {(e["from"], e["to"]) for e in data["edges"] if "retry" not in (e["from"], e["to"])}
    pairs |= {(e["from"], e["to"]) for e in data["shortcuts"]}
    assert pairs == {(s.value, t.value) for (s, _), t in TRANSITIONS.items()}
    into_retry = {e["from"] for e in data["edges"] if e["to"] == "retry"}
    assert into_retry == {"partial", "expired"}
    assert ("retry", "pending") in {(e["from"], e["to"]) for e in data["edges"]}
    assert data["tracking"]["mode"] == app.tracking.mode.value
    assert data["tracking"]["poll"] == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0]
    assert data["tracking"]["poll"][-1] == app.tracking.poll.cap


async def test_scenario_launch_is_a_real_idempotent_job(tmp_path: Path) -> None:
    """A launch needs an Idempotency-Key; the same key gives the same job; the job is in
    the served store and, run to the end, waits with its 5 failures for a retry."""
    async with served(tmp_path) as (app, client):
        missing = await client.post("/dashboard/api/scenarios/2")
        assert missing.status_code == 400
        assert missing.headers["content-type"].startswith("application/problem+json")
        bad = await client.post("/dashboard/api/scenarios/2", headers={"Idempotency-Key": '"x'})
        assert bad.status_code == 400
        assert bad.json()["type"] == "urn:batchkiln:problem:invalid_key"
        assert (
            await client.post("/dashboard/api/scenarios/9", headers={"Idempotency-Key": "x"})
        ).status_code == 404
        first = await client.post("/dashboard/api/scenarios/2", headers={"Idempotency-Key": "k"})
        again = await client.post("/dashboard/api/scenarios/2", headers={"Idempotency-Key": '"k"'})
        assert (first.status_code, again.status_code) == (201, 200)
        job_id = first.json()["job_id"]
        assert again.json()["job_id"] == job_id
        await app.kiln.run_until_done(job_id)
        view = (await client.get(f"/dashboard/api/jobs/{job_id}")).json()
        assert view["job"]["state"] == "awaiting_retry" and view["failures_waiting"] == 5
        assert "partial" in view["batches"][0]["walked"]
        assert view["hygiene"] is None
        waiting = (await client.get("/dashboard/api/summary")).json()["awaiting_retry"]
        assert waiting == [{"job_id": job_id, "waiting": 5}]
        retried = await client.post(f"/v1/jobs/{job_id}/retry", headers={"Idempotency-Key": "r"})
        assert retried.status_code in (200, 201), retried.text
        await app.kiln.run_until_done(job_id)
        view = (await client.get(f"/dashboard/api/jobs/{job_id}")).json()
        summary = (await client.get("/dashboard/api/summary")).json()
    assert view["job"]["state"] == "done"
    child = view["batches"][1]
    assert child["parent_id"] == view["batches"][0]["id"] and child["requests"] == 5
    assert child["walked"][-3:] == ["completed", "downloading", "done"]
    hygiene = view["hygiene"]
    assert hygiene["key"] == job_id or hygiene["key"].startswith("dashboard-scenario-2-")
    assert hygiene["key_archived_until"] > hygiene["done_at"]
    assert len(hygiene["cost_records"]) == 2 and hygiene["done_event_id"] > 0
    assert view["costs"]["actual_usd"] < view["costs"]["standard_usd"]
    assert any(e["failure"] and e["to_state"] == "partial" for e in view["events"])
    assert summary["counts"] == {"done": 2}
    assert summary["costs"]["partial"]["batches"] == 1
    assert summary["costs"]["completed"]["batches"] == 1
    assert summary["hygiene"]["job_id"] == job_id


async def test_scenarios_need_the_simulator(tmp_path: Path) -> None:
    """Served on real vendors, a launch is refused with a clear problem, nothing stored."""
    settings = Settings.load().model_copy(
        update={"api_tokens": [], "database_url": f"sqlite:///{tmp_path}/real.db"}
    )
    async with App.open(settings, clock=FakeClock()) as app:
        transport = httpx.ASGITransport(app=create_api(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln.test") as client:
            r = await client.post("/dashboard/api/scenarios/1", headers={"Idempotency-Key": "k"})
            assert r.status_code == 409
            assert "kiln serve --simulator" in r.json()["detail"]
            assert (await client.get("/dashboard/api/jobs")).json()["jobs"] == []


async def test_data_needs_the_token_pages_do_not(tmp_path: Path) -> None:
    """With KILN_API_TOKENS set the dashboard's data routes want the bearer token; the
    pages and static files (no data in them) do not, and carry a strict CSP."""
    async with served(tmp_path, api_tokens=[SecretStr("ops:s3cret")]) as (_app, client):
        assert (await client.get("/dashboard/api/lifecycle")).status_code == 401
        ok = await client.get(
            "/dashboard/api/lifecycle", headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        wrong = await client.get(
            "/dashboard/api/summary", headers={"Authorization": "Bearer ops:s3cret"}
        )
        assert wrong.status_code == 401
        for path in ("/", "/jobs/job_x"):
            page = await client.get(path)
            assert page.status_code == 200 and "<svg" not in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/dashboard/static/js/main.js")).status_code == 200


def test_static_files_have_no_markup_sinks_and_no_remote_urls() -> None:
    """The page builds everything with textContent: no innerHTML-like sink, no inline
    script or handler in the HTML, and nothing loaded from another origin."""
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(")
    remote = re.compile(r"https?://(?!www\.w3\.org/2000/svg)")
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert any(p.suffix == ".js" for p in files)
    for path in files:
        text = path.read_text()
        assert not sinks.search(text), path
        assert not remote.search(text), path
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
            assert not re.search(r"\son[a-z]+=", text), path


async def test_views_on_both_databases(store: Store, clock: FakeClock) -> None:
    """The dashboard's own queries (window functions, grouped costs, retry waits) answer
    the same on SQLite and PostgreSQL."""
    settings = Settings.load().model_copy(update={"api_tokens": []})
    async with App.simulated(settings, clock=clock, store=store, seed=5) as app:
        out = await Launcher(app).launch(2, "both-databases")
        job_id = out["job_id"]
        await app.kiln.run_until_done(job_id)
        summary = await views.summary_view(app)
        assert summary["counts"] == {"done": 1}
        assert summary["awaiting_retry"] == [{"job_id": job_id, "waiting": 5}]
        assert summary["costs"]["partial"]["batches"] == 1
        assert summary["batches"]["done"][0]["job_id"] == job_id
        view = await views.job_view(app, job_id)
        assert view["failures_waiting"] == 5
        assert [r["outcome"] for r in view["requests"][:5]] == [None] * 5
        status = await app.kiln.status(job_id)
        async with app.store.engine.connect() as conn:
            listed = await queries.list_jobs(conn)
            assert listed[0]["id"] == job_id and listed[0]["status"] != "done"
            assert await queries.list_jobs(conn, status="done") == []
            words = await queries.job_states(conn, listed)
            assert words[job_id] == (status.state, status.counts)  # the engine's own word
            assert await queries.list_jobs(conn, provider="openai") == []
