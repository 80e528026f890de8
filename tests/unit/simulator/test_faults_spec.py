"""The `--faults` string and the Faults value's own checks."""

from __future__ import annotations

import pytest

from batchkiln.simulator import FAULTS_FORMAT, Faults, parse_faults
from batchkiln.simulator.faults import Budget, decide_failure


def test_the_documented_example_parses() -> None:
    """The example in the brief maps onto Faults fields."""
    faults = parse_faults(
        "retryable=0.05,permanent=0.01,drop_create=1,read_5xx=0.1,rate_limit=0.1,seed=7"
    )
    assert faults == Faults(
        retryable_rate=0.05,
        permanent_rate=0.01,
        drop_create="cut",
        drop_create_count=1,
        read_5xx_rate=0.1,
        rate_limit_rate=0.1,
        seed=7,
    )


def test_drop_modes_and_counts() -> None:
    """drop_create takes N, a mode, or mode:N."""
    assert parse_faults("drop_create=500").drop_create == "500"
    assert parse_faults("drop_create=cut:3").drop_create_count == 3
    assert parse_faults("drop_create=0").drop_create == "none"


def test_lists_maps_booleans_and_full_names() -> None:
    """fail=ID:KIND+..., kinds=a+b, booleans and full field names are understood."""
    faults = parse_faults(
        "fail=r1:timeout+k-r2:invalid_request,kinds=timeout,expire=true,"
        "webhook_out_of_order=1,reject=token_limit_exceeded,"
        "enqueued_token_limit=1000,queue=0"
    )
    assert faults.fail_ids == {"r1": "timeout", "k-r2": "invalid_request"}
    assert faults.retryable_kinds == ("timeout",)
    assert faults.expire and faults.webhook_out_of_order
    assert faults.reject_batch == "token_limit_exceeded"
    assert faults.enqueued_token_limit == 1000 and faults.queue_delay_seconds == 0


@pytest.mark.parametrize(
    "spec",
    [
        "retryable=2",
        "nonsense=1",
        "retryable",
        "drop_create=x",
        "fail=r1:melted",
        "expire=maybe",
        "kinds=invalid_request",
        "retryable=0.7,permanent=0.7",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    """Out-of-range, unknown or malformed items raise ValueError."""
    with pytest.raises(ValueError):
        parse_faults(spec)


def test_format_is_documented() -> None:
    """FAULTS_FORMAT names every short key."""
    for key in ("retryable=", "drop_create=", "read_5xx=", "rate_limit=", "seed="):
        assert key in FAULTS_FORMAT


def test_rate_decisions_are_a_function_of_seed_batch_and_id() -> None:
    """decide_failure depends only on (seed, batch, custom_id) and respects the rates."""
    faults = Faults(retryable_rate=0.2, permanent_rate=0.1)
    outcomes = [decide_failure(faults, 1, "b", f"r{i}") for i in range(2000)]
    assert outcomes == [decide_failure(faults, 1, "b", f"r{i}") for i in range(2000)]
    assert outcomes != [decide_failure(faults, 1, "c", f"r{i}") for i in range(2000)]
    retryable = sum(o in ("timeout", "server_error", "overloaded") for o in outcomes)
    assert 0.16 < retryable / 2000 < 0.24
    assert 0.07 < outcomes.count("invalid_request") / 2000 < 0.13


def test_listed_ids_fail_in_the_first_batches_only() -> None:
    """fail_ids_times bounds how many batches a listed id fails in (0: always)."""
    once = Faults(fail_ids={"r1": "timeout"})
    budget = Budget(once)
    assert budget.listed_failure(once, "a-r1", "r1") == "timeout"
    assert budget.listed_failure(once, "b-r1", "r1") is None
    always = Faults(fail_ids={"r1": "timeout"}, fail_ids_times=0)
    budget = Budget(always)
    assert all(budget.listed_failure(always, "x-r1", "r1") for _ in range(5))


def test_faults_are_hashable_values() -> None:
    """Equal Faults hash alike, fail_ids included."""
    a = Faults(fail_ids={"r1": "timeout"}, retryable_rate=0.1)
    b = Faults(retryable_rate=0.1, fail_ids={"r1": "timeout"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
