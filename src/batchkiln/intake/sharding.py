"""Splitting a Job into Batches under each vendor's limits, deterministically.

A shard is a contiguous range of sequence indexes `[start, stop)`. The planner
walks the requests in input order and cuts a new shard when the next request
would pass the request count or the byte budget, so the same sizes always give
the same shards.

Sizes are *wire* sizes: the full line the adapter will send for a request, not
just its body (see `wire_line_bytes`).

Headroom. Request counts are exact, so a shard may hold the vendor's full count
(OpenAI 50,000, Anthropic 100,000). Byte sizes are estimates (float formatting
and escaping can differ by a few bytes between our encoder and the SDK's, and
Anthropic counts the whole create body including its `{"requests":[...]}`
wrapper), so a shard may fill only 95 % of the vendor's byte limit. The limits
themselves are read as decimal megabytes (200 MB = 200,000,000 bytes), the
smaller of the two readings. Budgets: OpenAI 190,000,000 bytes of input file,
Anthropic 243,200,000 bytes of request body.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

WIRE_TAG_LEN = 8  # batch_tag() length; a wire id is "<tag>-<seq>"


@dataclass(frozen=True)
class Limits:
    """One vendor's per-batch limits and the share of the byte limit we use."""

    requests: int  # requests per batch, used in full (counts are exact)
    bytes: int  # bytes per batch (OpenAI: input file; Anthropic: request body)
    headroom: float = 0.95  # share of `bytes` a shard may fill

    def __post_init__(self) -> None:
        if self.requests < 1 or self.bytes < 1 or not 0 < self.headroom <= 1:
            raise ValueError(f"invalid limits: {self}")

    @property
    def byte_budget(self) -> int:
        """The most wire bytes one shard may hold."""
        return math.floor(self.bytes * self.headroom)


PROVIDER_LIMITS: dict[str, Limits] = {
    "openai": Limits(requests=50_000, bytes=200_000_000, headroom=0.95),
    "anthropic": Limits(requests=100_000, bytes=256_000_000, headroom=0.95),
    # Gemini documents a 2 GB input file and no request count; 100,000 a batch is our own
    # cap (UNCONFIRMED as a vendor limit), so a shard's results stay a sane size.
    "gemini": Limits(requests=100_000, bytes=2_000_000_000, headroom=0.95),
}


@dataclass(frozen=True)
class Shard:
    """One future Batch: the requests with seq in `[start, stop)`."""

    index: int
    start: int
    stop: int
    count: int
    wire_bytes: int


def wire_line_bytes(provider: str, endpoint: str, body_bytes: int, seq: int) -> int:
    """Bytes one request takes on the wire, given the length of its compact JSON body.

    OpenAI (one line of the input file):
        {"custom_id":"<tag>-<seq>","method":"POST","url":"<endpoint>","body":<body>}\\n
    Anthropic (one item of the create body's `requests` array):
        {"custom_id":"<tag>-<seq>","params":<body>},
    Gemini (one line of the input file):
        {"key":"<tag>-<seq>","request":<body>}\n
    Both SDK paths encode compactly (no spaces) and keep non-ASCII as UTF-8.
    """
    wire_id = WIRE_TAG_LEN + 1 + len(str(seq))
    if provider == "openai":
        fixed = len('{"custom_id":"","method":"POST","url":"","body":}\n') + len(endpoint)
    elif provider == "anthropic":
        fixed = len('{"custom_id":"","params":},')
    elif provider == "gemini":  # the body's own "model" is dropped on the wire: an upper bound
        fixed = len('{"key":"","request":}\n')
    else:
        raise ValueError(f"unknown provider {provider!r}")
    return fixed + wire_id + body_bytes


class ShardPlanner:
    """Plans shards one request at a time, so a whole file's sizes are never held."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._budget = limits.byte_budget  # read per request: kept, not recomputed
        self._most = limits.requests
        self._shards: list[Shard] = []
        self._start = 0
        self._count = 0
        self._bytes = 0

    def fits(self, size: int) -> bool:
        """Whether a request of `size` wire bytes fits in a batch at all."""
        return 0 <= size <= self._budget

    def add(self, size: int) -> None:
        """Append the next request (seq = number added so far)."""
        if not 0 <= size <= self._budget:
            seq = self._start + self._count
            raise ValueError(
                f"request {seq} is {size:,} bytes on the wire,"
                f" over the {self.limits.byte_budget:,}-byte batch budget"
            )
        if self._count and (self._count >= self._most or self._bytes + size > self._budget):
            self._cut()
        self._count += 1
        self._bytes += size

    def _cut(self) -> None:
        stop = self._start + self._count
        self._shards.append(Shard(len(self._shards), self._start, stop, self._count, self._bytes))
        self._start, self._count, self._bytes = stop, 0, 0

    @property
    def current(self) -> int:
        """The index of the shard the last `add` went into."""
        return len(self._shards)

    def shards(self) -> list[Shard]:
        """The plan so far (the last shard included); the planner stays usable."""
        tail = []
        if self._count:
            stop = self._start + self._count
            tail = [Shard(len(self._shards), self._start, stop, self._count, self._bytes)]
        return [*self._shards, *tail]


def plan_shards(
    sizes: Iterable[int], *, provider: str, limits: Limits | None = None
) -> list[Shard]:
    """Contiguous shards of requests with these wire sizes, each within the limits
    (`limits` defaults to the provider's). Raises ValueError for a request larger
    than a whole batch's budget."""
    planner = ShardPlanner(limits or PROVIDER_LIMITS[provider])
    for size in sizes:
        planner.add(size)
    return planner.shards()
