"""OpenAI Files kept in memory, deterministic ids, and OpenAI-style cursor pages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
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
    content: bytes
    created_at: int
    expires_at: int | None
    deleted: bool = False

    def gone(self, now: float) -> bool:
        return self.deleted or (self.expires_at is not None and now >= self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Files by id, in upload order."""

    def __init__(self) -> None:
        self._files: dict[str, FileRecord] = {}

    def add(self, record: FileRecord) -> FileRecord:
        self._files[record.id] = record
        return record

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
