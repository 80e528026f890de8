"""Splitting a Job into Batches under each vendor's limits, deterministically.

Shards are contiguous ranges of input order, cut when the next request would
pass the request count or the byte budget (the limit less headroom, so a
vendor's own accounting of the file never tips over).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    requests: int
    bytes: int
    headroom: float  # share of `bytes` we allow ourselves

    @property
    def byte_budget(self) -> int:
        return int(self.bytes * self.headroom)


PROVIDER_LIMITS: dict[str, Limits] = {
    "openai": Limits(requests=50_000, bytes=200 * 1024 * 1024, headroom=0.95),
    "anthropic": Limits(requests=100_000, bytes=256 * 1024 * 1024, headroom=0.95),
}


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # seq range [start, stop)
    stop: int
    count: int
    wire_bytes: int


def plan_shards(
    sizes: Iterable[int], *, provider: str, limits: Limits | None = None
) -> list[Shard]:
    """Contiguous shards of request sizes, each within the provider's limits."""
    lim = limits or PROVIDER_LIMITS[provider]
    shards: list[Shard] = []
    start, count, total, seq = 0, 0, 0, 0
    for seq, size in enumerate(sizes):
        if size > lim.byte_budget:
            raise ValueError(f"request {seq} is {size} bytes, over the {lim.byte_budget} budget")
        if count and (count + 1 > lim.requests or total + size > lim.byte_budget):
            shards.append(Shard(len(shards), start, seq, count, total))
            start, count, total = seq, 0, 0
        count += 1
        total += size
    if count:
        shards.append(Shard(len(shards), start, start + count, count, total))
    return shards
