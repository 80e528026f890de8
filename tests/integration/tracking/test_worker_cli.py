"""`kiln worker` refuses a bad tracking setup before it touches the store or a vendor;
`kiln workers` lists the registered workers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from batchkiln.cli import app
from batchkiln.clock import SystemClock
from batchkiln.store import Store
from batchkiln.store.tables import workers

runner = CliRunner()


def test_an_unknown_mode_is_refused() -> None:
    """--mode takes poll, webhook or hybrid; anything else exits 2 and says so."""
    result = runner.invoke(app, ["worker", "--mode", "sometimes"])
    assert result.exit_code == 2
    assert "poll, webhook, hybrid" in result.output


def test_serving_webhooks_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """--webhook-port without OPENAI_WEBHOOK_SECRET could verify nothing: exit 2."""
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("KILN_WEBHOOK_SECRETS", raising=False)
    result = runner.invoke(app, ["worker", "--webhook-port", "8090"])
    assert result.exit_code == 2
    assert "OPENAI_WEBHOOK_SECRET" in result.output


def test_kiln_workers_lists_running_and_lost_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kiln workers --json`: a worker whose heartbeat is older than its lease is lost."""
    url = f"sqlite:///{tmp_path}/kiln.db"
    monkeypatch.setenv("KILN_DATABASE_URL", url)

    async def register() -> None:
        store = await Store.open(url, clock=SystemClock())
        for name, age in (("alive", 1.0), ("dead", 120.0)):
            await store.workers.register(
                name, host="h", pid=1, version="0", lease_seconds=60, concurrency=8
            )
            async with store.engine.begin() as conn:
                await conn.execute(
                    update(workers)
                    .where(workers.c.id == name)
                    .values(heartbeat_at=time.time() - age, steps=["bat_1"])
                )
        await store.close()

    asyncio.run(register())
    result = runner.invoke(app, ["workers", "--json"])
    assert result.exit_code == 0, result.output
    listed = {w["id"]: w for w in json.loads(result.output)}
    assert listed["alive"]["state"] == "running" and listed["alive"]["steps"] == ["bat_1"]
    assert listed["dead"]["state"] == "lost"
    table = runner.invoke(app, ["workers"])
    assert table.exit_code == 0 and "lost" in table.output
