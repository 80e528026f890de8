"""Cost at batch prices: a dated price table shipped as data, estimates before
submission, and the actual cost of billed usage."""

from __future__ import annotations

from batchkiln.costs.estimate import (
    DEFAULT_OUTPUT_CAP,
    Estimate,
    Estimator,
    FileEstimator,
    estimate_bodies,
    estimate_file,
)
from batchkiln.costs.prices import Price, PriceTable, batch_cost, load_prices, unknown_price
from batchkiln.costs.tokens import APPROXIMATION, Tokenizer, choose

__all__ = [
    "APPROXIMATION",
    "DEFAULT_OUTPUT_CAP",
    "Estimate",
    "Estimator",
    "FileEstimator",
    "Price",
    "PriceTable",
    "Tokenizer",
    "batch_cost",
    "choose",
    "estimate_bodies",
    "estimate_file",
    "load_prices",
    "unknown_price",
]
