"""Cost at batch prices, from a dated price table shipped as data."""

from __future__ import annotations

from batchkiln.costs.prices import Price, PriceTable, batch_cost, load_prices

__all__ = ["Price", "PriceTable", "batch_cost", "load_prices"]
