"""The global budget's configuration and its calendar periods (UTC)."""

from __future__ import annotations

import datetime as dt

import pytest

from batchkiln import ConfigError, Settings
from batchkiln.costs.budget import GlobalBudget, Refusal


def configured() -> GlobalBudget | None:
    """The global budget a process started now would have."""
    settings = Settings.load()
    return GlobalBudget.of(settings.budget_usd, settings.budget_period)


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_no_global_budget_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILN_BUDGET_USD unset or empty: no global limit."""
    monkeypatch.delenv("KILN_BUDGET_USD", raising=False)
    assert configured() is None
    monkeypatch.setenv("KILN_BUDGET_USD", "")
    assert configured() is None


def test_the_global_budget_reads_its_limit_and_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILN_BUDGET_USD=250 with KILN_BUDGET_PERIOD=week; month is the default."""
    monkeypatch.setenv("KILN_BUDGET_USD", "250")
    monkeypatch.delenv("KILN_BUDGET_PERIOD", raising=False)
    assert configured() == GlobalBudget(250.0, "month")
    monkeypatch.setenv("KILN_BUDGET_PERIOD", "week")
    assert configured() == GlobalBudget(250.0, "week")


@pytest.mark.parametrize(
    ("limit", "period", "message"),
    [
        ("lots", "month", "KILN_BUDGET_USD: .*valid number"),
        ("-5", "month", "greater than 0"),
        ("nan", "month", "finite"),
        ("inf", "month", "finite"),
        ("5", "year", ""),
    ],
)
def test_a_bad_global_budget_is_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, limit: str, period: str, message: str
) -> None:
    """Nonsense limits and unknown periods stop the command instead of being ignored."""
    monkeypatch.setenv("KILN_BUDGET_USD", limit)
    monkeypatch.setenv("KILN_BUDGET_PERIOD", period)
    with pytest.raises(ConfigError, match=message or "KILN_BUDGET_PERIOD"):
        configured()


@pytest.mark.parametrize(
    ("period", "start"),
    [
        ("day", "2026-11-28T00:00:00"),
        ("week", "2026-11-23T00:00:00"),  # the Monday
        ("month", "2026-11-01T00:00:00"),
    ],
)
def test_periods_start_at_the_calendar_boundary_in_utc(period: str, start: str) -> None:
    """Saturday 2026-11-28 15:30 UTC lies in the day, ISO week and month that start here."""
    budget = GlobalBudget(10.0, period)  # type: ignore[arg-type]
    assert budget.period_start(ts("2026-11-28T15:30:00")) == ts(start)


def test_a_refusal_states_the_numbers() -> None:
    """The message carries the estimate, what is committed, their sum and the limit."""
    refusal = Refusal("global", 10.0, 7.5, 3.25, "job", period="month")
    text = refusal.message()
    for figure in ("$3.2500", "$7.5000", "$10.7500", "$10.00", "month"):
        assert figure in text
