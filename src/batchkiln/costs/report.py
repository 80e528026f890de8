"""What a Job cost: its estimate against the recorded actual cost, the saving
against standard (non-batch) prices, and the cost of each retry chain (a
shard's first batch and the retry children that carried its failures).

Read-only, from the store; the CLI (`kiln cost`) and any dashboard render it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from batchkiln.clock import Clock
from batchkiln.costs import Estimate
from batchkiln.costs.budget import GlobalBudget
from batchkiln.store import CostRow, EstimateRow, JobRow, Store

_TOKENS = ("input_tokens", "cached_input_tokens", "output_tokens")


@dataclass
class Money:
    """Dollars at batch prices and at standard prices; None once any part is unknown."""

    cost_usd: float | None = 0.0
    list_cost_usd: float | None = 0.0
    requests: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOKENS, 0))

    def add(
        self, cost: float | None, list_cost: float | None, requests: int, **tokens: int
    ) -> None:
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost
        self.list_cost_usd = (
            None
            if list_cost is None or self.list_cost_usd is None
            else self.list_cost_usd + list_cost
        )
        self.requests += requests
        for name, value in tokens.items():
            self.tokens[name] += value

    @property
    def saving_usd(self) -> float | None:
        if self.cost_usd is None or self.list_cost_usd is None:
            return None
        return self.list_cost_usd - self.cost_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "cost_usd": _round(self.cost_usd),
            "list_cost_usd": _round(self.list_cost_usd),
            "saving_usd": _round(self.saving_usd),
            "requests": self.requests,
            **self.tokens,
        }


@dataclass(frozen=True)
class Chain:
    shard: int
    rows: list[CostRow]
    total: Money


@dataclass(frozen=True)
class JobCost:
    job: JobRow
    estimate: Money  # at submission: the first attempt of every shard (an upper bound)
    retry_estimate: Money  # retry children admitted since
    actual: Money  # recorded, billed usage only
    chains: list[Chain]
    tokenizer: str
    price_source: str
    uncapped: int  # requests with no max_tokens in the estimate
    pending_batches: int  # batches whose cost is not recorded yet

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job.id,
            "key": self.job.key,
            "provider": self.job.provider,
            "model": self.job.model,
            "status": self.job.status,
            "estimate": self.estimate.to_json(),
            "retry_estimate": self.retry_estimate.to_json(),
            "actual": self.actual.to_json(),
            "tokenizer": self.tokenizer,
            "uncapped_requests": self.uncapped,
            "price_source": self.price_source,
            "batches_not_costed_yet": self.pending_batches,
            "chains": [
                {
                    "shard": c.shard,
                    "total": c.total.to_json(),
                    "batches": [
                        {
                            "batch_id": r.batch_id,
                            "parent_id": r.parent_id,
                            "attempt": r.attempt,
                            "billed_requests": r.billed_requests,
                            **{name: getattr(r, name) for name in _TOKENS},
                            "cost_usd": r.cost_usd,
                            "list_cost_usd": r.list_cost_usd,
                            "recorded_at": r.recorded_at,
                        }
                        for r in c.rows
                    ],
                }
                for c in self.chains
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 8)


def _estimates(rows: Iterable[EstimateRow]) -> Money:
    money = Money()
    for r in rows:
        money.add(
            r.cost_usd,
            r.list_cost_usd,
            r.requests,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
        )
    return money


async def job_cost(store: Store, job_ref: str) -> JobCost:
    job = await store.jobs.get(job_ref)
    estimates = await store.costs.estimates_for_job(job.id)
    costs = await store.costs.costs_for_job(job.id)
    batches = await store.batches.for_job(job.id)
    first = [e for e in estimates if e.attempt in (None, 1) and e.batch_id is not None]
    retries = [e for e in estimates if e not in first]
    actual = Money()
    by_shard: dict[int, list[CostRow]] = {}
    for row in costs:
        actual.add(
            row.cost_usd,
            row.list_cost_usd,
            row.billed_requests,
            **{name: getattr(row, name) for name in _TOKENS},
        )
        by_shard.setdefault(row.shard, []).append(row)
    chains = []
    for shard, rows in sorted(by_shard.items()):
        total = Money()
        for row in rows:
            total.add(
                row.cost_usd,
                row.list_cost_usd,
                row.billed_requests,
                **{name: getattr(row, name) for name in _TOKENS},
            )
        chains.append(Chain(shard, rows, total))
    costed = {row.batch_id for row in costs}
    return JobCost(
        job=job,
        estimate=_estimates(first),
        retry_estimate=_estimates(retries),
        actual=actual,
        chains=chains,
        tokenizer=first[0].tokenizer if first else "no estimate was recorded",
        price_source=next((r.price_source for r in costs if r.price_source), ""),
        uncapped=sum(e.uncapped for e in first),
        pending_batches=sum(1 for b in batches if b.id not in costed),
    )


@dataclass(frozen=True)
class PeriodSpend:
    budget: GlobalBudget | None
    since: float
    spent_usd: float  # recorded since the period began
    committed_usd: float  # estimates of batches not done yet


async def period_spend(store: Store, clock: Clock, budget: GlobalBudget | None) -> PeriodSpend:
    """Spend in the global budget's period (this calendar month when none is set)."""
    period = budget or GlobalBudget(limit_usd=float("inf"))
    since = period.period_start(clock.now())
    return PeriodSpend(
        budget,
        since,
        await store.costs.spent(since=since),
        await store.costs.live_exposure(),
    )


async def submitted_estimate(store: Store, job: JobRow, provider: str) -> Estimate | None:
    """The estimate recorded when `job` was submitted (None if none was)."""
    rows = [e for e in await store.costs.estimates_for_job(job.id) if e.attempt in (None, 1)]
    if not rows:
        return None
    total = Estimate(provider, job.model, rows[0].tokenizer, cost_usd=0.0, list_cost_usd=0.0)
    for r in rows:
        total.requests += r.requests
        total.input_tokens += r.input_tokens
        total.output_tokens += r.output_tokens
        total.uncapped += r.uncapped
    return total.priced()
