"""Both lifecycles are data; these tests validate the tables themselves (the same
structural checks for the Batch's and the Job's)."""

from __future__ import annotations

import pytest

from batchkiln.lifecycle import (
    BATCH,
    FINAL,
    INITIAL,
    JOB,
    JOB_STATE_INFO,
    STATE_INFO,
    TRANSITIONS,
    Event,
    IllegalTransition,
    JobEvent,
    JobState,
    Lifecycle,
    State,
    apply_event,
)

LIFECYCLES = [pytest.param(BATCH, id="batch"), pytest.param(JOB, id="job")]


def _reachable(start: State) -> set[State]:
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src == here and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def test_exactly_one_initial_state() -> None:
    """Only not_submitted has no way in: every batch starts there."""
    targets = set(TRANSITIONS.values())
    assert [s for s in State if s not in targets] == [INITIAL]


def test_nothing_leaves_done() -> None:
    """done is final: no event moves a batch out of it."""
    assert not [key for key in TRANSITIONS if key[0] == FINAL]


def test_every_state_reaches_done() -> None:
    """No state is a trap: from each one, done is reachable."""
    for state in State:
        assert FINAL in _reachable(state), state


def test_every_state_is_reachable_from_the_start() -> None:
    """The table has no orphan states."""
    assert _reachable(INITIAL) == set(State)


def test_every_state_has_its_text() -> None:
    """The CLI and dashboard can describe every state."""
    assert set(STATE_INFO) == set(State)
    for info in STATE_INFO.values():
        assert info.meaning and info.next_action and info.billed


@pytest.mark.parametrize("machine", LIFECYCLES)
def test_each_table_has_one_start_one_end_and_no_traps(machine: Lifecycle) -> None:  # type: ignore[type-arg]
    """Only the start may have no way in, the end has no way out, all reach it, none orphaned."""
    targets = set(machine.transitions.values())
    assert [s for s in machine.states if s not in targets and s != machine.initial] == []
    assert not [key for key in machine.transitions if key[0] == machine.final]
    seen, todo = {machine.initial}, [machine.initial]
    while todo:
        here = todo.pop()
        for (src, _), dst in machine.transitions.items():
            if src == here and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    assert seen == set(machine.states)
    for state in machine.states:
        reach, todo = {state}, [state]
        while todo:
            here = todo.pop()
            for (src, _), dst in machine.transitions.items():
                if src == here and dst not in reach:
                    reach.add(dst)
                    todo.append(dst)
        assert machine.final in reach, state


@pytest.mark.parametrize("machine", LIFECYCLES)
def test_every_key_of_a_table_is_its_own_state_and_event(machine: Lifecycle) -> None:  # type: ignore[type-arg]
    """A table mixes no nouns: its keys are its own states and events."""
    for (state, event), target in machine.transitions.items():
        assert isinstance(state, machine.states) and isinstance(target, machine.states)
        assert isinstance(event, machine.events)


def test_every_job_state_has_its_text() -> None:
    """The CLI, the service and the dashboard can describe every Job state."""
    assert set(JOB_STATE_INFO) == set(JobState)
    assert all(info.meaning and info.next_action for info in JOB_STATE_INFO.values())


def test_a_job_out_of_active_goes_only_by_its_events() -> None:
    """A manual retry reopens a held Job; nothing reopens a done one."""
    assert JOB.apply("job_x", JobState.AWAITING_RETRY, JobEvent.RETRIED) == JobState.ACTIVE
    with pytest.raises(IllegalTransition, match="job job_x"):
        JOB.apply("job_x", JobState.DONE, JobEvent.RETRIED)


def test_the_vendor_event_between_two_batch_states_comes_from_the_table() -> None:
    """The tracker's snapshot rule is read off the table: one event, or none."""
    assert BATCH.event_between(State.PENDING, State.IN_PROGRESS) == Event.STARTED
    assert BATCH.event_between(State.CANCELLING, State.COMPLETED) == Event.VENDOR_COMPLETED
    assert BATCH.event_between(State.IN_PROGRESS, State.PENDING) is None  # out of order
    assert BATCH.event_between(State.IN_PROGRESS, State.IN_PROGRESS) is None


def test_retry_states_never_lead_back_to_the_same_row() -> None:
    """Partial and Expired lead only to downloading: a retry is a child batch."""
    for state in (State.PARTIAL, State.EXPIRED):
        assert STATE_INFO[state].retry_path
        assert {dst for (src, _), dst in TRANSITIONS.items() if src == state} == {State.DOWNLOADING}


def test_apply_event_follows_the_table() -> None:
    """A listed transition returns its target."""
    assert apply_event("b1", State.SUBMITTING, Event.ACCEPTED) == State.PENDING


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (State.DONE, Event.SUBMIT),
        (State.PENDING, Event.SUBMIT),
        (State.COMPLETED, Event.ACCEPTED),
        (State.FAILED, Event.SUBMIT),
        (State.NOT_SUBMITTED, Event.VENDOR_COMPLETED),
    ],
)
def test_transition_outside_the_table_raises(state: State, event: Event) -> None:
    """An event the table does not list raises, naming batch, state and event."""
    with pytest.raises(IllegalTransition) as info:
        apply_event("bat_x", state, event)
    text = str(info.value)
    assert "bat_x" in text and state.value in text and event.value in text
