"""The global budget's shape and the words of a refusal: a limit over a calendar
period (UTC), and what `kiln submit` prints when an estimate does not fit.

The admission decision itself is a policy of the engine (`engine.budget.BudgetGuard`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

from batchkiln.costs.estimate import Estimate

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")


@dataclass(frozen=True)
class GlobalBudget:
    limit_usd: float
    period: Period = "month"

    @classmethod
    def of(cls, limit_usd: float | None, period: Period = "month") -> GlobalBudget | None:
        """The budget the settings describe (None: no global budget)."""
        return None if limit_usd is None else cls(limit_usd, period)

    def period_start(self, now: float) -> float:
        """The start (UTC) of the calendar day, ISO week or month containing `now`."""
        day = dt.datetime.fromtimestamp(now, dt.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        if self.period == "week":
            day -= dt.timedelta(days=day.weekday())
        elif self.period == "month":
            day = day.replace(day=1)
        return day.timestamp()


@dataclass(frozen=True)
class Refusal:
    scope: Literal["job", "global"]
    limit_usd: float
    committed_usd: float  # spent plus live estimates, before this submission
    estimate_usd: float | None  # None: the model has no price
    what: str  # "job" or "retry of N request(s)"
    period: str | None = None
    reason: str = ""

    def message(self) -> str:
        where = (
            "the job budget" if self.scope == "job" else f"the global budget for this {self.period}"
        )
        if self.estimate_usd is None:
            return (
                f"{self.what} refused: {self.reason};"
                f" {where} (${self.limit_usd:,.2f}) cannot be checked"
            )
        total = self.committed_usd + self.estimate_usd
        return (
            f"{self.what} refused: estimate ${self.estimate_usd:,.4f} + already committed"
            f" ${self.committed_usd:,.4f} = ${total:,.4f}, over {where} of ${self.limit_usd:,.2f}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe(estimate: Estimate) -> str:
    """One line: the estimate at batch prices, and at standard prices."""
    if estimate.cost_usd is None or estimate.list_cost_usd is None:
        return f"estimate unknown: {estimate.price_source}"
    return (
        f"estimate ≤ ${estimate.cost_usd:,.4f} at batch prices"
        f" (${estimate.list_cost_usd:,.4f} at standard prices)"
    )
