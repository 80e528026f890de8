"""Property-based checks of the OpenAPI document against the running service
(schemathesis, a bounded number of examples): no 5xx, and every response matches
the documented status codes, content types and schemas."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from batchkiln import App, FakeClock, Settings
from batchkiln.service.api import create_api
from batchkiln.service.serve import serving

from .conftest import SECRET

MY_ROUTES = r"^/(v1/jobs|healthz|readyz|metrics|webhooks)"  # the stream never ends: not here


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service on the simulator, served by uvicorn in a thread of its own (the
    schemathesis client is synchronous)."""
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    ready = threading.Event()
    stop = threading.Event()
    found: dict[str, str] = {}

    async def main() -> None:
        configured = Settings.load(
            database_url=f"sqlite:///{tmp}/kiln.db",
            callback_secret=SECRET,
            callback_allow_loopback=True,
            webhook_secrets=SECRET,
            upload_dir=tmp,
        )
        async with (
            App.simulated(configured, clock=FakeClock(), seed=3) as app,
            serving(create_api(app), port=0) as url,
        ):
            found["url"] = url
            ready.set()
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(60), "the service did not start"
    yield found["url"]
    stop.set()
    thread.join(30)


SEEN: set[tuple[str, int]] = set()
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _fuzz(operation: Any) -> Any:
    """A hypothesis test of one operation."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        SEEN.add((operation.label, response.status_code))

    return check


def test_api_conforms_to_its_openapi_document(live_url: str) -> None:
    """No 5xx; status, content type and body as documented, on every operation."""
    # schemathesis' own pytest plugin does not run under pytest 9 here, so each
    # operation's strategy is driven by hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json").include(path_regex=MY_ROUTES)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        _fuzz(operation)()
    print(sorted(SEEN))


def test_real_resources_conform_to_the_document(live_url: str) -> None:
    """A real job (created, replayed, read, listed, cancelled) validates against the
    documented schemas too (random ids only ever reach the 404 paths)."""
    from .conftest import inline_job

    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    create = schema["/v1/jobs"]["POST"]
    made = []
    for _ in range(2):  # the second is a replay (200 documented too)
        case = create.Case(
            body=inline_job(2), media_type="application/json", headers={"Idempotency-Key": "st-1"}
        )
        made.append(case.call_and_validate(checks=CHECKS, timeout=30))
    assert [r.status_code for r in made] == [201, 201]
    job_id = made[0].json()["id"]
    for path, method in (
        ("/v1/jobs/{job_id}", "GET"),
        ("/v1/jobs/{job_id}/events", "GET"),
        ("/v1/jobs/{job_id}/results", "GET"),
        ("/v1/jobs/{job_id}/cancel", "POST"),
        ("/v1/jobs/{job_id}/retry", "POST"),
    ):
        case = schema[path][method].Case(path_parameters={"job_id": job_id})
        assert case.call_and_validate(checks=CHECKS, timeout=30).status_code == 200
    listed = schema["/v1/jobs"]["GET"].Case(query={"limit": 1})
    assert listed.call_and_validate(checks=CHECKS, timeout=30).json()["data"][0]["id"] == job_id


def test_linked_sequences_conform_to_the_document(live_url: str) -> None:
    """Sequences that follow the document's links (create a job, then read it, list its
    events and results, cancel and retry it) meet the same checks at every step."""
    from hypothesis.stateful import run_state_machine_as_test

    from .conftest import inline_job

    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json").include(path_regex=MY_ROUTES)
    steps: list[tuple[str, int]] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case) -> None:
            # Half the creates are real jobs (random bodies are the first test's work), so
            # the links have a job to lead to; a few keys, so replays happen too.
            if case.operation.label == "POST /v1/jobs" and len(steps) % 2 == 0:
                n = 1 + len(steps) % 3
                case.media_type = "application/json"
                case.body = inline_job(n, prefix=f"s{n}")
                case.headers = {**(case.headers or {}), "Idempotency-Key": f"seq-{n}"}

        def validate_response(self, response: Any, case: schemathesis.Case, **_: Any) -> None:
            steps.append((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        ),
    )
    real = {label for label, status in steps if status < 300}
    print(sorted(set(steps)))
    linked = {f"GET /v1/jobs/{{job_id}}{tail}" for tail in ("", "/events", "/results")}
    linked |= {"POST /v1/jobs/{job_id}/cancel", "POST /v1/jobs/{job_id}/retry"}
    assert {"POST /v1/jobs", *linked} <= real, sorted(set(steps))
