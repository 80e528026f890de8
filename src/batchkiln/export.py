"""Results out: one record per request, in input order, under the user's own
custom_id, with its outcome, its response or error, and the attempt that
produced it. Two shapes: `flat` (ours) and `vendor` (the vendor's own result
line, with the user's custom_id put back).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

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
        if wire == "gemini":  # Gemini's lines carry `key` (inline: `metadata.key`)
            line.pop("metadata", None)
            line["key"] = row.custom_id
            return line
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
    """Write the export as JSONL to `path`, by what is there (see `open_target`):
    a new path or a regular file is replaced atomically (a temp file beside it, then a
    rename), a symlink is written through to its target (the link stays), a FIFO or a
    character device is written directly. The job is looked up first, and no temp file
    is left behind on any failure."""
    job = await store.jobs.get(job_ref)  # unknown job: NotFound before anything is touched
    with open_target(path) as out:
        return await write_stream(store, job.id, out, fmt)


async def write_stream(store: Store, job_ref: str, out: BinaryIO, fmt: ExportFormat) -> int:
    """Write the export as JSONL to an open binary stream (`kiln results -o -`: stdout)."""
    count = 0
    async for item in iter_results(store, job_ref, fmt):
        out.write(orjson.dumps(item) + b"\n")
        count += 1
    out.flush()
    return count


@contextmanager
def open_target(path: Path) -> Iterator[BinaryIO]:
    """A binary stream onto `path` that never turns a special file into a regular one."""
    target = Path(os.path.realpath(path))  # a symlink (or a chain) is written through
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        with target.open("wb") as direct:  # a pipe or a device: its reader gets the bytes
            yield direct
        return
    if mode is not None and not stat.S_ISREG(mode):  # block device, socket, ...
        raise OSError(errno.EINVAL, "not a regular file, FIFO or character device", str(path))
    # mkstemp: a unique name (no fixed `.part` to collide on), mode 0600 until chmod
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), stat.S_IMODE(mode) if mode else _default_file_mode())
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _default_file_mode() -> int:
    """0666 less the process umask: what `open(path, "w")` would have made."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
