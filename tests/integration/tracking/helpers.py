"""Helpers for the tracking tests: request files, jobs, and what the simulator served."""

from __future__ import annotations

from pathlib import Path

import orjson

from batchkiln.engine.kiln import Kiln
from batchkiln.simulator import Simulator
from batchkiln.store import BatchRow

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
RETRIEVE = {
    "openai": ("GET", "/v1/batches/{batch_id}"),
    "anthropic": ("GET", "/v1/messages/batches/{batch_id}"),
}
LIST = {"openai": ("GET", "/v1/batches"), "anthropic": ("GET", "/v1/messages/batches")}


def write_requests(path: Path, n: int, *, vendor: str = "openai") -> Path:
    with path.open("wb") as out:
        for i in range(n):
            messages = [{"role": "user", "content": f"{path.stem} item {i}"}]
            if vendor == "anthropic":
                line = {"custom_id": f"r{i}", "params": {"max_tokens": 64, "messages": messages}}
            else:
                line = {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"messages": messages, "max_tokens": 64},
                }
            out.write(orjson.dumps(line) + b"\n")
    return path


async def submit_job(
    kiln: Kiln, tmp: Path, name: str, *, vendor: str = "openai", n: int = 3
) -> BatchRow:
    """Store a one-batch Job and run its submit step; returns the (pending) batch."""
    path = write_requests(tmp / f"{name}.jsonl", n, vendor=vendor)
    job = (await kiln.submit(path, provider=vendor, model=MODELS[vendor], key=name)).job
    (batch,) = await kiln.store.batches.for_job(job.id)
    await kiln.store.batches.mark_due(batch.id)
    assert await kiln.run_once(job_id=job.id) == 1
    return await kiln.store.batches.get(batch.id)


def calls(sim: Simulator, vendor: str, kind: dict[str, tuple[str, str]]) -> int:
    return sim.counters.calls[kind[vendor]]
