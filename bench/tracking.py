"""Completion tracking: vendor calls per batch and detection latency, per strategy.

    .venv/bin/python bench/tracking.py [--batches 1200] [--seed 1] [--engine 120]

One workload of OpenAI batches (arrivals spread over 4 hours; validation 10 s to
10 min; processing log-uniform from 2 minutes to 36 hours, so those past the 24 h
window expire; finalizing 15 s to 3 min; webhooks arriving 1-20 s after the end,
2 % of them never) is tracked in virtual time by each strategy:

- fixed 15 s / fixed 60 s polling (what other libraries do: sleep, retrieve, repeat);
- our backoff (poll mode without list refresh);
- backoff + list refresh (poll mode, the default);
- webhook + safety net (webhook mode);
- hybrid (the default once a webhook secret is set).

Each batch's life is the simulator's own timeline (`plan_timeline`), read through
the OpenAI adapter's status table. Our strategies run the engine's schedule code
(`TrackingPolicy`, `Backoff`, `next_look`, `align`) and the list-refresh rule of
`engine/refresh.py` (page until every due batch is found, at most one page fewer
than the due batches; ended batches seen on the way are detected with no further
call); fixed polling is worked out exactly. Calls are tracking calls (retrieve and
list), the same submit and download calls come on top in every strategy. Latency is
detection time minus the vendor's terminal timestamp.

`--engine N` checks the model against the code it stands for: N batches of the same
distribution go through the real engine (Kiln, SQLite store, OpenAI adapter and
SDK, the in-process simulator delivering signed webhooks into the receiver) and
through the model, both with jitter off so that each batch's checks are
deterministic; it prints whether every batch's calls and detection time agree.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from batchkiln.engine.refresh import SNAPSHOT_MAX_AGE
from batchkiln.engine.schedule import Backoff, Look, TrackingMode, TrackingPolicy, next_look
from batchkiln.lifecycle import ENDED_AT_VENDOR, State
from batchkiln.providers.openai import map_status
from batchkiln.simulator import Faults
from batchkiln.simulator.openai_batches import STATUS
from batchkiln.simulator.timeline import PlannedRequest, Timeline, plan_timeline

HOUR = 3600.0
PAGE = 100  # OpenAI list page
WEBHOOK_LOSS = 0.02


@dataclass(frozen=True)
class Spec:
    """One batch of the workload."""

    index: int
    arrival: float
    queue: float
    processing: float
    finalizing: float
    requests: int
    webhook_delay: float
    webhook_lost: bool

    def faults(self) -> Faults:
        return Faults(
            queue_delay_seconds=self.queue,
            processing_seconds=self.processing,
            finalizing_seconds=self.finalizing,
            webhook_delay_seconds=self.webhook_delay,
            webhook_drop=1.0 if self.webhook_lost else 0.0,
        )


def workload(n: int, seed: int, *, start: float = 0.0) -> list[Spec]:
    rng = random.Random(seed)
    arrivals = sorted(start + rng.uniform(0, 4 * HOUR) for _ in range(n))
    return [
        Spec(
            index=i,
            arrival=round(arrival),
            queue=rng.uniform(10, 600),
            processing=math.exp(rng.uniform(math.log(120), math.log(36 * HOUR))),
            finalizing=rng.uniform(15, 180),
            requests=rng.randint(100, 2000),
            webhook_delay=rng.uniform(1, 20),
            webhook_lost=rng.random() < WEBHOOK_LOSS,
        )
        for i, arrival in enumerate(arrivals)
    ]


@dataclass
class Vendor:
    """A batch as the vendor sees it: the simulator's timeline for `spec`."""

    spec: Spec
    timeline: Timeline = field(init=False)

    def __post_init__(self) -> None:
        s = self.spec
        self.timeline = plan_timeline(
            now=s.arrival,
            batch_id=f"b{s.index}",
            seed=1,
            faults=s.faults(),
            requests=[PlannedRequest(f"r{i}", None, 0, 0) for i in range(s.requests)],
        )

    @property
    def ended_at(self) -> float:
        return self.timeline.ended_at()

    @property
    def vendor_ended_at(self) -> int:  # the API's integer timestamp
        return int(self.ended_at)

    def look(self, now: float) -> tuple[str, State, int, int]:
        """(status, our state for it, total, processed) as GET /v1/batches/{id} says."""
        tl = self.timeline
        status = STATUS[tl.phase(now)]
        started = tl.started(now)
        ok, bad = tl.done_counts(now) if started else (0, 0)
        total = len(tl.plans) if started else 0
        return status, map_status(status, total, ok, bad), total, ok + bad


@dataclass
class Result:
    name: str
    calls: list[float]  # tracking calls per batch (a list page counts for the first it found)
    latency: list[float]
    expired: int = 0

    def row(self) -> list[str]:
        q = statistics.quantiles(self.latency, n=100, method="inclusive")
        return [
            self.name,
            f"{sum(self.calls) / len(self.calls):.1f}",
            f"{q[49]:.0f} s",
            f"{q[94]:.0f} s",
            f"{q[98]:.0f} s",
            f"{max(self.latency):.0f} s",
        ]


def fixed(vendors: Sequence[Vendor], interval: float) -> Result:
    """Retrieve every `interval` seconds from submission until the batch has ended."""
    calls, latency = [], []
    for v in vendors:
        k = math.ceil((v.ended_at - v.spec.arrival) / interval)
        calls.append(k)
        latency.append(v.spec.arrival + k * interval - v.vendor_ended_at)
    return Result(f"fixed {interval:.0f} s polling", calls, latency)


@dataclass
class Tracked:
    state: State = State.PENDING
    status: str = "validating"  # what the create call answered
    attempt: int = 0
    next_check: float = 0.0
    calls: int = 0
    detected: float | None = None


class Model:
    """The engine's tracking, one claim round per instant, in virtual time."""

    def __init__(self, vendors: Sequence[Vendor], policy: TrackingPolicy, webhooks: bool) -> None:
        self.v = vendors
        self.policy = policy
        self.backoff: Backoff = policy.backoff_for(_OPENAI)
        self.webhooks = webhooks
        self.rng = random.Random(7)
        self.t = [Tracked() for _ in vendors]
        self.arrivals = [v.spec.arrival for v in vendors]
        self.heap: list[tuple[float, int]] = []
        self.kept: dict[int, float] = {}  # batch -> when a list page showed it

    def run(self, name: str) -> Result:
        for i, v in enumerate(self.v):  # accepted at arrival: the first check of the mode
            self._schedule(i, v.spec.arrival, self.backoff.delay(0, self.rng))
            if self.webhooks and not v.spec.webhook_lost:
                heapq.heappush(self.heap, (v.ended_at + v.spec.webhook_delay, -1 - i))
        while self.heap:
            now = self.heap[0][0]
            due: set[int] = set()
            while self.heap and self.heap[0][0] == now:
                _, key = heapq.heappop(self.heap)
                i = key if key >= 0 else -1 - key
                tr = self.t[i]
                if tr.detected is None and (key < 0 or tr.next_check == now):
                    due.add(i)
            if due:
                self._round(now, sorted(due))
        expired = sum(1 for v in self.v if v.timeline.outcome() == "expired")
        latency = [tr.detected - v.vendor_ended_at for tr, v in zip(self.t, self.v, strict=True)]  # type: ignore[operator]
        return Result(name, [float(tr.calls) for tr in self.t], latency, expired)

    def _round(self, now: float, due: list[int]) -> None:
        wanted = []
        for i in due:
            seen_at = self.kept.pop(i, None)
            if seen_at is not None and now - seen_at <= SNAPSHOT_MAX_AGE:
                self._apply(i, now, seen_at)
            else:
                wanted.append(i)
        if self.policy.list_refresh and len(wanted) >= 2:
            self._list(now, wanted)
            return
        for i in wanted:
            self.t[i].calls += 1
            self._apply(i, now, now)

    def _list(self, now: float, wanted: list[int]) -> None:
        created = bisect.bisect_right(self.arrivals, now)
        rank = {i: created - i for i in wanted}  # 1 = newest
        budget = len(wanted) - 1
        deepest = max(rank.values())
        pages = math.ceil(deepest / PAGE)
        if pages > budget:
            pages, deepest = budget, budget * PAGE
        found = sorted((i for i in wanted if rank[i] <= deepest), key=lambda i: rank[i])
        owed = 0
        for page in range(1, pages + 1):  # charge each page to the first batch found on it
            owed += 1
            on_page = [i for i in found if (rank[i] - 1) // PAGE + 1 == page]
            if on_page:
                self.t[on_page[0]].calls += owed
                owed = 0
        if owed:
            unfound = [i for i in wanted if i not in found]
            self.t[min(unfound or wanted)].calls += owed
        for i in wanted:
            if i in found:
                self._apply(i, now, now)
            else:
                self.t[i].calls += 1
                self._apply(i, now, now)
        horizon = now + self.policy.list_lookahead
        for i in range(created - deepest, created):  # the rest of what the pages showed
            tr = self.t[i]
            if i in rank or tr.detected is not None:
                continue
            if now >= self.v[i].ended_at or tr.next_check <= horizon:
                self._apply(i, now, now)  # marked due, applied from the kept snapshot
            else:
                self.kept[i] = now

    def _apply(self, i: int, now: float, seen_at: float) -> None:
        tr, v = self.t[i], self.v[i]
        status, state, total, processed = v.look(seen_at)
        if state in ENDED_AT_VENDOR:
            tr.detected = now
            return
        changed = state != tr.state or status != tr.status
        tr.state, tr.status = state, status
        tr.attempt, delay = next_look(
            self.backoff,
            tr.attempt,
            Look(
                changed,
                state == State.IN_PROGRESS,
                total,
                processed,
                started_at=v.spec.arrival,
                expires_at=v.timeline.expires_at,
            ),
            now=now,
            rng=self.rng,
        )
        self._schedule(i, now, delay)

    def _schedule(self, i: int, now: float, delay: float) -> None:
        at = self.policy.align(now + delay)
        self.t[i].next_check = at
        heapq.heappush(self.heap, (at, i))


class _OpenAI:
    supports_webhooks = True


_OPENAI = _OpenAI()

STRATEGIES: list[tuple[str, TrackingPolicy, bool]] = [
    ("our backoff", TrackingPolicy(mode=TrackingMode.POLL, list_refresh=False), False),
    ("backoff + list refresh", TrackingPolicy(mode=TrackingMode.POLL), False),
    ("webhook + safety net", TrackingPolicy(mode=TrackingMode.WEBHOOK), True),
    ("hybrid", TrackingPolicy(mode=TrackingMode.HYBRID), True),
]


def model_results(vendors: Sequence[Vendor]) -> list[Result]:
    results = [fixed(vendors, 15), fixed(vendors, 60)]
    results += [Model(vendors, policy, hooks).run(name) for name, policy, hooks in STRATEGIES]
    return results


HEAD = ["strategy", "calls / batch", "latency p50", "p95", "p99", "max"]


def table(results: Sequence[Result]) -> str:
    rows = [HEAD, ["---"] * len(HEAD), *[r.row() for r in results]]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


def describe(vendors: Sequence[Vendor]) -> str:
    hours = sorted((v.ended_at - v.spec.arrival) / HOUR for v in vendors)
    expired = sum(1 for v in vendors if v.timeline.outcome() == "expired")
    lost = sum(1 for v in vendors if v.spec.webhook_lost)
    return (
        f"{len(vendors)} OpenAI batches: submit to end {hours[0] * 60:.0f} min .. {hours[-1]:.1f} h"
        f" (median {statistics.median(hours):.1f} h), {expired} expired, {lost} webhooks lost"
    )


def main(argv: Sequence[str] | None = None, *, echo: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", type=int, default=0, help="also run N batches for real")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    vendors = [Vendor(s) for s in workload(args.batches, args.seed)]
    echo(describe(vendors))
    echo(table(model_results(vendors)))
    echo(f"(model: {time.perf_counter() - began:.1f} s)")
    if args.engine:
        cross_check(workload(args.engine, args.seed + 1, start=1_767_225_600.0), echo)


def without_jitter(policy: TrackingPolicy) -> TrackingPolicy:
    return replace(
        policy,
        poll=replace(policy.poll, jitter=False),
        hybrid=replace(policy.hybrid, jitter=False),
        safety_net=replace(policy.safety_net, jitter=False),
    )


def cross_check(specs: Sequence[Spec], echo: Callable[[str], None]) -> None:
    import asyncio

    from tracking_engine import run_engine  # bench/tracking_engine.py

    vendors = [Vendor(s) for s in specs]
    echo("")
    echo(describe(vendors) + "; jitter off: the model, then the real engine")
    began = time.perf_counter()
    modelled, real = [], []
    for name, policy, hooks in STRATEGIES:
        exact = without_jitter(policy)
        modelled.append(Model(vendors, exact, hooks).run(name))
        real.append(asyncio.run(run_engine(specs, f"{name} (engine)", exact, hooks)))
    echo(table(modelled + real))
    for m, r in zip(modelled, real, strict=True):
        same = m.calls == r.calls and all(
            abs(a - b) < 1e-6 for a, b in zip(m.latency, r.latency, strict=True)
        )
        echo(f"{m.name}: every batch's calls and detection time {'agree' if same else 'DIFFER'}")
    echo(f"(cross-check: {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
