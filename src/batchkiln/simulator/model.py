"""The model stand-in: deterministic replies with token usage derived from the input.

Input tokens are estimated from the text of the request (about 4 characters a token,
plus a small per-message overhead), output tokens from a hash of the request capped by
its `max_tokens`, so costs computed downstream scale with the input and reproduce
exactly. The bodies match what each endpoint returns (a ChatCompletion, a Response, a
Completion, an embeddings list, an Anthropic Message).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from batchkiln.simulator.faults import unit

_WORDS = (
    "the",
    "batch",
    "finished",
    "on",
    "time",
    "and",
    "every",
    "request",
    "was",
    "answered",
    "with",
    "care",
    "while",
    "queue",
    "moved",
    "steadily",
    "through",
    "night",
    "so",
    "results",
    "are",
    "ready",
    "for",
    "review",
    "in",
    "morning",
)

OPENAI_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
SIMULATED_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions")
_REQUIRED = {
    "/v1/chat/completions": ("model", "messages"),
    "/v1/responses": ("model", "input"),
    "/v1/embeddings": ("model", "input"),
    "/v1/completions": ("model", "prompt"),
}


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one."""
    return max(1, (len(text) + 3) // 4)


def text_of(value: Any) -> str:
    """Every string inside a request's content, joined (roles and types excluded)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, dict):
        skip = {"role", "type", "model", "id", "cache_control"}
        return " ".join(text_of(v) for k, v in value.items() if k not in skip)
    return ""


def _messages_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return estimate_tokens(text_of(messages))
    return 3 + sum(
        4 + estimate_tokens(text_of(m.get("content") if isinstance(m, dict) else m))
        for m in messages
    )


def openai_input_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """Prompt tokens of an OpenAI request body for `endpoint`."""
    if endpoint == "/v1/chat/completions":
        return _messages_tokens(body.get("messages"))
    if endpoint == "/v1/responses":
        extra = estimate_tokens(text_of(body["instructions"])) if body.get("instructions") else 0
        return _messages_tokens(body.get("input")) + extra
    if endpoint == "/v1/completions":
        return estimate_tokens(text_of(body.get("prompt")))
    return estimate_tokens(text_of(body.get("input", body)))


def anthropic_input_tokens(params: dict[str, Any]) -> int:
    """Input tokens of an Anthropic Messages request."""
    system = estimate_tokens(text_of(params["system"])) if params.get("system") else 0
    return _messages_tokens(params.get("messages")) + system


def output_tokens(key: str, input_tokens: int, cap: int | None) -> int:
    """Deterministic completion length: grows with the input, capped by max_tokens."""
    n = 12 + input_tokens // 8 + int(unit(key, "length") * 24)
    return max(1, min(n, cap)) if cap else n


def openai_output_cap(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return None


def openai_body_problem(endpoint: str, body: Any) -> tuple[str, str | None] | None:
    """Why a request body would get a 400 from the model endpoint: (message, param)."""
    if endpoint not in SIMULATED_ENDPOINTS:
        return f"The simulator does not implement {endpoint} (only text endpoints).", None
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    for name in _REQUIRED[endpoint]:
        if name not in body:
            return f"Missing required parameter: '{name}'.", name
    return None


def anthropic_params_problem(params: Any) -> str | None:
    """Why Anthropic would answer this batch request with `invalid_request_error`."""
    if not isinstance(params, dict):
        return "params: Input should be an object"
    if not isinstance(params.get("model"), str):
        return "model: Field required"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: must be an integer of at least 1"
    if not isinstance(params.get("messages"), list) or not params["messages"]:
        return "messages: Field required"
    return None


def reply_text(key: str, tokens: int) -> str:
    """A reply of roughly `tokens` tokens, the same every time for the same key."""
    rng = random.Random(f"{key}|reply")  # str seeds hash with SHA-512: stable across runs
    words = rng.choices(_WORDS, k=max(1, (tokens * 4) // 6))
    return " ".join(words).capitalize() + "."


def short_id(*parts: object, length: int = 24) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:length]


def openai_response_body(
    endpoint: str,
    body: dict[str, Any],
    *,
    key: str,
    created: int,
    input_tokens: int,
    output_tokens: int,
) -> dict[str, Any]:
    """The JSON the endpoint would have answered with for this request."""
    model = str(body.get("model", "gpt-sim"))
    capped = output_tokens == openai_output_cap(body)
    text = reply_text(key, output_tokens)
    total = input_tokens + output_tokens
    if endpoint == "/v1/chat/completions":
        return {
            "id": f"chatcmpl-{short_id(key, 'chat')}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "length" if capped else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": total,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_sim",
        }
    if endpoint == "/v1/responses":
        return {
            "id": f"resp_{short_id(key, 'resp')}",
            "object": "response",
            "created_at": created,
            "status": "incomplete" if capped else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if capped else None,
            "error": None,
            "model": model,
            "output": [
                {
                    "id": f"msg_{short_id(key, 'msg')}",
                    "type": "message",
                    "role": "assistant",
                    "status": "incomplete" if capped else "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": total,
            },
        }
    if endpoint == "/v1/completions":
        return {
            "id": f"cmpl-{short_id(key, 'cmpl')}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": "length" if capped else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": total,
            },
        }
    inputs = body.get("input")
    many = isinstance(inputs, list) and bool(inputs) and not isinstance(inputs[0], int)
    items = inputs if isinstance(inputs, list) and many else [inputs]
    wanted = body.get("dimensions")
    dims = wanted if isinstance(wanted, int) and 0 < wanted <= 4096 else 16
    return {
        "object": "list",
        "model": model,
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round(unit(key, i, d) * 2 - 1, 6) for d in range(dims)],
            }
            for i, _ in enumerate(items)
        ],
        "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
    }


def anthropic_message(
    params: dict[str, Any], *, key: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    """The Message the Messages API would have answered with."""
    capped = output_tokens == params.get("max_tokens")
    return {
        "id": f"msg_{short_id(key, 'message')}",
        "type": "message",
        "role": "assistant",
        "model": params.get("model", "claude-sim"),
        "content": [{"type": "text", "text": reply_text(key, output_tokens)}],
        "stop_reason": "max_tokens" if capped else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }
