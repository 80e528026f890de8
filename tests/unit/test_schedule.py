"""The polling schedule: 10 s doubling to a 5 minute cap, full jitter, retry-after, ETA."""

from __future__ import annotations

import random

import pytest

from batchkiln.engine.schedule import CAP, FLOOR, Backoff, predicted_finish


def test_ceilings_double_from_ten_seconds_to_the_cap() -> None:
    """Un-jittered delays are 10, 20, 40, 80, 160, then 300 forever."""
    backoff = Backoff()
    assert [backoff.ceiling(n) for n in range(8)] == [10, 20, 40, 80, 160, 300, 300, 300]


def test_without_jitter_the_delay_is_the_ceiling() -> None:
    """jitter=False gives the schedule exactly."""
    backoff = Backoff(jitter=False)
    assert backoff.delay(0, random.Random(0)) == 10
    assert backoff.delay(9, random.Random(0)) == CAP


@pytest.mark.parametrize("attempt", range(10))
def test_full_jitter_stays_between_the_floor_and_the_ceiling(attempt: int) -> None:
    """Full jitter draws uniformly below the ceiling, never below the floor."""
    backoff, rng = Backoff(), random.Random(attempt)
    draws = [backoff.delay(attempt, rng) for _ in range(500)]
    assert all(FLOOR <= d <= backoff.ceiling(attempt) for d in draws)
    assert max(draws) > backoff.ceiling(attempt) * 0.8  # it actually spreads out


def test_retry_after_pushes_the_next_check_out() -> None:
    """A vendor's retry-after wins over a shorter backoff."""
    assert Backoff().delay(0, random.Random(1), retry_after=120) == 120


def test_retry_after_is_clamped_to_an_hour() -> None:
    """An absurd retry-after does not park a batch for days."""
    assert Backoff().delay(0, random.Random(1), retry_after=10**6) == 3600


def test_eta_schedules_near_the_predicted_finish_but_never_past_the_cap() -> None:
    """A predicted finish replaces the backoff, bounded by the cap."""
    backoff = Backoff()
    assert 40 <= backoff.delay(5, random.Random(0), eta=40) <= 45
    assert backoff.delay(0, random.Random(0), eta=10_000) == CAP


def test_predicted_finish_from_the_processing_rate() -> None:
    """Half done after 100 s means about 100 s to go."""
    assert predicted_finish(total=100, processed=50, started_at=0, now=100) == pytest.approx(100)
    assert predicted_finish(total=100, processed=0, started_at=0, now=100) is None
    assert predicted_finish(total=100, processed=100, started_at=0, now=100) is None
