"""Results out: one record per request, in input order, under the user's own
custom_id, with its outcome, its response or error, and the attempt that
produced it. Two shapes: `flat` (ours) and `vendor` (the vendor's own result
line, with the user's custom_id put back).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from batchkiln.store import RequestRow, Store


class ExportFormat(StrEnum):
    FLAT = "flat"
    VENDOR = "vendor"


def _response_and_error(line: dict[str, Any]) -> tuple[Any, Any]:
    """Pull the response body or the error out of either vendor's result line."""
    if "result" in line:  # Anthropic
        result = line["result"] or {}
        if result.get("type") == "succeeded":
            return result.get("message"), None
        error = (result.get("error") or {}).get("error") or {"type": result.get("type")}
        return None, error
    response = line.get("response")  # OpenAI
    if response and 200 <= int(response.get("status_code", 0)) < 300:
        return response.get("body"), None
    if response:
        body = response.get("body") or {}
        return None, dict(body.get("error") or {}, status=response.get("status_code"))
    return None, line.get("error")


def record(row: RequestRow, raw: bytes | None, fmt: ExportFormat) -> dict[str, Any]:
    if fmt == ExportFormat.VENDOR:
        if raw is None:
            return {"custom_id": row.custom_id, "response": None, "error": row.last_error}
        line: dict[str, Any] = orjson.loads(raw)
        line["custom_id"] = row.custom_id
        return line
    response, error = _response_and_error(orjson.loads(raw)) if raw else (None, None)
    return {
        "custom_id": row.custom_id,
        "outcome": row.outcome or "pending",
        "attempt": row.attempts,
        "response": response,
        "error": error if error is not None else row.last_error,
    }


async def iter_results(
    store: Store, job_ref: str, fmt: ExportFormat = ExportFormat.FLAT
) -> AsyncIterator[dict[str, Any]]:
    """Every request of a Job, in input order, as export records (streamed)."""
    job = await store.jobs.get(job_ref)
    async for row, raw, _tag in store.ledger.export_rows(job.id):
        yield record(row, raw, fmt)


async def write_results(
    store: Store, job_ref: str, path: Path, fmt: ExportFormat = ExportFormat.FLAT
) -> int:
    """Write the export as JSONL to `path` (atomically: a temp file, then rename)."""
    await store.jobs.get(job_ref)  # NotFound before any file is made
    tmp = path.with_name(path.name + ".part")
    count = 0
    with tmp.open("wb") as out:
        async for item in iter_results(store, job_ref, fmt):
            out.write(orjson.dumps(item) + b"\n")
            count += 1
    tmp.replace(path)
    return count
