"""The polling schedule (10 s doubling to a 5 minute cap, full jitter, retry-after,
ETA) and the tracking modes that pick a schedule."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from batchkiln.engine.schedule import (
    CAP,
    FLOOR,
    HYBRID_CAP,
    SAFETY_NET,
    Backoff,
    Look,
    TrackingMode,
    TrackingPolicy,
    next_look,
    predicted_finish,
)
from batchkiln.settings import Settings


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


def test_eta_is_ignored_by_a_schedule_without_it() -> None:
    """The webhook safety net does not chase a predicted finish."""
    assert Backoff(jitter=False, eta=False).delay(3, random.Random(0), eta=5) == 80


def test_a_change_restarts_the_doubling_and_no_change_doubles_it() -> None:
    """next_look: a transition (or a new vendor status) resets the attempt to 0."""
    backoff, rng = Backoff(jitter=False, eta=False), random.Random(0)
    assert next_look(backoff, 4, Look(changed=True, in_progress=True), now=0, rng=rng) == (0, 10)
    assert next_look(backoff, 4, Look(changed=False, in_progress=True), now=0, rng=rng) == (5, 300)


def test_next_look_uses_the_request_counts_while_in_progress() -> None:
    """A quarter done after 60 s predicts 180 s more: look at 190 s, capped at 300."""
    look = Look(changed=False, in_progress=True, total=100, processed=25, started_at=0)
    assert next_look(Backoff(), 0, look, now=60, rng=random.Random(0)) == (1, 180 * 1.05 + 1)


def test_while_the_results_are_written_the_doubling_stops_at_forty_seconds() -> None:
    """Every request done, not ended yet (OpenAI `finalizing`): the end is minutes away."""
    look = Look(changed=False, in_progress=True, total=10, processed=10)
    assert next_look(Backoff(jitter=False), 6, look, now=0, rng=random.Random(0)) == (2, 40)


def test_the_next_check_never_waits_past_the_end_of_the_window() -> None:
    """The batch is over at expires_at at the latest: look one second after it."""
    look = Look(changed=False, in_progress=True, expires_at=1_000)
    assert next_look(Backoff(jitter=False), 6, look, now=900, rng=random.Random(0)) == (7, 101)
    late = Look(changed=False, in_progress=True, expires_at=1_000)
    assert next_look(Backoff(jitter=False), 6, late, now=1_001, rng=random.Random(0)) == (7, CAP)


def test_each_mode_has_its_schedule() -> None:
    """poll: 10 s to 5 min; hybrid: 10 s to 30 min; webhook: an hourly safety net."""
    openai, anthropic = (
        SimpleNamespace(supports_webhooks=True),
        SimpleNamespace(supports_webhooks=False),
    )
    poll = TrackingPolicy(mode=TrackingMode.POLL).backoff_for(openai)
    hybrid = TrackingPolicy(mode=TrackingMode.HYBRID).backoff_for(openai)
    net = TrackingPolicy(mode=TrackingMode.WEBHOOK).backoff_for(openai)
    assert [poll.ceiling(9), hybrid.ceiling(9), net.ceiling(0), net.ceiling(9)] == [
        CAP,
        HYBRID_CAP,
        SAFETY_NET,
        SAFETY_NET,
    ]
    assert net.delay(0, random.Random(0)) == SAFETY_NET  # no jitter, no ETA
    for mode in TrackingMode:
        assert TrackingPolicy(mode=mode).mode_for(anthropic) == TrackingMode.POLL


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({}, TrackingMode.POLL),
        ({"OPENAI_WEBHOOK_SECRET": "whsec_abc"}, TrackingMode.HYBRID),
        ({"KILN_WEBHOOK_SECRETS": "whsec_a, whsec_b"}, TrackingMode.HYBRID),
        ({"OPENAI_WEBHOOK_SECRET": " "}, TrackingMode.POLL),
    ],
)
def test_hybrid_is_the_default_once_a_webhook_secret_is_configured(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], mode: TrackingMode
) -> None:
    """No secret: poll; a secret means someone receives webhooks: hybrid."""
    for name in ("OPENAI_WEBHOOK_SECRET", "KILN_WEBHOOK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    secrets = Settings.load().all_webhook_secrets
    assert TrackingPolicy.of(None, webhooks=bool(secrets)).mode == mode


def test_several_secrets_are_read_for_a_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILN_WEBHOOK_SECRETS (comma or space separated) and OPENAI_WEBHOOK_SECRET, deduplicated."""
    monkeypatch.setenv("KILN_WEBHOOK_SECRETS", "whsec_new,whsec_old whsec_new")
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", "whsec_old")
    assert Settings.load().all_webhook_secrets == ["whsec_new", "whsec_old"]


def test_checks_are_rounded_up_to_the_list_tick_only_with_list_refresh() -> None:
    """Aligned checks fall together so one list call can cover them."""
    assert TrackingPolicy(list_tick=10).align(101.5) == 110
    assert TrackingPolicy(list_tick=10).align(110) == 110
    assert TrackingPolicy(list_refresh=False).align(101.5) == 101.5
