"""Small builders for store tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchkiln.store import JobRow, NewBatch, Store


@dataclass(frozen=True)
class Req:
    seq: int
    line: int
    custom_id: str
    body: dict[str, Any]


async def make_job(
    store: Store,
    *,
    key: str = "job-key-1",
    n: int = 4,
    shards: int = 1,
    fingerprint: str = "f" * 64,
) -> JobRow:
    per = -(-n // shards)
    new_batches = [
        NewBatch(
            key=f"{key}:s{i}:a1",
            tag=f"t{abs(hash((key, i))) % 10**7:07d}",
            shard=i,
            start=i * per,
            stop=min(n, (i + 1) * per),
            wire_bytes=100,
        )
        for i in range(shards)
    ]
    rows = [Req(seq=i, line=i + 1, custom_id=f"req-{i}", body={"n": i}) for i in range(n)]
    job, _ = await store.jobs.create(
        key=key,
        fingerprint=fingerprint,
        provider="openai",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        source="requests.jsonl",
        request_count=n,
        options={},
        request_rows=rows,
        new_batches=new_batches,
    )
    return job
