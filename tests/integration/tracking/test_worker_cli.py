"""`kiln worker` refuses a bad tracking setup before it touches the store or a vendor."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from batchkiln.cli import app

runner = CliRunner()


def test_an_unknown_mode_is_refused() -> None:
    """--mode takes poll, webhook or hybrid; anything else exits 2 and says so."""
    result = runner.invoke(app, ["worker", "--mode", "sometimes"])
    assert result.exit_code == 2
    assert "poll, webhook, hybrid" in result.output


def test_serving_webhooks_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """--webhook-port without OPENAI_WEBHOOK_SECRET could verify nothing: exit 2."""
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("KILN_WEBHOOK_SECRETS", raising=False)
    result = runner.invoke(app, ["worker", "--webhook-port", "8090"])
    assert result.exit_code == 2
    assert "OPENAI_WEBHOOK_SECRET" in result.output
