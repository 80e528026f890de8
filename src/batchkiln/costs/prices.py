"""The price table: per provider and model, input / cached input / output per
million tokens at standard prices, and the batch discount. Shipped as
`prices.json` (dated, with sources); `KILN_PRICES_FILE` points at a user file
whose entries override the shipped ones.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

_DATED_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$|-\d{8}$")


@dataclass(frozen=True)
class Price:
    """Standard prices per million tokens. Cache writes (Anthropic) have their own prices,
    by cache lifetime; unset, they are the input price times the provider's
    `cache_write_multipliers` in prices.json (1.25 for 5 minutes, 2 for 1 hour)."""

    input: float
    cached_input: float
    output: float
    cache_write_5m: float | None = None
    cache_write_1h: float | None = None

    def cost(
        self,
        *,
        input_tokens: int,
        cached_input_tokens: int,
        output_tokens: int,
        cache_write_5m_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> float:
        """`input_tokens` counts every input token; cache reads and writes are in it and
        are priced apart from the fresh rest."""
        written = cache_write_5m_tokens + cache_write_1h_tokens
        fresh = max(0, input_tokens - cached_input_tokens - written)
        write_5m = self.input if self.cache_write_5m is None else self.cache_write_5m
        write_1h = self.input if self.cache_write_1h is None else self.cache_write_1h
        return (
            fresh * self.input
            + cached_input_tokens * self.cached_input
            + cache_write_5m_tokens * write_5m
            + cache_write_1h_tokens * write_1h
            + output_tokens * self.output
        ) / 1_000_000


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    batch_discount: float
    models: dict[str, dict[str, Price]]
    sources: dict[str, str]

    def lookup(self, provider: str, model: str) -> Price | None:
        """The standard price of a model; dated snapshots fall back to their alias."""
        table = self.models.get(provider, {})
        return table.get(model) or table.get(_DATED_SUFFIX.sub("", model))

    def source(self, provider: str) -> str:
        return f"{self.sources.get(provider, 'user price file')} (as of {self.as_of})"


def _price(entry: dict[str, Any], multipliers: dict[str, Any]) -> Price:
    """A model's price; cache-write prices it does not give come from the multipliers."""
    price = Price(**entry)
    if price.cache_write_5m is None and "5m" in multipliers:
        price = replace(price, cache_write_5m=price.input * float(multipliers["5m"]))
    if price.cache_write_1h is None and "1h" in multipliers:
        price = replace(price, cache_write_1h=price.input * float(multipliers["1h"]))
    return price


def _parse(raw: dict[str, Any], multipliers: dict[str, Any] | None = None) -> PriceTable:
    rules = {**(multipliers or {}), **raw.get("cache_write_multipliers", {})}
    models = {
        provider: {name: _price(entry, rules.get(provider, {})) for name, entry in entries.items()}
        for provider, entries in raw.get("models", {}).items()
    }
    return PriceTable(
        as_of=str(raw.get("as_of", "unknown")),
        batch_discount=float(raw.get("batch_discount", 0.5)),
        models=models,
        sources=dict(raw.get("sources", {})),
    )


_configured: list[str | None] = [None]


def configure(user_file: str | Path | None) -> None:
    """Set the process's price file (the App does, from KILN_PRICES_FILE), checking it
    parses now rather than at the first cost."""
    _configured[0] = None if user_file is None else str(user_file)
    load_prices(_configured[0])


def load_prices(user_file: str | None = None) -> PriceTable:
    """The shipped table, overlaid with `user_file` (default: the configured file)."""
    return _load(user_file or _configured[0])


@functools.cache
def _load(path: str | None) -> PriceTable:
    shipped_raw = orjson.loads(resources.files(__package__).joinpath("prices.json").read_bytes())
    shipped = _parse(shipped_raw)
    if not path:
        return shipped
    try:
        override = _parse(
            orjson.loads(Path(path).read_bytes()), shipped_raw.get("cache_write_multipliers")
        )
    except (OSError, orjson.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid price file ({exc})") from exc
    merged = {p: dict(m) for p, m in shipped.models.items()}
    for provider, models in override.models.items():
        merged.setdefault(provider, {}).update(models)
    return PriceTable(
        as_of=override.as_of if override.as_of != "unknown" else shipped.as_of,
        batch_discount=override.batch_discount,
        models=merged,
        sources={**shipped.sources, **override.sources},
    )


def unknown_price(provider: str, model: str) -> str:
    """What to say when a model has no price: the cost is unknown, not zero."""
    return (
        f"no price for {provider}/{model} in the price table (as of {load_prices().as_of});"
        " cost unknown. Add it to a JSON price file named by KILN_PRICES_FILE"
    )


def batch_cost(provider: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
    """Actual cost of billed usage at batch prices, the same at list prices, and
    where the price came from. Unknown model: costs are None (unknown, not zero)."""
    table = load_prices()
    price = table.lookup(provider, model)
    if price is None:
        return {
            "cost_usd": None,
            "list_cost_usd": None,
            "price_source": unknown_price(provider, model),
        }
    list_cost = price.cost(
        input_tokens=usage["input_tokens"],
        cached_input_tokens=usage["cached_input_tokens"],
        output_tokens=usage["output_tokens"],
        cache_write_5m_tokens=usage.get("cache_write_5m_tokens", 0),
        cache_write_1h_tokens=usage.get("cache_write_1h_tokens", 0),
    )
    return {
        "cost_usd": round(list_cost * (1 - table.batch_discount), 8),
        "list_cost_usd": round(list_cost, 8),
        "price_source": table.source(provider),
    }
