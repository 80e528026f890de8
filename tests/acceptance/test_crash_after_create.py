"""A process killed right after the vendor accepted the batch, before it could
record the vendor id: on restart, reconciliation finds the batch; nothing is
sent twice. The killed process is a real `kiln submit` in a subprocess, talking
to the simulator over loopback."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from batchkiln.clock import FakeClock, ScaledClock
from batchkiln.engine.kiln import Kiln
from batchkiln.lifecycle import State
from batchkiln.providers import make_provider
from batchkiln.simulator import Simulator
from batchkiln.simulator.standalone import serve_app_in_thread
from batchkiln.store import Store

from .conftest import MODELS, write_requests

CREATE_PATHS = ("/v1/batches", "/v1/messages/batches")
GEMINI_CREATE = ":batchGenerateContent"  # /v1beta/models/{model}:batchGenerateContent
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class StallAfterCreate:
    """Let the vendor commit a create, then never answer: the caller is killed mid-call."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.enabled = True

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not (
            self.enabled
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and (scope["path"] in CREATE_PATHS or scope["path"].endswith(GEMINI_CREATE))
        ):
            await self.app(scope, receive, send)
            return

        async def hold(message: Message) -> None:
            # polled, not an asyncio.Event: the flag is flipped from the test's thread
            while message["type"] == "http.response.start" and self.enabled:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await send(message)

        await self.app(scope, receive, hold)


def _kiln_submit(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "import sys; from batchkiln.cli import app; sys.argv[0] = 'kiln'; app()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "gemini"])
async def test_sigkill_after_the_create_call_then_restart_makes_no_second_batch(
    tmp_path: Path, vendor: str
) -> None:
    """SIGKILL while the accepted create is unanswered; the restart adopts the vendor batch."""
    sim = Simulator(clock=ScaledClock(600), seed=5)
    stall = StallAfterCreate(sim.app)
    db = tmp_path / "kiln.db"
    requests = write_requests(tmp_path / "in.jsonl", 6, vendor=vendor)
    with serve_app_in_thread(stall, on_bound=lambda url: setattr(sim, "base_url", url)) as url:
        env = dict(
            os.environ,
            KILN_DATABASE_URL=f"sqlite:///{db}",
            OPENAI_BASE_URL=f"{url}/v1",
            OPENAI_API_KEY="test",
            ANTHROPIC_BASE_URL=url,
            ANTHROPIC_API_KEY="test",
            GOOGLE_GEMINI_BASE_URL=url,
            GEMINI_API_KEY="test",
        )
        proc = _kiln_submit(
            [
                "submit",
                str(requests),
                "--provider",
                vendor,
                "--model",
                MODELS[vendor],
                "--key",
                "crash-1",
            ],
            env,
        )
        deadline = time.monotonic() + 60
        while sim.counters.batches_created == 0:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, "the subprocess never reached the vendor"
            await asyncio.sleep(0.05)
        proc.kill()  # SIGKILL: no cleanup, no chance to record the vendor id
        proc.wait(timeout=10)
        stall.enabled = False

        clock = FakeClock(start=time.time() + 3600)  # past the dead process's lease
        store = await Store.open(f"sqlite:///{db}", clock=clock)
        (batch,) = await store.batches.for_job((await store.jobs.get("crash-1")).id)
        assert batch.state == State.SUBMITTING and batch.vendor_id is None
        if vendor == "gemini":  # the uploaded input file was recorded before create
            (held,) = sim.gemini_batches.values()
            assert batch.input_file is not None and batch.input_file == held.input_file
        provider = make_provider(
            vendor, base_url=f"{url}/v1" if vendor == "openai" else url, api_key="test"
        )
        kiln = Kiln(
            store, {vendor: provider}, clock=clock, worker="restarted", rng=random.Random(0)
        )
        try:
            await kiln.run_once()
            (batch,) = await store.batches.for_job(batch.job_id)
            assert batch.state == State.PENDING and batch.vendor_id is not None
            for _ in range(200):  # the vendor runs on its own scaled clock
                status = await kiln.status(batch.job_id)
                if status.state == "done":
                    break
                await kiln.run_once()
                await store.batches.mark_due(batch.id)
                await asyncio.sleep(0.02)
            assert status.state == "done", status.state
            assert status.counts == {"succeeded": 6}
            assert sim.counters.batches_created == 1
            kinds = [e.kind for e in await store.audit.for_job(batch.job_id)]
            assert kinds.count("submit.attempt") == 1
        finally:
            await provider.aclose()
            await store.close()
