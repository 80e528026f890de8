"""Shards: contiguous, deterministic, and under each vendor's limits with headroom."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchkiln.intake import (
    PROVIDER_LIMITS,
    Limits,
    ShardPlanner,
    plan_shards,
    validate_file,
)

from .helpers import oai, write_lines


def test_a_small_job_is_one_shard() -> None:
    """Under the limits, everything goes in one batch."""
    (shard,) = plan_shards([100] * 10, provider="openai")
    assert (shard.index, shard.start, shard.stop, shard.count, shard.wire_bytes) == (
        0,
        0,
        10,
        10,
        1000,
    )


def test_no_requests_make_no_shards() -> None:
    """An empty size list plans nothing (validate_file rejects empty files earlier)."""
    assert plan_shards([], provider="anthropic") == []


def test_the_request_count_limit_splits_shards() -> None:
    """OpenAI's 50,000-request limit: 120,000 tiny requests make three shards."""
    shards = plan_shards([60] * 120_000, provider="openai")
    assert [(s.start, s.stop) for s in shards] == [
        (0, 50_000),
        (50_000, 100_000),
        (100_000, 120_000),
    ]


def test_anthropic_takes_twice_as_many_requests() -> None:
    """Anthropic's limit is 100,000 requests a batch."""
    assert [s.count for s in plan_shards([60] * 120_000, provider="anthropic")] == [100_000, 20_000]


def test_the_byte_budget_splits_shards_with_headroom() -> None:
    """Shards stay under bytes x headroom, not the raw limit."""
    limits = Limits(requests=1000, bytes=1000, headroom=0.9)
    shards = plan_shards([300] * 7, provider="openai", limits=limits)
    assert [s.count for s in shards] == [3, 3, 1]
    assert all(s.wire_bytes <= 900 for s in shards)


def test_a_request_that_exactly_fills_the_budget_fits() -> None:
    """The budget is inclusive: a shard may hold exactly byte_budget bytes."""
    limits = Limits(requests=10, bytes=100, headroom=1.0)
    assert [s.count for s in plan_shards([50, 50, 100, 1], provider="x", limits=limits)] == [
        2,
        1,
        1,
    ]


def test_a_request_over_the_budget_is_an_error() -> None:
    """One request larger than a whole batch can never be sent."""
    with pytest.raises(ValueError, match="request 1 is 1,000,000,000 bytes on the wire"):
        plan_shards([10, 10**9], provider="anthropic")


def test_the_vendor_limits_and_headroom() -> None:
    """OpenAI 50,000 / 200 MB, Anthropic 100,000 / 256 MB, 95 % of the bytes used."""
    openai, anthropic = PROVIDER_LIMITS["openai"], PROVIDER_LIMITS["anthropic"]
    assert (openai.requests, openai.bytes, openai.byte_budget) == (50_000, 200_000_000, 190_000_000)
    assert (anthropic.requests, anthropic.bytes, anthropic.byte_budget) == (
        100_000,
        256_000_000,
        243_200_000,
    )
    # Under the limit whichever way the vendor counts a megabyte.
    assert openai.byte_budget < 200 * 10**6 and anthropic.byte_budget < 256 * 10**6


def test_limits_must_make_sense() -> None:
    """Zero requests or a headroom outside (0, 1] is refused."""
    for bad in ((0, 10, 0.9), (10, 10, 0.0), (10, 10, 1.5)):
        with pytest.raises(ValueError):
            Limits(*bad)


def test_the_planner_can_be_fed_one_request_at_a_time() -> None:
    """ShardPlanner.add gives the same plan as plan_shards over the whole list."""
    limits = Limits(requests=4, bytes=100, headroom=1.0)
    sizes = [30, 30, 30, 30, 5, 5, 5, 5, 5, 90]
    planner = ShardPlanner(limits)
    for size in sizes:
        planner.add(size)
    assert planner.shards() == plan_shards(sizes, provider="openai", limits=limits)


@given(
    st.lists(st.integers(min_value=0, max_value=90), max_size=300),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=90, max_value=400),
)
def test_every_request_is_in_exactly_one_contiguous_shard_within_limits(
    sizes: list[int], max_requests: int, max_bytes: int
) -> None:
    """Shards tile the input in order, each within both limits, and replanning agrees."""
    limits = Limits(requests=max_requests, bytes=max_bytes, headroom=1.0)
    shards = plan_shards(sizes, provider="openai", limits=limits)
    covered = [seq for s in shards for seq in range(s.start, s.stop)]
    assert covered == list(range(len(sizes)))
    assert [s.index for s in shards] == list(range(len(shards)))
    for before, after in itertools.pairwise(shards):
        assert before.stop == after.start
        # Greedy: a shard was cut only because the next request did not fit.
        assert (
            before.count == max_requests
            or before.wire_bytes + sizes[after.start] > limits.byte_budget
        )
    for s in shards:
        assert 1 <= s.count == s.stop - s.start <= max_requests
        assert s.wire_bytes == sum(sizes[s.start : s.stop]) <= limits.byte_budget
    assert plan_shards(sizes, provider="openai", limits=limits) == shards


def test_validate_file_splits_a_file_with_small_limits(tmp_path: Path) -> None:
    """The plan in the summary uses each request's wire size, and agrees with plan_shards."""
    path = write_lines(tmp_path / "in.jsonl", [oai(f"r{i}") for i in range(10)])
    one = validate_file(path, provider="openai").wire_bytes // 10
    limits = Limits(requests=100, bytes=one * 3 + 5, headroom=1.0)
    summary = validate_file(path, provider="openai", limits=limits)
    assert [(s.start, s.stop) for s in summary.shards] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert sum(s.wire_bytes for s in summary.shards) == summary.wire_bytes


def test_the_real_openai_count_limit_on_a_real_file(tmp_path: Path) -> None:
    """50,001 tiny requests validate into shards of 50,000 and 1 (speed: bench/, not here)."""
    path = tmp_path / "in.jsonl"
    with path.open("wb") as out:
        for i in range(50_001):
            out.write(orjson.dumps({"custom_id": str(i), "body": {"input": "x"}}) + b"\n")
    summary = validate_file(path, provider="openai", model="m", endpoint="/v1/embeddings")
    assert [(s.start, s.stop, s.count) for s in summary.shards] == [
        (0, 50_000, 50_000),
        (50_000, 50_001, 1),
    ]
