"""Shards under the vendors' limits, deterministic keys and tags."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchkiln.intake import (
    PROVIDER_LIMITS,
    KeyConflict,
    Limits,
    batch_tag,
    check_user_key,
    derive_batch_key,
    job_key,
    plan_shards,
)


def test_a_small_job_is_one_shard() -> None:
    """Under the limits, everything goes in one batch."""
    (shard,) = plan_shards([100] * 10, provider="openai")
    assert (shard.start, shard.stop, shard.count, shard.wire_bytes) == (0, 10, 10, 1000)


def test_the_request_count_limit_splits_shards() -> None:
    """OpenAI's 50,000-request limit: 120,000 tiny requests make three shards."""
    shards = plan_shards([60] * 120_000, provider="openai")
    assert [s.count for s in shards] == [50_000, 50_000, 20_000]


def test_the_byte_budget_splits_shards_with_headroom() -> None:
    """Shards stay under bytes x headroom, not the raw limit."""
    limits = Limits(requests=1000, bytes=1000, headroom=0.9)
    shards = plan_shards([300] * 7, provider="openai", limits=limits)
    assert [s.count for s in shards] == [3, 3, 1]
    assert all(s.wire_bytes <= 900 for s in shards)


def test_a_request_over_the_budget_is_an_error() -> None:
    """One request larger than a whole batch can never be sent."""
    with pytest.raises(ValueError, match="over the"):
        plan_shards([10, 10**9], provider="anthropic")


@given(
    st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=300),
    st.integers(min_value=1, max_value=20),
)
def test_every_request_is_in_exactly_one_contiguous_shard_within_limits(
    sizes: list[int], max_requests: int
) -> None:
    """Shards tile the input in order and each respects both limits."""
    limits = Limits(requests=max_requests, bytes=100, headroom=0.9)
    shards = plan_shards(sizes, provider="openai", limits=limits)
    assert shards[0].start == 0 and shards[-1].stop == len(sizes)
    for before, after in itertools.pairwise(shards):
        assert before.stop == after.start
    for s in shards:
        assert s.count == s.stop - s.start <= max_requests
        assert s.wire_bytes == sum(sizes[s.start : s.stop]) <= limits.byte_budget
    assert plan_shards(sizes, provider="openai", limits=limits) == shards


def test_the_vendor_limits_match_the_vendors() -> None:
    """OpenAI 50,000 / 200 MB; Anthropic 100,000 / 256 MB."""
    assert (PROVIDER_LIMITS["openai"].requests, PROVIDER_LIMITS["openai"].bytes) == (
        50_000,
        200 * 1024 * 1024,
    )
    assert (PROVIDER_LIMITS["anthropic"].requests, PROVIDER_LIMITS["anthropic"].bytes) == (
        100_000,
        256 * 1024 * 1024,
    )


def test_keys_are_deterministic_and_differ_by_shard_and_attempt() -> None:
    """The same job, shard and attempt give the same key and tag, every time."""
    key = job_key(None, "ab" * 32)
    assert key == job_key(None, "ab" * 32) == "fp-" + "ab" * 32
    keys = {derive_batch_key(key, s, a) for s in range(3) for a in range(1, 4)}
    assert len(keys) == 9
    assert batch_tag(derive_batch_key(key, 0, 1)) == batch_tag(derive_batch_key(key, 0, 1))
    assert len({batch_tag(k) for k in keys}) == 9


def test_tags_fit_every_vendors_custom_id_rules() -> None:
    """A tag is 8 chars of [a-z0-9] starting with a letter, so `<tag>-<seq>` is valid."""
    for i in range(500):
        tag = batch_tag(f"key-{i}")
        assert re.fullmatch(r"[a-z][a-z0-9]{7}", tag)
        assert re.fullmatch(r"^[a-zA-Z0-9_-]{1,64}$", f"{tag}-{99_999}")


def test_user_keys_must_be_printable_ascii_up_to_255() -> None:
    """A user key is used as given, or refused with a clear error."""
    assert check_user_key("nightly-2026-11-28") == "nightly-2026-11-28"
    for bad in ("", "x" * 256, "tab\there", "é"):
        with pytest.raises(ValueError, match="printable ASCII"):
            check_user_key(bad)


def test_a_key_conflict_says_what_to_do() -> None:
    """The conflict names the key and tells the user to pick a new one."""
    assert "use a new key" in str(KeyConflict("k1")).lower()
