"""The price table: dated data with sources, batch discount, overrides, unknown models."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchkiln.costs import batch_cost, load_prices
from batchkiln.costs.prices import Price


def test_the_shipped_table_is_dated_sourced_and_discounts_batches_by_half() -> None:
    """Every provider has a source, the table a date, and batch work costs 50 % less."""
    table = load_prices()
    assert table.as_of[:2] == "20"
    assert table.batch_discount == 0.5
    assert set(table.models) == {"openai", "anthropic", "gemini"}
    for provider in table.models:
        assert table.sources[provider].startswith("https://")


def test_a_dated_snapshot_is_priced_as_its_alias() -> None:
    """gpt-4o-mini-2024-07-18 costs what gpt-4o-mini costs."""
    table = load_prices()
    assert table.lookup("openai", "gpt-4o-mini-2024-07-18") == table.lookup("openai", "gpt-4o-mini")


def test_batch_cost_is_half_the_standard_cost_and_prices_cached_input_apart() -> None:
    """1M fresh input + 1M cached + 1M output of gpt-4o-mini: $0.825 standard, half batched."""
    cost = batch_cost(
        "openai",
        "gpt-4o-mini",
        {"input_tokens": 2_000_000, "cached_input_tokens": 1_000_000, "output_tokens": 1_000_000},
    )
    assert cost["list_cost_usd"] == pytest.approx(0.15 + 0.075 + 0.60)
    assert cost["cost_usd"] == pytest.approx((0.15 + 0.075 + 0.60) / 2)
    assert "openai.com" in cost["price_source"]


def test_an_unknown_model_costs_unknown_not_zero_and_says_how_to_fix_it() -> None:
    """No price: both costs are None and the message names the model and KILN_PRICES_FILE."""
    cost = batch_cost(
        "openai", "gpt-9-turbo", {"input_tokens": 5, "cached_input_tokens": 0, "output_tokens": 5}
    )
    assert cost["cost_usd"] is None and cost["list_cost_usd"] is None
    assert "openai/gpt-9-turbo" in cost["price_source"]
    assert "KILN_PRICES_FILE" in cost["price_source"]


def test_a_user_price_file_overrides_and_extends_the_shipped_table(tmp_path: Path) -> None:
    """User entries replace shipped ones and add new models; the rest are kept."""
    path = tmp_path / "prices.json"
    path.write_bytes(
        orjson.dumps(
            {
                "as_of": "2027-01-01",
                "batch_discount": 0.4,
                "sources": {"openai": "our contract"},
                "models": {
                    "openai": {
                        "gpt-4o-mini": {"input": 0.1, "cached_input": 0.05, "output": 0.5},
                        "ft:gpt-4o-mini:acme": {"input": 0.3, "cached_input": 0.15, "output": 1.2},
                    }
                },
            }
        )
    )
    table = load_prices(str(path))
    assert table.as_of == "2027-01-01"
    assert table.batch_discount == 0.4
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.1, 0.05, 0.5)
    assert table.lookup("openai", "ft:gpt-4o-mini:acme") == Price(0.3, 0.15, 1.2)
    assert table.lookup("anthropic", "claude-haiku-4-5") is not None
    assert table.source("openai") == "our contract (as of 2027-01-01)"


def test_a_broken_user_price_file_is_reported_with_its_path(tmp_path: Path) -> None:
    """A price file that is not JSON fails loudly, naming the file."""
    path = tmp_path / "prices.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid price file"):
        load_prices(str(path))
