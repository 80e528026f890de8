"""`kiln serve --simulator` as a real process serves the dashboard: the page at `/`
and `/jobs/{id}` (with its CSP), its static modules, and a scenario launched over
HTTP that the served worker runs to the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

KILN = Path(sys.executable).with_name("kiln")


def _read(tmp: Path) -> str:
    return (tmp / "serve.log").read_text()


@pytest.fixture
def kiln_serve(tmp_path: Path) -> Iterator[str]:
    """`kiln serve --simulator` on a free loopback port; yields its URL."""
    env = {
        **os.environ,
        "KILN_DATABASE_URL": f"sqlite:///{tmp_path}/kiln.db",
        "KILN_API_TOKENS": "",
    }
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [str(KILN), "serve", "--simulator", "--port", "0", "--speed", "2000"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 90
        url = None
        while url is None:
            assert proc.poll() is None, _read(tmp_path)
            assert time.monotonic() < deadline, "kiln serve did not say where it listens"
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", _read(tmp_path))
            url = found.group(1) if found else None
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_kiln_serve_serves_the_dashboard(kiln_serve: str) -> None:
    """The pages, the modules and a launched scenario, from the real command."""
    with httpx.Client(base_url=kiln_serve, timeout=60) as client:
        for path in ("/", "/jobs/job_anything"):
            page = client.get(path)
            assert page.status_code == 200
            assert '<script type="module" src="/dashboard/static/js/' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/dashboard/static/js/diagram.js").status_code == 200
        lifecycle = client.get("/dashboard/api/lifecycle").json()
        assert lifecycle["simulator"] is True
        launched = client.post("/dashboard/api/scenarios/1", headers={"Idempotency-Key": "p"})
        assert launched.status_code == 201, launched.text
        job_id = launched.json()["job_id"]
        deadline = time.monotonic() + 90
        while client.get(f"/dashboard/api/jobs/{job_id}").json()["job"]["state"] != "done":
            assert time.monotonic() < deadline, "the served worker did not finish the job"
            time.sleep(0.2)
        assert client.get("/dashboard/api/summary").json()["hygiene"]["job_id"] == job_id
