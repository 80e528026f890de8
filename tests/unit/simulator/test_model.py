"""The model stand-in: deterministic replies, usage derived from the input."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from anthropic.types import Message
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from batchkiln.simulator.model import (
    anthropic_input_tokens,
    anthropic_message,
    openai_input_tokens,
    openai_response_body,
    output_tokens,
)


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def test_input_tokens_grow_with_the_text() -> None:
    """More text, more prompt tokens, about four characters a token."""
    short = openai_input_tokens("/v1/chat/completions", chat("x" * 40))
    long = openai_input_tokens("/v1/chat/completions", chat("x" * 4000))
    assert short < long and 985 <= long - short <= 1000
    params = {
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 400}]}],
    }
    assert anthropic_input_tokens(params) > 100


def test_output_tokens_are_deterministic_and_capped() -> None:
    """The same key gives the same length; max_tokens caps it."""
    assert output_tokens("k", 100, None) == output_tokens("k", 100, None)
    assert output_tokens("k", 10_000, 50) == 50


def test_bodies_validate_against_sdk_types() -> None:
    """Chat, completions, embeddings and Message bodies validate strictly."""
    cases: list[tuple[str, type[pydantic.BaseModel], dict[str, Any]]] = [
        ("/v1/chat/completions", ChatCompletion, chat("hi")),
        ("/v1/completions", Completion, {"model": "m", "prompt": "hi", "max_tokens": 3}),
        ("/v1/embeddings", CreateEmbeddingResponse, {"model": "m", "input": ["a", "b"]}),
    ]
    for endpoint, model, body in cases:
        raw = openai_response_body(
            endpoint, body, key="k", created=1, input_tokens=4, output_tokens=3
        )
        model.model_validate_json(orjson.dumps(raw), strict=True)
    capped = openai_response_body(
        "/v1/chat/completions",
        {**chat("hi"), "max_tokens": 3},
        key="k",
        created=1,
        input_tokens=4,
        output_tokens=3,
    )
    assert capped["choices"][0]["finish_reason"] == "length"
    message = anthropic_message(
        {"model": "claude-haiku-4-5", "max_tokens": 9}, key="k", input_tokens=5, output_tokens=9
    )
    parsed = Message.model_validate_json(orjson.dumps(message), strict=True)
    assert parsed.stop_reason == "max_tokens" and parsed.usage.output_tokens == 9
