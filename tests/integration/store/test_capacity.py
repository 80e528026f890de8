"""Learned enqueued-token limits only ever go down, per provider and model."""

from __future__ import annotations

from batchkiln.store import Store


async def test_a_learned_limit_is_only_ever_lowered(store: Store) -> None:
    """The first rejection sets the limit; a higher figure later leaves it; a lower one wins."""
    assert await store.capacity.learned("openai", "gpt-4o-mini") is None
    assert await store.capacity.lower("openai", "gpt-4o-mini", 2_000_000, reason="a") == 2_000_000
    assert await store.capacity.lower("openai", "gpt-4o-mini", 3_000_000, reason="b") == 2_000_000
    assert await store.capacity.lower("openai", "gpt-4o-mini", 900_000, reason="c") == 900_000
    assert await store.capacity.learned("openai", "gpt-4o-mini") == 900_000
    assert await store.capacity.learned("openai", "gpt-4o") is None
