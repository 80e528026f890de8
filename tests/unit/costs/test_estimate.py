"""Estimates before submission: prompt tokens, output bounded by the request's cap,
dollars at batch and standard prices, one streaming pass split by shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from batchkiln.costs import DEFAULT_OUTPUT_CAP, estimate_bodies, estimate_file

CHAT = "/v1/chat/completions"


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def estimate(bodies: list[dict[str, Any]], endpoint: str = CHAT, **kw: Any) -> Any:
    kw.setdefault("provider", "openai")
    kw.setdefault("model", "gpt-4o-mini")
    return estimate_bodies(bodies, endpoint=endpoint, mode="approx", **kw)


def test_a_chat_request_counts_its_text_plus_per_message_overhead() -> None:
    """16 bytes of content = 4 tokens, + 4 for the message, + 3 reply priming."""
    e = estimate([chat("a" * 16, max_tokens=10)])
    assert (e.requests, e.input_tokens, e.output_tokens, e.uncapped) == (1, 11, 10, 0)


def test_output_is_bounded_by_the_cap_times_choices() -> None:
    """max_completion_tokens wins over max_tokens, and n choices multiply it."""
    e = estimate([chat("hi", max_completion_tokens=50, max_tokens=999, n=3)])
    assert e.output_tokens == 150


def test_a_request_without_a_cap_assumes_the_default_and_is_flagged() -> None:
    """No max_tokens: DEFAULT_OUTPUT_CAP output tokens, counted as uncapped, and said so."""
    e = estimate([chat("hi"), chat("hi", max_tokens=5)])
    assert e.output_tokens == DEFAULT_OUTPUT_CAP + 5
    assert e.uncapped == 1
    assert any("no max_tokens" in line for line in e.lines())


def test_embeddings_have_no_output_and_token_id_inputs_count_one_each() -> None:
    """An embeddings input of token ids is as many tokens as ids; output is zero."""
    e = estimate(
        [{"model": "text-embedding-3-small", "input": [1, 2, 3, 4, 5]}],
        "/v1/embeddings",
        model="text-embedding-3-small",
    )
    assert (e.input_tokens, e.output_tokens, e.uncapped) == (5, 0, 0)


def test_tools_and_system_prompts_are_counted() -> None:
    """Anthropic's system prompt and a tool schema add to the input."""
    base = {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    plain = estimate([base], "/v1/messages", provider="anthropic", model="claude-haiku-4-5")
    richer = estimate(
        [{**base, "system": "s" * 40, "tools": [{"name": "lookup", "input_schema": {}}]}],
        "/v1/messages",
        provider="anthropic",
        model="claude-haiku-4-5",
    )
    assert richer.input_tokens >= plain.input_tokens + 10 + 5


def test_the_estimate_is_priced_at_batch_and_standard_prices() -> None:
    """gpt-4o-mini: $0.15 in / $0.60 out per million standard, half of that batched."""
    e = estimate([chat("a" * 3_999_972, max_tokens=1_000_000)])
    assert e.input_tokens == 1_000_000
    assert e.list_cost_usd == pytest.approx(0.15 + 0.60)
    assert e.cost_usd == pytest.approx((0.15 + 0.60) / 2)
    assert "saving $0.3750" in e.lines()[0]


def test_an_unknown_model_gives_tokens_but_an_unknown_cost() -> None:
    """No price: tokens are still counted, dollars are None, and the lines say so."""
    e = estimate([chat("hello", max_tokens=5)], model="gpt-9-turbo")
    assert e.input_tokens > 0 and e.cost_usd is None and e.list_cost_usd is None
    assert "cost unknown" in e.lines()[0]


def test_a_file_is_estimated_in_one_pass_split_by_shard(tmp_path: Path) -> None:
    """Three shards of a 10-line file: parts add up to the total, in order."""
    path = tmp_path / "in.jsonl"
    with path.open("wb") as out:
        for i in range(10):
            out.write(
                orjson.dumps({"custom_id": f"r{i}", "body": chat("x" * 4 * i, max_tokens=i + 1)})
            )
            out.write(b"\n")
    total, parts = estimate_file(
        path,
        provider="openai",
        model="gpt-4o-mini",
        endpoint=CHAT,
        shards=[(0, 4), (4, 8), (8, 10)],
        mode="approx",
    )
    assert [p.requests for p in parts] == [4, 4, 2]
    assert [p.output_tokens for p in parts] == [1 + 2 + 3 + 4, 5 + 6 + 7 + 8, 9 + 10]
    assert sum(p.input_tokens for p in parts) == total.input_tokens
    assert total.cost_usd == pytest.approx(sum(p.cost_usd or 0 for p in parts), abs=1e-7)
