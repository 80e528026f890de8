"""Batch timelines: the phase at any instant is read off a plan fixed at creation."""

from __future__ import annotations

from batchkiln.simulator.faults import Faults
from batchkiln.simulator.timeline import PlannedRequest, plan_timeline


def plan(n: int = 4, **faults: object) -> object:
    requests = [PlannedRequest(f"r{i}", None, 10, 5) for i in range(n)]
    return plan_timeline(
        now=0.0, batch_id="b", seed=0, faults=Faults().replace(**faults), requests=requests
    )


def test_phases_follow_queue_processing_finalizing_completed() -> None:
    """queued until the queue delay, processing, finalizing, then completed."""
    tl = plan_timeline(
        now=0.0,
        batch_id="b",
        seed=0,
        faults=Faults(queue_delay_seconds=10, processing_seconds=100, finalizing_seconds=5),
        requests=[PlannedRequest(f"r{i}", None, 1, 1) for i in range(4)],
    )
    assert [tl.phase(t) for t in (0, 9.9, 10, 109.9, 110, 114.9, 115)] == [
        "queued",
        "queued",
        "processing",
        "processing",
        "finalizing",
        "finalizing",
        "completed",
    ]
    assert tl.done_counts(60) == (2, 0) and tl.done_counts(1000) == (4, 0)


def test_finish_order_is_seeded_not_input_order() -> None:
    """Requests finish in a seeded order that differs from input order."""
    requests = [PlannedRequest(f"r{i}", None, 1, 1) for i in range(20)]
    tl = plan_timeline(now=0.0, batch_id="b", seed=0, faults=Faults(), requests=requests)
    order = [p.custom_id for p in tl.finished(1e9)]
    assert sorted(order) == sorted(r.custom_id for r in requests)
    assert order != [r.custom_id for r in requests]


def test_cancel_keeps_what_finished_and_ends_after_cancel_seconds() -> None:
    """A cancel at t keeps results finished by t and ends cancel_seconds later."""
    tl = plan_timeline(
        now=0.0,
        batch_id="b",
        seed=0,
        faults=Faults(queue_delay_seconds=0, processing_seconds=100, cancel_seconds=600),
        requests=[PlannedRequest(f"r{i}", None, 1, 1) for i in range(4)],
    )
    tl.cancel_at = 50.0
    assert tl.phase(50) == "cancelling" and tl.phase(649) == "cancelling"
    assert tl.phase(650) == "cancelled"
    assert tl.done_counts(1e9) == (2, 0) and len(tl.unfinished()) == 2


def test_too_slow_batches_expire_at_the_window_with_a_share_finished() -> None:
    """With expire, the batch ends expired at created+24h with that share done."""
    tl = plan_timeline(
        now=0.0,
        batch_id="b",
        seed=0,
        faults=Faults(expire=True, expire_finished_share=0.25),
        requests=[PlannedRequest(f"r{i}", None, 1, 1) for i in range(8)],
    )
    assert tl.phase(86399) == "processing" and tl.phase(86400) == "expired"
    assert tl.done_counts(86400) == (2, 0) and len(tl.unfinished()) == 6


def test_rejected_batches_fail_when_validation_ends() -> None:
    """A rejected batch is queued, then failed at the end of the queue delay."""
    tl = plan_timeline(
        now=0.0,
        batch_id="b",
        seed=0,
        faults=Faults(queue_delay_seconds=20),
        requests=[],
        rejected=True,
    )
    assert tl.phase(19) == "queued" and tl.phase(20) == "failed" and not tl.started(100)
