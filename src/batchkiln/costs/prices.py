"""The price table: per provider and model, input / cached input / output per
million tokens at standard prices, and the batch discount. Shipped as
`prices.json` (dated, with sources); `KILN_PRICES_FILE` points at a user file
whose entries override the shipped ones.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

_DATED_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$|-\d{8}$")


@dataclass(frozen=True)
class Price:
    input: float
    cached_input: float
    output: float

    def cost(self, *, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
        fresh = max(0, input_tokens - cached_input_tokens)
        return (
            fresh * self.input
            + cached_input_tokens * self.cached_input
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


def _parse(raw: dict[str, Any]) -> PriceTable:
    models = {
        provider: {name: Price(**entry) for name, entry in entries.items()}
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
    shipped = _parse(
        orjson.loads(resources.files(__package__).joinpath("prices.json").read_bytes())
    )
    if not path:
        return shipped
    try:
        override = _parse(orjson.loads(Path(path).read_bytes()))
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
    tokens = {k: usage[k] for k in ("input_tokens", "cached_input_tokens", "output_tokens")}
    list_cost = price.cost(**tokens)
    return {
        "cost_usd": round(list_cost * (1 - table.batch_discount), 8),
        "list_cost_usd": round(list_cost, 8),
        "price_source": table.source(provider),
    }
