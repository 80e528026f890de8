"""What a set of requests will cost at most, before any of it is sent.

Input tokens are counted from the prompt fields of each body (see `tokens` for
the counter); output is bounded by the request's own cap (`max_tokens`,
`max_completion_tokens`, `max_output_tokens`, times `n` choices). A request with
no cap is assumed to write `DEFAULT_OUTPUT_CAP` tokens and is counted as
uncapped, so the figure is an upper bound whenever every request has a cap.
Cache hits are not assumed. The pass is streaming: one body at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchkiln.costs.prices import batch_cost
from batchkiln.costs.tokens import Choice, TokenizerMode, choose
from batchkiln.intake import iter_requests

DEFAULT_OUTPUT_CAP = 4096
MESSAGE_OVERHEAD = 4  # role and separators per message (OpenAI's chat format)
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
_NO_OUTPUT = ("/v1/embeddings", "/v1/moderations")
_SKIP_KEYS = frozenset({"role", "type", "id", "cache_control", "model"})
_SCHEMA_FIELDS = ("tools", "functions", "response_format", "text")  # counted as their JSON
Counter = Callable[[str], int]


@dataclass
class Estimate:
    """Token and dollar upper bounds for some requests of one provider and model."""

    provider: str
    model: str
    tokenizer: str
    note: str = ""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    uncapped: int = 0
    cost_usd: float | None = None  # at batch prices; None: the model has no price
    list_cost_usd: float | None = None  # the same work at standard prices
    price_source: str = ""

    def priced(self) -> Estimate:
        cost = batch_cost(
            self.provider,
            self.model,
            {
                "input_tokens": self.input_tokens,
                "cached_input_tokens": 0,
                "output_tokens": self.output_tokens,
            },
        )
        self.cost_usd = cost["cost_usd"]
        self.list_cost_usd = cost["list_cost_usd"]
        self.price_source = cost["price_source"]
        return self

    def lines(self) -> list[str]:
        """What a person reads before sending: dollars, tokens, and how they were counted."""
        if self.cost_usd is None or self.list_cost_usd is None:
            money = f"estimate: cost unknown: {self.price_source}"
        else:
            money = (
                f"estimate: at most ${self.cost_usd:,.4f} at batch prices"
                f" (${self.list_cost_usd:,.4f} at standard prices,"
                f" saving ${self.list_cost_usd - self.cost_usd:,.4f})"
            )
        out = [
            money,
            f"  {self.requests:,} requests: {self.input_tokens:,} input tokens,"
            f" at most {self.output_tokens:,} output tokens (max_tokens)",
            f"  tokens counted by {self.tokenizer}" + (f" ({self.note})" if self.note else ""),
        ]
        if self.uncapped:
            out.append(
                f"  {self.uncapped:,} request(s) set no max_tokens:"
                f" {DEFAULT_OUTPUT_CAP:,} output tokens assumed for each"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "uncapped": self.uncapped,
            "cost_usd": self.cost_usd,
            "list_cost_usd": self.list_cost_usd,
            "price_source": self.price_source,
            "tokenizer": self.tokenizer,
            "note": self.note,
        }


@dataclass
class Estimator:
    """Adds requests one at a time; `total` and `parts` are priced on `finish`."""

    provider: str  # wire format and price table: "openai", "anthropic" or "gemini"
    model: str
    endpoint: str
    choice: Choice
    parts: list[Estimate] = field(default_factory=list)

    @classmethod
    def for_job(
        cls, provider: str, model: str, endpoint: str, *, mode: TokenizerMode | None = None
    ) -> Estimator:
        return cls(provider, model, endpoint, choose(provider, model, mode))

    def new_part(self) -> Estimate:
        part = Estimate(
            self.provider, self.model, self.choice.tokenizer.name, note=self.choice.note
        )
        self.parts.append(part)
        return part

    def add(self, part: Estimate, body: dict[str, Any]) -> None:
        input_tokens, output_tokens, capped = self.request_tokens(body)
        part.requests += 1
        part.input_tokens += input_tokens
        part.output_tokens += output_tokens
        part.uncapped += 0 if capped else 1

    def finish(self) -> Estimate:
        """Price every part and return their total."""
        total = Estimate(self.provider, self.model, self.choice.tokenizer.name, self.choice.note)
        for part in self.parts:
            part.priced()
            total.requests += part.requests
            total.input_tokens += part.input_tokens
            total.output_tokens += part.output_tokens
            total.uncapped += part.uncapped
        return total.priced()

    def request_tokens(self, body: dict[str, Any]) -> tuple[int, int, bool]:
        """(input tokens, output bound, whether the request caps its output)."""
        count = self.choice.tokenizer.count
        if self.provider == "gemini":
            return _gemini_tokens(body, count)
        if self.provider == "anthropic" or self.endpoint == "/v1/chat/completions":
            tokens = _messages(body.get("messages"), count) + _text(body.get("system"), count)
        elif self.endpoint == "/v1/responses":
            tokens = _messages(body.get("input"), count) + _text(body.get("instructions"), count)
        elif self.endpoint == "/v1/completions":
            tokens = _text(body.get("prompt"), count)
        else:
            tokens = _text(body.get("input"), count)
        for name in _SCHEMA_FIELDS:
            if body.get(name) is not None:
                tokens += count(orjson.dumps(body[name]).decode())
        if self.endpoint in _NO_OUTPUT:
            return tokens, 0, True
        # _output_cap with the common cases inlined: no max_completion_tokens, and a
        # plain positive max_tokens (`type` is int: a bool is not a count)
        cap = body.get("max_completion_tokens")
        if cap is None:
            cap = body.get("max_tokens")
        if type(cap) is not int or cap < 1:
            cap = _output_cap(body)
        n = body.get("n")
        choices = int(n) if n is not None and _is_count(n) else 1
        return tokens, (cap or DEFAULT_OUTPUT_CAP) * choices, cap is not None


def estimate_bodies(
    bodies: Iterable[dict[str, Any]],
    *,
    provider: str,
    model: str,
    endpoint: str,
    mode: TokenizerMode | None = None,
) -> Estimate:
    estimator = Estimator.for_job(provider, model, endpoint, mode=mode)
    part = estimator.new_part()
    for body in bodies:
        estimator.add(part, body)
    return estimator.finish()


class FileEstimator:
    """A file's estimate per shard, fed by validation as it streams (`on_request`), so a
    request file is read once for both."""

    def __init__(self, provider: str, *, mode: TokenizerMode | None = None) -> None:
        self.provider = provider
        self.mode = mode
        self._estimator: Estimator | None = None
        self._parts: list[Estimate] = []

    def __call__(self, shard: int, body: dict[str, Any], model: str, endpoint: str) -> None:
        estimator = self._estimator
        if estimator is None:
            estimator = self._estimator = Estimator.for_job(
                self.provider, model, endpoint, mode=self.mode
            )
        parts = self._parts
        while len(parts) <= shard:
            parts.append(estimator.new_part())
        part = parts[shard]
        input_tokens, output_tokens, capped = estimator.request_tokens(body)  # Estimator.add,
        part.requests += 1  # inlined: this runs once per request of a file
        part.input_tokens += input_tokens
        part.output_tokens += output_tokens
        if not capped:
            part.uncapped += 1

    def finish(self) -> tuple[Estimate, list[Estimate]]:
        """The total and one estimate per shard (after a successful validation)."""
        if self._estimator is None:
            raise ValueError("no request was estimated")
        return self._estimator.finish(), self._parts


def estimate_file(
    path: str | Path,
    *,
    provider: str,
    model: str,
    endpoint: str,
    shards: Sequence[tuple[int, int]] = (),
    mode: TokenizerMode | None = None,
) -> tuple[Estimate, list[Estimate]]:
    """The total for a validated request file and one estimate per shard
    (`(start, stop)` sequence ranges), in one streaming pass."""
    estimator = Estimator.for_job(provider, model, endpoint, mode=mode)
    bounds = list(shards) or [(0, 2**62)]
    parts = [estimator.new_part() for _ in bounds]
    index = 0
    for request in iter_requests(path, provider=provider, model=model, endpoint=endpoint):  # type: ignore[arg-type]
        while index + 1 < len(bounds) and request.seq >= bounds[index][1]:
            index += 1
        estimator.add(parts[index], request.body)
    return estimator.finish(), parts


def _gemini_tokens(body: dict[str, Any], count: Counter) -> tuple[int, int, bool]:
    """A GenerateContentRequest: `contents` (as messages), `systemInstruction`, and the
    tool and schema JSON; output capped by `generationConfig.maxOutputTokens`. Thinking
    tokens (billed as output) are bounded by `thinkingConfig.thinkingBudget` when set."""
    tokens = _messages(body.get("contents"), count) + _text(body.get("systemInstruction"), count)
    for name in ("tools", "toolConfig"):
        if body.get(name) is not None:
            tokens += count(orjson.dumps(body[name]).decode())
    config = body.get("generationConfig")
    config = config if isinstance(config, dict) else {}
    if config.get("responseSchema") is not None:
        tokens += count(orjson.dumps(config["responseSchema"]).decode())
    cap = int(config["maxOutputTokens"]) if _is_count(config.get("maxOutputTokens")) else None
    thinking = config.get("thinkingConfig")
    budget = thinking.get("thinkingBudget") if isinstance(thinking, dict) else None
    extra = budget if isinstance(budget, int) and _is_count(budget) else 0
    choices = int(config["candidateCount"]) if _is_count(config.get("candidateCount")) else 1
    return tokens, ((cap or DEFAULT_OUTPUT_CAP) * choices) + extra, cap is not None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _output_cap(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if value is not None and _is_count(value):
            return int(value)
    return None


def _text(value: Any, count: Counter) -> int:
    """Tokens of every string inside `value` (token-id lists count one each). Loops, not
    generator sums: this runs for every part of every request of a file."""
    if value is None:
        return 0
    if isinstance(value, str):
        return count(value) if value else 0
    total = 0
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        for v in value:
            total += _text(v, count)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _SKIP_KEYS:
                total += _text(v, count)
    return total


def _messages(value: Any, count: Counter) -> int:
    if not isinstance(value, list):
        return _text(value, count)
    total = REPLY_PRIMING
    for message in value:
        total += MESSAGE_OVERHEAD
        if not isinstance(message, dict):
            total += _text(message, count)
            continue
        for key, part in message.items():  # _text(message), with the common case inlined
            if key in _SKIP_KEYS:
                continue
            if isinstance(part, str):
                total += count(part) if part else 0
            else:
                total += _text(part, count)
    return total
