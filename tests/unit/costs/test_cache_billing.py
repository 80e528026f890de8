"""Cache billing as the vendors bill it (prices.json `billing_rules`, dated): Anthropic
cache writes at 1.25x input (5-minute cache) and 2x (1-hour cache), cache reads at 0.1x;
OpenAI cached input at its own price. Usage shapes are the corpus's real ones (Anthropic
lines with `cache_creation` and `service_tier`, OpenAI `prompt_tokens_details`), with
the counts set non-zero."""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources

import orjson
import pytest

from batchkiln.costs import batch_cost, load_prices
from batchkiln.providers import anthropic as anth
from batchkiln.providers import openai as oai


def anthropic_line(usage: dict[str, object]) -> bytes:
    """A succeeded results line shaped like the corpus's tr-031 (2025-26 API)."""
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "1"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    return orjson.dumps({"custom_id": "ok-1", "result": {"type": "succeeded", "message": message}})


def usage_dict(raw: bytes, parse: object) -> dict[str, int]:
    line = parse(raw)  # type: ignore[operator]
    return asdict(line.usage)


def test_anthropic_cache_writes_are_billed_by_lifetime_and_reads_at_a_tenth() -> None:
    """16 fresh + 1,000 read + 2,000 written (5 m) + 1,000 written (1 h) input, 5 output
    on claude-haiku-4-5 ($1 / $5): 16 + 100 + 2,500 + 2,000 + 25 micro-dollars."""
    raw = anthropic_line(
        {
            "input_tokens": 16,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 1000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2000,
                "ephemeral_1h_input_tokens": 1000,
            },
            "output_tokens": 5,
            "service_tier": "batch",
            "inference_geo": "not_available",
        }
    )
    usage = usage_dict(raw, anth.parse_line)
    assert usage == {
        "input_tokens": 4016,
        "cached_input_tokens": 1000,
        "output_tokens": 5,
        "cache_write_5m_tokens": 2000,
        "cache_write_1h_tokens": 1000,
    }
    cost = batch_cost("anthropic", "claude-haiku-4-5", usage)
    expected = (16 * 1.0 + 1000 * 0.10 + 2000 * 1.25 + 1000 * 2.0 + 5 * 5.0) / 1e6
    assert cost["list_cost_usd"] == pytest.approx(expected)
    assert cost["cost_usd"] == pytest.approx(expected / 2)  # the batch discount on top


def test_an_anthropic_cache_write_without_the_split_is_a_five_minute_one() -> None:
    """Older replies give only cache_creation_input_tokens: the default (5 m) lifetime."""
    raw = anthropic_line(
        {"input_tokens": 10, "cache_creation_input_tokens": 400, "output_tokens": 1}
    )
    usage = usage_dict(raw, anth.parse_line)
    assert (usage["cache_write_5m_tokens"], usage["cache_write_1h_tokens"]) == (400, 0)
    cost = batch_cost("anthropic", "claude-sonnet-4-5", usage)
    assert cost["list_cost_usd"] == pytest.approx((10 * 3.0 + 400 * 3.75 + 1 * 15.0) / 1e6)


def test_openai_cached_input_is_billed_at_its_own_price() -> None:
    """A chat line shaped like the corpus's (prompt_tokens_details.cached_tokens): on
    gpt-4o, 1,000 of 3,000 prompt tokens cached at $1.25 instead of $2.50."""
    body = {
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 3000,
            "completion_tokens": 100,
            "total_tokens": 3100,
            "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
    }
    raw = orjson.dumps(
        {"id": "batch_req_1", "custom_id": "r-1", "response": {"status_code": 200, "body": body}}
    )
    usage = usage_dict(raw, oai.parse_line)
    assert usage["cache_write_5m_tokens"] == usage["cache_write_1h_tokens"] == 0
    cost = batch_cost("openai", "gpt-4o", usage)
    assert cost["list_cost_usd"] == pytest.approx((2000 * 2.5 + 1000 * 1.25 + 100 * 10.0) / 1e6)


def test_the_shipped_rules_are_dated_and_every_claude_price_follows_them() -> None:
    """prices.json dates its billing rules; every Anthropic model's cache reads are 0.1x,
    its 5-minute writes 1.25x and 1-hour writes 2x its input price."""
    raw = orjson.loads(resources.files("batchkiln.costs").joinpath("prices.json").read_bytes())
    assert (
        raw["billing_rules"]["as_of"][:2] == "20" and "1.25x" in raw["billing_rules"]["anthropic"]
    )
    for name, price in load_prices().models["anthropic"].items():
        assert price.cached_input == pytest.approx(0.1 * price.input), name
        assert price.cache_write_5m == pytest.approx(1.25 * price.input), name
        assert price.cache_write_1h == pytest.approx(2.0 * price.input), name
