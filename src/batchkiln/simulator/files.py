"""OpenAI Files, deterministic ids, and OpenAI-style cursor pages.

A file's bytes stay in memory only while small (`SPOOL_ABOVE_BYTES`); bigger ones are
spooled to a private temporary directory (removed with the store, or at exit), so a
long standalone run or a bench holding many 50,000-line inputs and outputs stays small.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchkiln.simulator.model import short_id

FILE_TTL_SECONDS = 30 * 24 * 3600  # purpose=batch inputs and batch outputs: 30 days [DOC]
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024  # Batch accepts .jsonl up to 200 MB [SDK docstring]
PURPOSES = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
)

SPOOL_ABOVE_BYTES = 64 * 1024  # a few hundred request lines; webhook-sized files stay put

T = TypeVar("T")


class Ids:
    """Deterministic ids: the same seed and the same sequence of creations give the same ids."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._n: Counter[str] = Counter()

    def new(self, prefix: str, kind: str, length: int = 24) -> str:
        self._n[kind] += 1
        return prefix + short_id(self.seed, kind, self._n[kind], length=length)


@dataclass
class FileRecord:
    """One file, as the Files API describes it."""

    id: str
    filename: str
    purpose: str
    content: bytes  # b"" once spooled: read the bytes with `read()`
    created_at: int
    expires_at: int | None
    deleted: bool = False
    size: int = -1  # set from `content` when created
    spooled: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.content)

    def read(self) -> bytes:
        """The file's bytes, from memory or from its spool file."""
        return self.spooled.read_bytes() if self.spooled is not None else self.content

    def gone(self, now: float) -> bool:
        return self.deleted or (self.expires_at is not None and now >= self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Files by id, in upload order; contents above `spool_above` bytes live on disk
    (None: everything in memory)."""

    def __init__(self, spool_above: int | None = SPOOL_ABOVE_BYTES) -> None:
        self._files: dict[str, FileRecord] = {}
        self.spool_above = spool_above
        self._dir: Path | None = None

    def add(self, record: FileRecord) -> FileRecord:
        if self.spool_above is not None and record.size > self.spool_above:
            path = self._spool_dir() / record.id
            path.write_bytes(record.content)
            record.spooled, record.content = path, b""
        self._files[record.id] = record
        return record

    def _spool_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="kiln-sim-files-"))
            # removed when the store goes away, or at interpreter exit at the latest
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir

    def close(self) -> None:
        """Remove the spool directory now (the store must not be used after)."""
        if self._dir is not None:
            self._cleanup()

    def memory_bytes(self) -> int:
        """Bytes of file content held in memory (the rest is spooled)."""
        return sum(len(f.content) for f in self._files.values())

    def get(self, file_id: str, now: float) -> FileRecord | None:
        record = self._files.get(file_id)
        return None if record is None or record.gone(now) else record

    def live(self, now: float, purpose: str | None = None) -> list[FileRecord]:
        return [
            f
            for f in self._files.values()
            if not f.gone(now) and (purpose is None or f.purpose == purpose)
        ]


def cursor_page(
    items: Sequence[T], ids: Sequence[str], *, after: str | None, limit: int
) -> tuple[list[T], bool]:
    """OpenAI cursor pagination: the `limit` items after the one whose id is `after`
    (from the start without it), and whether more follow. An unknown cursor gives an
    empty page."""
    start = 0
    if after is not None:
        if after not in ids:
            return [], False
        start = list(ids).index(after) + 1
    page = list(items[start : start + limit])
    return page, start + limit < len(items)


def page_bounds(
    items: Sequence[T],
    ids: Sequence[str],
    *,
    after_id: str | None,
    before_id: str | None,
    limit: int,
) -> tuple[list[T], bool]:
    """Anthropic pagination over a newest-first list: `after_id` pages forward (older),
    `before_id` returns the `limit` items just before the cursor (newer); `has_more` says
    whether more lie further in the same direction."""
    id_list = list(ids)
    if before_id is not None:
        if before_id not in id_list:
            return [], False
        end = id_list.index(before_id)
        start = max(0, end - limit)
        return list(items[start:end]), start > 0
    start = 0
    if after_id is not None:
        if after_id not in id_list:
            return [], False
        start = id_list.index(after_id) + 1
    return list(items[start : start + limit]), start + limit < len(items)
