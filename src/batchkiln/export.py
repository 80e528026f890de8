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

from batchkiln.providers import parse_result_line, wire_format
from batchkiln.providers.base import Outcome
from batchkiln.store import RequestRow, Store


class ExportFormat(StrEnum):
    FLAT = "flat"
    VENDOR = "vendor"


def record(row: RequestRow, raw: bytes | None, fmt: ExportFormat, wire: str) -> dict[str, Any]:
    """One request's export record; the vendor line is read by its adapter's parser."""
    if fmt == ExportFormat.VENDOR:
        if raw is None:
            return {"custom_id": row.custom_id, "response": None, "error": row.last_error}
        line: dict[str, Any] = orjson.loads(raw)
        line["custom_id"] = row.custom_id
        return line
    parsed = parse_result_line(wire, raw) if raw else None
    succeeded = parsed is not None and parsed.outcome == Outcome.SUCCEEDED
    error = None if parsed is None or succeeded else parsed.error
    return {
        "custom_id": row.custom_id,
        "outcome": row.outcome or "pending",
        "attempt": row.attempts,
        "response": parsed.response if succeeded and parsed is not None else None,
        "error": error if error is not None else row.last_error,
    }


async def iter_results(
    store: Store, job_ref: str, fmt: ExportFormat = ExportFormat.FLAT
) -> AsyncIterator[dict[str, Any]]:
    """Every request of a Job, in input order, as export records (streamed)."""
    job = await store.jobs.get(job_ref)
    wire = wire_format(job.provider)
    async for row, raw in store.ledger.export_rows(job.id):
        yield record(row, raw, fmt, wire)


async def write_results(
    store: Store, job_ref: str, path: Path, fmt: ExportFormat = ExportFormat.FLAT
) -> int:
    """Write the export as JSONL to `path` (atomically: a temp file, then rename)."""
    tmp = path.with_name(path.name + ".part")
    count = 0
    with tmp.open("wb") as out:
        async for item in iter_results(store, job_ref, fmt):
            out.write(orjson.dumps(item) + b"\n")
            count += 1
    tmp.replace(path)
    return count
