"""The transition table is data; these tests validate the table itself."""

from __future__ import annotations

import pytest

from batchkiln.lifecycle import (
    FINAL,
    INITIAL,
    STATE_INFO,
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    apply_event,
)


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
